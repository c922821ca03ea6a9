"""End-to-end event latency: a committed state change → a WebSocket client receiving its event. Prints JSON.

    .venv/bin/python bench/events.py [--events 200] [--interval-ms 10] [--database-url URL] [--redis-url URL]

For each bus (in-process, Redis Streams) and each client count (1, 100):

* a *server process* runs the API the way ``windflow up`` does: a real uvicorn on 127.0.0.1 serving
  ``create_app``, with the outbox relay, the event hub and the writer in one process and one event loop. The
  writer produces each state change the way activities do: one database transaction that writes the outbox
  row, then ``relay.notify()``; it notes the instant the transaction committed (``time.monotonic``, i.e.
  CLOCK_MONOTONIC, which is system-wide on Linux and so comparable across processes);
* a *client process* (this one) holds N real ``websockets`` clients subscribed to those events and notes
  when each frame arrives, before parsing it.

Latency = arrival − commit, for every (client, event) pair. Goal: p99 < 50 ms with 100 clients. The database
is a fresh SQLite file (the embedded default) unless ``--database-url`` names a PostgreSQL one; Redis is the
local one (``--redis-url``), or a throwaway ``redis-server`` started for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import free_port, pct

ROOT = Path(__file__).resolve().parent.parent
GOAL_P99_MS = 50.0
WARMUP_EVENTS = 30


def install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


# --------------------------------------------------------------------------- server process


async def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from windflow.api.app import build_resources, create_app
    from windflow.auth.permissions import ALL_PERMISSIONS
    from windflow.auth.tokens import issue_access_token
    from windflow.domain.events import EventType, ServiceStatusUpdate, make_event
    from windflow.persistence.repositories import OutboxRepository
    from windflow.settings import Settings

    data_dir = Path(args.data_dir)
    settings = Settings(
        data_dir=data_dir,
        database_url=args.database_url or f"sqlite+aiosqlite:///{data_dir / 'bench.db'}",
        redis_url=args.redis_url or None,
        events_stream=args.stream,
        jwt_secret="b" * 48,
        events_metrics_interval=0,
        ws_heartbeat=60,
        api_port=args.port,
        _env_file=None,
    )
    res = await build_resources(settings, migrate=True)
    app = create_app(settings, resources=res)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on", backlog=1024)
    )
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("uvicorn did not start")
        await asyncio.sleep(0.02)
    token, _ = issue_access_token(
        key=res.jwt_key, subject="bench", permissions={str(p) for p in ALL_PERMISSIONS}, roles=("admin",), ttl=3600
    )
    print(json.dumps({"ready": True, "token": token}), flush=True)

    outbox = OutboxRepository()
    assert res.relay is not None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        commits: dict[str, float] = {}
        txn: list[float] = []
        for i in range(int(cmd["count"])):
            event = make_event(
                EventType.SERVICE_STATUS_UPDATE,
                ServiceStatusUpdate(service_id="bench", state="running", message=f"#{i}", source="bench"),
                event_id=str(uuid.uuid4()),
                timestamp=datetime.now(UTC),
            )
            began = time.monotonic()
            async with res.db.write() as session:
                await outbox.add(session=session, event=event)
            committed = time.monotonic()
            res.relay.notify()
            commits[event.event_id] = committed
            txn.append(committed - began)
            await asyncio.sleep(float(cmd["interval"]))
        print(json.dumps({"commits": commits, "txn_p50_ms": pct(txn, 50) * 1000}), flush=True)
    server.should_exit = True
    await task
    await res.bus.close()
    await res.db.dispose()


# --------------------------------------------------------------------------- client process


class Server:
    def __init__(self, bus: str, args: argparse.Namespace, redis_url: str | None, workdir: Path) -> None:
        self.port = free_port()
        self.stream = f"windflow:bench:{uuid.uuid4().hex[:10]}"
        data_dir = workdir / f"{bus}-{self.port}"
        data_dir.mkdir(parents=True)
        cmd = [
            sys.executable,
            __file__,
            "--serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            "--stream",
            self.stream,
        ]
        if args.database_url:
            cmd += ["--database-url", args.database_url]
        if bus == "redis" and redis_url:
            cmd += ["--redis-url", redis_url]
        self.log = open(data_dir / "server.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1
        )
        self.token = self._read()["token"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"bench server exited; see {self.log.name}")
            with contextlib.suppress(ValueError):
                return dict(json.loads(line))

    async def emit(self, count: int, interval: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": "emit", "count": count, "interval": interval}) + "\n")
        self.proc.stdin.flush()
        return await asyncio.to_thread(self._read)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


async def run_case(
    bus: str, clients: int, args: argparse.Namespace, redis_url: str | None, workdir: Path
) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    server = Server(bus, args, redis_url, workdir)
    arrivals: list[dict[str, float]] = [{} for _ in range(clients)]
    try:
        url = f"ws://127.0.0.1:{server.port}/api/v1/ws?types=SERVICE_STATUS_UPDATE&services=bench"
        headers = {"Authorization": f"Bearer {server.token}"}
        conns = []
        for _ in range(clients):
            ws = await connect(url, additional_headers=headers, open_timeout=20, max_size=2**20)
            conns.append(ws)
        for ws in conns:
            while json.loads(await ws.recv())["type"] != "subscribed":
                pass

        async def listen(ws: Any, into: dict[str, float]) -> None:
            async for frame in ws:
                arrived = time.monotonic()
                msg = json.loads(frame)
                if msg.get("type") == "event":
                    into[msg["event"]["event_id"]] = arrived

        listeners = [asyncio.create_task(listen(ws, into)) for ws, into in zip(conns, arrivals, strict=True)]
        await server.emit(WARMUP_EVENTS, args.interval_ms / 1000)
        await asyncio.sleep(0.5)
        for into in arrivals:
            into.clear()
        cpu_before = server.cpu_seconds()
        report = await server.emit(args.events, args.interval_ms / 1000)
        commits: dict[str, float] = report["commits"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(len(into) < len(commits) for into in arrivals):
            await asyncio.sleep(0.05)
        server_cpu = server.cpu_seconds() - cpu_before
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        for ws in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
    finally:
        server.stop()
    samples = [(into[eid] - t) * 1000 for into in arrivals for eid, t in commits.items() if eid in into]
    expected = len(commits) * clients
    return {
        "bus": bus,
        "clients": clients,
        "events": len(commits),
        "samples": len(samples),
        "lost": expected - len(samples),
        "p50_ms": round(pct(samples, 50), 2),
        "p99_ms": round(pct(samples, 99), 2),
        "max_ms": round(max(samples), 2) if samples else None,
        "commit_txn_p50_ms": round(report["txn_p50_ms"], 2),
        "server_cpu_ms_per_event": round(server_cpu * 1000 / max(1, len(commits)), 2),
        "meets_goal": bool(samples) and pct(samples, 99) < GOAL_P99_MS and len(samples) == expected,
    }


def local_redis(explicit: str | None) -> tuple[str | None, Any]:
    """The given/local Redis, else a throwaway one (tests.servers), else None (Redis cases skipped)."""
    from urllib.parse import urlparse

    url = explicit or os.environ.get("WINDFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    parsed = urlparse(url)
    with (
        contextlib.suppress(OSError),
        socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=0.5),
    ):
        return url, None
    sys.path.insert(0, str(ROOT))
    try:
        from tests.servers import start_redis

        server = start_redis()
        return server.url, server
    except Exception:  # noqa: BLE001
        return None, None


async def main(args: argparse.Namespace) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    redis_url, throwaway = local_redis(args.redis_url)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="wf-bench-events.") as tmp:
            for bus in ("memory", "redis"):
                if bus == "redis" and redis_url is None:
                    results.append({"bus": bus, "skipped": "no Redis available"})
                    continue
                for clients in (1, 100):
                    results.append(await run_case(bus, clients, args, redis_url, Path(tmp)))
        if redis_url:
            import redis.asyncio as aioredis

            r = aioredis.from_url(redis_url)
            keys = [k async for k in r.scan_iter(match="windflow:bench:*")]
            if keys:
                await r.delete(*keys)
            await r.aclose()
    finally:
        if throwaway is not None:
            throwaway.stop()
    return {
        "benchmark": "event latency: committed outbox row -> WebSocket client",
        "goal": f"p99 < {GOAL_P99_MS:.0f} ms with 100 clients",
        "events_per_case": args.events,
        "interval_ms": args.interval_ms,
        "database": "postgresql" if args.database_url and "postgres" in args.database_url else "sqlite",
        "redis": redis_url,
        "event_loop": args.loop,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200, help="measured state changes per case")
    p.add_argument(
        "--interval-ms",
        type=float,
        default=20.0,
        help="pause between state changes (default: 50/s, i.e. 5,000 messages/s fanned out to 100 clients)",
    )
    p.add_argument("--database-url", default=None, help="SQLAlchemy URL (default: a fresh SQLite file)")
    p.add_argument("--redis-url", default=None)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", default="", help=argparse.SUPPRESS)
    p.add_argument("--stream", default="", help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    arguments = parse()
    arguments.loop = install_uvloop()  # as `uvicorn.run` (windflow api) picks uvloop when installed
    if arguments.serve:
        asyncio.run(serve(arguments))
    else:
        print(json.dumps(asyncio.run(main(arguments)), indent=2))
