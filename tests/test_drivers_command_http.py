"""The command, http and noop drivers against real shells and a real local HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import processes_with
from tests.servers import free_port
from windflow.domain.errors import DriverFailed, DriverUnavailable
from windflow.domain.models import ServiceSpec
from windflow.domain.results import RunStatus
from windflow.drivers import build_driver_registry
from windflow.drivers.command import CommandDriver
from windflow.drivers.http import HttpDriver
from windflow.drivers.noop import NoopDriver

pytestmark = pytest.mark.asyncio(loop_scope="session")


def command_service(**config: Any) -> ServiceSpec:
    return ServiceSpec.model_validate({"id": "legacy", "driver": "command", "config": config})


def live_with(marker: str) -> int:
    return len(processes_with(marker))


# ---------------------------------------------------------------------------------------------- command


async def test_command_start_stop_status_with_a_real_pidfile(tmp_path: Path) -> None:
    flag = tmp_path / "running"
    log = tmp_path / "calls"
    spec = command_service(
        start={"run": f"echo starting; touch {flag}; echo start >> {log}"},
        stop={"run": ["sh", "-c", f"rm -f {flag}; echo stop >> {log}"]},
        status={"run": ["test", "-e", str(flag)]},
    )
    driver = CommandDriver()
    assert (await driver.status(spec)).status == RunStatus.STOPPED
    started = await driver.start(spec)
    assert started.ok and started.changed and started.exit_code == 0
    assert "starting" in started.output
    assert (await driver.status(spec)).status == RunStatus.RUNNING
    # idempotent through the status command: start is not run again
    again = await driver.start(spec)
    assert not again.changed
    assert log.read_text().split() == ["start"]

    stopped = await driver.stop(spec)
    assert stopped.changed and not flag.exists()
    assert not (await driver.stop(spec)).changed
    assert log.read_text().split() == ["start", "stop"]

    restarted = await driver.restart(spec)  # default: stop (skipped: not running) then start
    assert restarted.ok and flag.exists()
    await driver.restart(spec)
    assert log.read_text().split() == ["start", "stop", "start", "stop", "start"]
    assert await driver.wait_exit(spec) is None


async def test_command_failure_carries_the_output(tmp_path: Path) -> None:
    spec = command_service(
        start={"run": "echo 'loading config'; echo 'fatal: port 80 in use' >&2; exit 4"},
        stop={"run": ["true"]},
    )
    with pytest.raises(DriverFailed) as err:
        await CommandDriver().start(spec)
    assert "exited with code 4" in err.value.message and "fatal: port 80 in use" in err.value.message
    assert err.value.details["exit_code"] == 4
    assert "loading config" in err.value.details["output"]


async def test_command_output_is_truncated_to_its_tail() -> None:
    spec = command_service(
        start={"run": "i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done"}, stop={"run": ["true"]}
    )
    result = await CommandDriver().start(spec)
    assert len(result.output.encode()) <= 8 * 1024
    assert result.output.rstrip().endswith("line-2999") and "line-0\n" not in result.output


async def test_command_timeout_kills_the_process_group() -> None:
    marker = f"{41 + uuid.uuid4().int % 1000}.777"
    spec = command_service(
        start={"run": f"echo begun; sleep {marker} & sleep {marker}", "timeout": "400ms"}, stop={"run": ["true"]}
    )
    t0 = time.monotonic()
    with pytest.raises(DriverUnavailable) as err:
        await CommandDriver().start(spec)
    assert time.monotonic() - t0 < 3
    assert "timed out after 400ms" in err.value.message and "begun" in err.value.message
    deadline = time.monotonic() + 3
    while live_with(f"sleep {marker}") and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert live_with(f"sleep {marker}") == 0


async def test_command_status_and_env(tmp_path: Path) -> None:
    spec = command_service(
        start={"run": 'test "$MODE" = blue', "env": {"MODE": "blue"}, "cwd": str(tmp_path)},
        stop={"run": ["true"]},
        status={"run": ["sh", "-c", "exit 3"]},
    )
    driver = CommandDriver()
    status = await driver.status(spec)
    assert status.status == RunStatus.STOPPED and "code 3" in status.message
    assert (await driver.start(spec)).changed
    no_status = command_service(start={"run": ["true"]}, stop={"run": ["true"]})
    assert (await driver.status(no_status)).status == RunStatus.UNKNOWN
    missing = command_service(start={"run": ["no-such-binary-xyz"]}, stop={"run": ["true"]})
    with pytest.raises(DriverFailed, match="not found"):
        await driver.start(missing)


async def test_command_explicit_restart(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    spec = command_service(
        start={"run": f"echo start >> {log}"},
        stop={"run": f"echo stop >> {log}"},
        restart={"run": f"echo restart >> {log}"},
    )
    result = await CommandDriver().restart(spec)
    assert result.action == "restart" and log.read_text().split() == ["restart"]


# ---------------------------------------------------------------------------------------------- http


@dataclass
class ControlServer:
    """A real HTTP server (http.server in a thread) that records what it receives."""

    port: int
    calls: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def control() -> Iterator[ControlServer]:
    state = ControlServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            state.calls.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "body": body,
                    "auth": self.headers.get("Authorization"),
                    "x": self.headers.get("X-Extra"),
                }
            )
            if self.path == "/slow":
                time.sleep(1.5)
            code = state.status.get(self.path, 200)
            if self.path != "/status" and self.headers.get("Authorization") != "Bearer tok-123":
                code = 401
            payload = json.dumps({"path": self.path, "code": code}).encode()
            with contextlib.suppress(OSError):  # the client may have given up (timeout test)
                self.send_response(code)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def http_service(control: ControlServer, **extra: Any) -> ServiceSpec:
    config = {
        "start": {"url": control.url("/start"), "body": {"replicas": 2}, "headers": {"X-Extra": "yes"}},
        "stop": {"url": control.url("/stop"), "method": "DELETE"},
        "status": {"url": control.url("/status"), "method": "GET"},
        "auth_token": "tok-123",
        "timeout": "1s",
    }
    config.update(extra)
    return ServiceSpec.model_validate({"id": "remote", "driver": "http", "config": config})


async def test_http_driver_calls_endpoints_with_auth(control: ControlServer) -> None:
    driver = HttpDriver()
    spec = http_service(control)
    started = await driver.start(spec)
    assert started.ok and started.changed
    call = control.calls[-1]
    assert call["method"] == "POST" and call["path"] == "/start"
    assert call["auth"] == "Bearer tok-123" and call["x"] == "yes"
    assert json.loads(call["body"]) == {"replicas": 2}
    assert "tok-123" not in started.message

    assert (await driver.status(spec)).status == RunStatus.RUNNING
    control.status["/status"] = 503
    assert (await driver.status(spec)).status == RunStatus.STOPPED

    stopped = await driver.stop(spec)
    assert stopped.ok and control.calls[-1]["method"] == "DELETE"
    restarted = await driver.restart(spec)  # no restart endpoint: stop then start
    assert [c["path"] for c in control.calls[-2:]] == ["/stop", "/start"] and restarted.action == "restart"
    assert await driver.wait_exit(spec) is None


async def test_http_driver_wrong_status_is_a_failure(control: ControlServer) -> None:
    control.status["/start"] = 409
    with pytest.raises(DriverFailed) as err:
        await HttpDriver().start(http_service(control))
    # the status and the body's length, never the body (the driver must not be a way to read a URL)
    assert "409" in err.value.message and "bytes" in err.value.message and '"code"' not in err.value.message
    assert err.value.details["status"] == 409 and "body" not in err.value.details
    with pytest.raises(DriverFailed, match="401"):
        await HttpDriver().start(http_service(control, auth_token="wrong"))


async def test_http_driver_unreachable_is_retryable(control: ControlServer) -> None:
    closed = free_port()
    spec = http_service(
        control,
        start={"url": f"http://127.0.0.1:{closed}/start"},
        status={"url": f"http://127.0.0.1:{closed}/status", "method": "GET"},
    )
    with pytest.raises(DriverUnavailable) as err:
        await HttpDriver().start(spec)
    assert err.value.retryable and f"connection refused 127.0.0.1:{closed}" in err.value.message
    assert (await HttpDriver().status(spec)).status == RunStatus.UNKNOWN

    slow = http_service(control, start={"url": control.url("/slow")}, timeout="300ms")
    t0 = time.monotonic()
    with pytest.raises(DriverUnavailable, match="timed out"):
        await HttpDriver().start(slow)
    assert time.monotonic() - t0 < 1.4


async def test_http_driver_without_status_endpoint(control: ControlServer) -> None:
    spec = http_service(control, status=None)
    assert (await HttpDriver().status(spec)).status == RunStatus.UNKNOWN


# ---------------------------------------------------------------------------------------------- noop + registry


async def test_noop_driver_and_registry(tmp_path: Path) -> None:
    spec = ServiceSpec.model_validate({"id": "dry", "driver": "noop"})
    registry = build_driver_registry(data_dir=tmp_path)
    driver = registry.for_service(spec)
    assert isinstance(driver, NoopDriver)
    result = await driver.start(spec)
    assert result.ok and not result.changed and result.message == "noop"
    assert (await driver.stop(spec)).ok
    assert (await driver.status(spec)).status == RunStatus.UNKNOWN
    assert await driver.wait_exit(spec) is None
    assert {k.value for k in registry.kinds()} == {"process", "command", "http", "noop"}
