"""``windflow logs SERVICE [-n N] [-f] [--stream stdout|stderr] [--replica K]``: a service's output (``docker
compose logs``)."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from windflow.cli.client import ApiUrl, ServiceArg, check, client, err_console


class StreamChoice(StrEnum):
    ALL = "all"
    STDOUT = "stdout"
    STDERR = "stderr"


def _print(item: dict[str, Any], *, raw: bool, prefix: bool) -> None:
    if raw:
        sys.stdout.write(json.dumps(item, ensure_ascii=False) + "\n")
    else:
        tag = "err| " if item.get("stream") == "stderr" else "out| "
        sys.stdout.write((tag if prefix else "") + str(item.get("line", "")) + "\n")
    sys.stdout.flush()


def logs(
    service: ServiceArg,
    lines: Annotated[int, typer.Option("-n", "--lines", min=0, max=5000, help="How many of the last lines")] = 100,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new lines (Ctrl-C stops)")] = False,
    stream: Annotated[StreamChoice, typer.Option(help="all, stdout or stderr")] = StreamChoice.ALL,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per line: stream, line, at")] = False,
    replica: Annotated[
        int | None,
        typer.Option("--replica", "-r", min=0, max=99, help="A replicated service: the replica K (SERVICE/K) to show"),
    ] = None,
    api: ApiUrl = None,
) -> None:
    """Show a service's stdout and stderr (stderr lines marked "err|"); -f follows them."""
    params: dict[str, Any] = {"lines": lines, "stream": stream.value}
    if replica is not None:
        params["replica"] = replica
    prefix = stream == StreamChoice.ALL
    with client(api, timeout=30.0) as http:
        if not follow:
            body = check(http.get(f"/api/v1/services/{service}/logs", params=params))
            for item in body["lines"]:
                _print(item, raw=json_lines, prefix=prefix)
            return
        import httpx2

        params["follow"] = "true"
        try:
            with http.stream(
                "GET", f"/api/v1/services/{service}/logs", params=params, timeout=httpx2.Timeout(30.0, read=None)
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    check(resp)
                for raw in resp.iter_lines():
                    if raw.strip():
                        _print(json.loads(raw), raw=json_lines, prefix=prefix)
        except KeyboardInterrupt:
            return
        except httpx2.TransportError as exc:
            err_console.print(f"[red]error[/red] the log stream ended: {exc}", highlight=False)
            raise typer.Exit(3) from None
