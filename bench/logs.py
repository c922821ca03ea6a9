"""Log follow latency: a line a service writes, until a client following it has it. One JSON document.

    .venv/bin/python bench/logs.py [--services 10] [--rate 1000] [--seconds 10] [--source file|redis|both]

``--services`` writer processes each append ``--rate`` lines a second to their stdout log (as the process
driver's services do: ``data_dir/logs/SERVICE.out.log``), every line carrying the time it was written. A real
``windflow api`` process (uvicorn, SQLite store, the services registered) serves them; one client per service
follows ``GET /api/v1/services/{id}/logs?follow=true`` (NDJSON, what ``windflow logs -f`` and the dashboard read).
Latency = the client's receive time minus the line's write time (same machine, same clock).

Sources (``--source``):

- ``file``: the API reads the log files itself (the embedded default: API and worker on one host).
- ``redis``: production across hosts: the worker's ``LogShipper`` appends new lines to Redis Streams, the API
  (no log files on its host) reads them with XREAD. The shipper runs in its own process, exactly the code the
  worker runs; its CPU is the worker's CPU for shipping logs.

Floor, measured in the same run: a bare in-process follower of the same files (read what is new, sleep 5 ms),
no HTTP, no windflow: what following costs on this machine at all. Goal (issue 17): p99 ≤ 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
from _common import pct  # noqa: E402

GOAL_P99_MS = 200.0
LATE = 2.0  # a follower waits this long past the window for its last lines
STAMP = re.compile(rb'"line":\s*"([0-9.]+) ')
WRITER = """
import os, sys, time
path, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
period, n = 1.0 / rate, 0
start = time.monotonic()
while time.monotonic() - start < seconds:
    n += 1
    os.write(fd, f"{time.time():.6f} line {n} of a service writing its log at a steady pace\\n".encode())
    delay = start + n * period - time.monotonic()
    if delay > 0:
        time.sleep(delay)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks


def latencies_summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"lines": 0}
    ms = [v * 1000 for v in values]
    return {
        "lines": len(ms),
        "p50_ms": round(pct(ms, 50), 1),
        "p90_ms": round(pct(ms, 90), 1),
        "p99_ms": round(pct(ms, 99), 1),
        "max_ms": round(max(ms), 1),
        "mean_ms": round(statistics.mean(ms), 1),
    }


def _in_window(written: float, window: tuple[float, float]) -> bool:
    return window[0] <= written <= window[1]


async def bare_follow(paths: list[Path], window: tuple[float, float]) -> list[float]:
    """The floor: read what is new in each file every 5 ms, in this process; latencies of the lines written
    within ``window`` (epoch seconds)."""
    out: list[float] = []
    handles = {p: open(p, "rb") for p in paths}  # noqa: SIM115
    try:
        partial = dict.fromkeys(paths, b"")
        while time.time() < window[1] + LATE:
            for path, fh in handles.items():
                data = fh.read()
                if not data:
                    continue
                now = time.time()
                chunk = partial[path] + data
                *lines, partial[path] = chunk.split(b"\n")
                for line in lines:
                    written = float(line.split(b" ", 1)[0]) if line else 0.0
                    if _in_window(written, window):
                        out.append(now - written)
            await asyncio.sleep(0.005)
    finally:
        for fh in handles.values():
            fh.close()
    return out


async def api_follow(base: str, token: str, service: str, window: tuple[float, float], out: list[float]) -> None:
    import httpx2

    async with httpx2.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(10.0, read=None)
    ) as http:
        async with http.stream(
            "GET", f"/api/v1/services/{service}/logs", params={"follow": "true", "lines": 0, "stream": "stdout"}
        ) as resp:
            resp.raise_for_status()
            rest = b""
            async for data in resp.aiter_raw():  # bytes as they come: the client must not be the bottleneck
                now = time.time()
                if now >= window[1] + LATE:
                    break
                *lines, rest = (rest + data).split(b"\n")
                for raw in lines:  # {"stream": ..., "line": "<written> line N ...", ...}: the float after "line"
                    match = STAMP.search(raw)
                    if match:
                        written = float(match.group(1))
                        if _in_window(written, window):
                            out.append(now - written)


async def run_source(source: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from windflow.domain.models import ServiceSpec
    from windflow.persistence import registry
    from windflow.persistence.db import Database
    from windflow.persistence.migrate import upgrade

    work = tmp / source
    data_dir = work / "data"  # the services' host: their logs
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True)
    api_dir = work / "api" if source == "redis" else data_dir  # across hosts, the API has no log files
    api_dir.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite+aiosqlite:///{work / 'store.db'}"
    db = Database.from_url(db_url)
    await upgrade(db.engine)
    names = [f"svc{i:02d}" for i in range(args.services)]
    async with db.write() as session:
        for name in names:
            await registry.create_service(
                session=session,
                author="bench",
                spec=ServiceSpec.model_validate({"id": name, "driver": "process", "config": {"command": ["true"]}}),
            )
    await db.dispose()
    for name in names:  # the files exist before anyone follows them (the service has started)
        (log_dir / f"{name}.out.log").touch()
        (log_dir / f"{name}.err.log").touch()
    secret = "b" * 48
    prefix = f"wfbench{os.getpid()}:{source}:logs:"
    port = free_port()
    password = "bench-admin-password-0123"
    env = {
        **os.environ,
        "WINDFLOW_DATA_DIR": str(api_dir),
        "WINDFLOW_DATABASE_URL": db_url,
        "WINDFLOW_BOOTSTRAP_ADMIN_PASSWORD": password,
        "WINDFLOW_JWT_SECRET": secret,
        "WINDFLOW_API_HOST": "127.0.0.1",
        "WINDFLOW_API_PORT": str(port),
        "WINDFLOW_LOG_LEVEL": "WARNING",
        "WINDFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    if source == "redis":
        env["WINDFLOW_REDIS_URL"] = args.redis_url
        env["WINDFLOW_LOGS_PREFIX"] = prefix
    api = subprocess.Popen(
        [sys.executable, "-c", "from windflow.cli.main import run; run()", "api"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(work / "api.log", "wb"),  # noqa: SIM115
        start_new_session=True,
    )
    shipper = None
    procs: list[subprocess.Popen[bytes]] = []
    try:
        base = f"http://127.0.0.1:{port}"
        import httpx2

        for _ in range(300):
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(f"{base}/healthz", timeout=1).status_code < 500:
                    break
            await asyncio.sleep(0.1)
        # a real sign-in: a follow re-checks its token against the store every few seconds
        token = httpx2.post(
            f"{base}/api/v1/auth/login", json={"username": "admin", "password": password}, timeout=10
        ).json()["access_token"]
        if source == "redis":
            code = (
                "import asyncio, sys; from pathlib import Path; from windflow.service_logs import LogShipper; "
                "from redis.asyncio import Redis; "
                "r = Redis.from_url(sys.argv[1], decode_responses=True); "
                "s = LogShipper(r, Path(sys.argv[2]), prefix=sys.argv[3]); asyncio.run(s.run())"
            )
            shipper = subprocess.Popen(
                [sys.executable, "-c", code, args.redis_url, str(log_dir), prefix], start_new_session=True
            )
            await asyncio.sleep(1.0)
        total = args.seconds + args.warmup + 1.0
        # the measured lines: those written from `warmup` after the writers start, for `seconds`
        start = time.time() + 0.5
        window = (start + args.warmup, start + args.warmup + args.seconds)
        followers: list[list[float]] = [[] for _ in names]
        tasks = [asyncio.create_task(api_follow(base, token, n, window, followers[i])) for i, n in enumerate(names)]
        floor_task = asyncio.create_task(bare_follow([log_dir / f"{n}.out.log" for n in names], window))
        await asyncio.sleep(max(0.0, start - time.time()))  # the followers are connected
        cpu_api0 = cpu_seconds(api.pid)
        cpu_ship0 = cpu_seconds(shipper.pid) if shipper else 0.0
        t0 = time.monotonic()
        procs = [
            subprocess.Popen([sys.executable, "-c", WRITER, str(log_dir / f"{n}.out.log"), str(args.rate), str(total)])
            for n in names
        ]
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
        floor = await floor_task
        wall = time.monotonic() - t0
        cpu_api = cpu_seconds(api.pid) - cpu_api0
        cpu_ship = (cpu_seconds(shipper.pid) - cpu_ship0) if shipper else None
        for p in procs:
            p.wait(timeout=30)
        in_window = 0
        for n in names:
            with open(log_dir / f"{n}.out.log", "rb") as fh:
                in_window += sum(1 for line in fh if _in_window(float(line.split(b" ", 1)[0]), window))
        got = [x for f in followers for x in f]
        summary = latencies_summary(got)
        floor_summary = latencies_summary(floor)
        return {
            "source": source,
            "lines_written_in_window": in_window,
            "measured_window_s": args.seconds,
            "delivered_fraction": round(len(got) / in_window / 1, 3) if in_window else None,
            "windflow": summary,
            "floor": floor_summary,
            "follow_errors": errors,
            "lines_per_follower": [len(f) for f in followers],
            "ratio_p99_to_floor": round(summary["p99_ms"] / max(floor_summary["p99_ms"], 1.0), 2)
            if got and floor
            else None,
            "goal": {"rule": f"p99 <= {GOAL_P99_MS:g} ms", "pass": bool(got) and summary["p99_ms"] <= GOAL_P99_MS},
            "cpu": {
                "api_cores": round(cpu_api / wall, 3),
                "worker_log_shipper_cores": round(cpu_ship / wall, 3) if cpu_ship is not None else None,
                "window_s": round(wall, 1),
            },
        }
    finally:
        for p in [*procs, api, *([shipper] if shipper else [])]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL) if p in (api, shipper) else p.kill()
            with contextlib.suppress(Exception):
                p.wait(timeout=5)
        if source == "redis":
            with contextlib.suppress(Exception):
                from redis.asyncio import Redis

                r = Redis.from_url(args.redis_url)
                keys = [k async for k in r.scan_iter(match=f"{prefix}*")]
                if keys:
                    await r.delete(*keys)
                await r.aclose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="wf-bench-logs."))
    load_start = round(os.getloadavg()[0], 2)
    try:
        sources = ["file", "redis"] if args.source == "both" else [args.source]
        results = [await run_source(s, args, tmp) for s in sources]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "loadavg_1m_at_start": load_start,
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
            "note": "a machine shared by several engineers: other work competes for its 2 cores",
        },
        "load": {"services": args.services, "lines_per_s_each": args.rate},
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1000.0, help="lines per second per service")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--source", choices=("file", "redis", "both"), default="both")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="keys under a prefix of this run")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print(json.dumps(report, indent=2))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
