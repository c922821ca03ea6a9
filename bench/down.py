"""``windflow down`` of the 50-component bench system against the bare reverse-order asyncio stop. One JSON document.

    .venv/bin/python bench/down.py [--quick] [--runs N] [--seed S] [--drain SECONDS]

The system is bench/init.py's (50 lean components in 5 dependency levels, seeded random), each component
taking ``--drain`` seconds (default 0.2, like its 0.2 s boot) to shut down after SIGTERM, as a server that
drains its connections does.

Measured in the same run:

1. ``floor``: the same 50 processes (spawned and healthy) stopped by a bare asyncio loop, no windflow, no
   Temporal: layer by layer, dependants first, every process of a layer at once: SIGTERM to its process group,
   wait for its exit (polled every 5 ms), then the next layer. ``theoretical_s`` is levels × drain.
2. ``windflow``: a real Temporal dev server, a real worker, a SQLite store. An initialization brings the
   system up, then ``SystemShutdown`` (what ``windflow down`` starts) stops every service, timed from
   ``start_workflow`` to its result. Several runs.

Goal (issue 17): windflow median ≤ 1.3 × the floor's median. ``profile`` splits the median run's time per
layer into the stop activities themselves and what is around them (supervision pause, records).
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
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import init as system  # noqa: E402  (bench/init.py: the same system builder and worker setup)

GOAL_RATIO = 1.3
POLL = 0.005


async def _stop_bare(proc: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while proc.poll() is None:
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            break
        await asyncio.sleep(POLL)


async def measure_floor(graph: dict[str, list[str]], ports: dict[str, int]) -> float:
    """Spawn the 50, wait until all answer, then time the bare reverse-order stop."""
    from windflow.domain.graph import layers

    procs = {name: system.spawn(name, ports[name]) for name in graph}
    try:
        deadline = time.monotonic() + 30
        pending = set(graph)
        while pending and time.monotonic() < deadline:
            answered = await asyncio.gather(*(system.healthy_async(ports[n]) for n in sorted(pending)))
            pending -= {n for n, ok in zip(sorted(pending), answered, strict=True) if ok}
            await asyncio.sleep(0.02)
        if pending:
            raise RuntimeError(f"not healthy for the floor: {sorted(pending)}")
        begin = time.perf_counter()
        for layer in reversed(layers(graph)):
            await asyncio.gather(*(_stop_bare(procs[n]) for n in layer))
        return time.perf_counter() - begin
    finally:
        for proc in procs.values():
            system.stop_popen(proc)


async def run_down(wf: system.Windflow) -> dict[str, Any]:
    """Bring the system up (an initialization), then time one SystemShutdown of every service."""
    from windflow.domain.shutdown import ShutdownInput, ShutdownStatus
    from windflow.workflows.shutdown import SystemShutdown

    await wf.run_plain()
    await asyncio.sleep(0.3)  # the started processes settle
    run_id = uuid.uuid4().hex[:12]
    begin = time.perf_counter()
    handle = await wf.env.client.start_workflow(
        SystemShutdown.run, ShutdownInput(run_id=run_id, actor="bench"), id=f"down/{run_id}", task_queue=wf.task_queue
    )
    state = await handle.result()
    elapsed = time.perf_counter() - begin
    if state.status != ShutdownStatus.COMPLETED:
        raise RuntimeError(f"shutdown {run_id} ended {state.status}: {state.message}")
    left = system.marked_pids()
    timeline = await system.activity_timeline(handle)
    return {
        "run_id": run_id,
        "seconds": round(elapsed, 3),
        "left_running": len(left),
        "profile": _profile(state, timeline),
    }


def _profile(state: Any, timeline: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    """Per layer: its wall time (first stop started → last stop finished, from the run's state) and, over its
    services, the median time inside stop_service and inside the supervision pause (history timestamps)."""
    layers = []
    for i, layer in enumerate(state.layers):
        comps = [state.components[n] for n in layer]
        start = min(c.started_at for c in comps)
        end = max(c.finished_at for c in comps)
        stops, pauses = [], []
        for name in layer:
            for kind, out in (("stop_service", stops), ("pause_supervisor", pauses)):
                t = timeline.get((kind, name))
                if t and t.get("scheduled") and t.get("completed"):
                    out.append((t["completed"] - t["scheduled"]).total_seconds() * 1000)
        layers.append(
            {
                "layer": i,
                "services": len(layer),
                "wall_ms": round((end - start).total_seconds() * 1000, 1),
                "stop_service_ms_median": round(statistics.median(stops), 1) if stops else None,
                "pause_supervisor_ms_median": round(statistics.median(pauses), 1) if pauses else None,
            }
        )
    return {"layers": layers}


async def run(quick: bool, runs: int | None, seed: int, drain: float) -> dict[str, Any]:
    levels, per_level = (5, 10) if not quick else (5, 4)
    n_runs = runs or (5 if not quick else 2)
    system.EXTRA_ARGS[:] = ["--drain", str(drain)]
    graph = system.generate(levels, per_level, seed)
    ports = dict(zip(sorted(graph), system.free_ports(len(graph)), strict=True))
    started = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2)
    tmp = Path(tempfile.mkdtemp(prefix="wf-bench-down."))
    wf = system.Windflow(tmp)
    floors: list[float] = []
    results: list[dict[str, Any]] = []
    try:
        await wf.start(graph, ports)
        for i in range(n_runs):  # floor and windflow alternate: drift of the shared machine hits both alike
            floors.append(await measure_floor(graph, ports))
            await asyncio.sleep(0.3)
            results.append(await run_down(wf))
            await asyncio.sleep(0.3)
            if i == 0 and results[0]["left_running"]:
                raise RuntimeError(f"{results[0]['left_running']} processes left running after the shutdown")
    finally:
        await wf.close()
        left = system.kill_marked()
        shutil.rmtree(tmp, ignore_errors=True)
    floor = round(statistics.median(floors), 3)
    seconds = [r["seconds"] for r in results]
    windflow = round(statistics.median(seconds), 3)
    median_run = sorted(results, key=lambda r: r["seconds"])[len(results) // 2]
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "loadavg_1m_at_start": load_start,
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
            "note": "a machine shared by several engineers: other work competes for its 2 cores",
        },
        "quick": quick,
        "system": {
            "components": len(graph),
            "levels": levels,
            "per_level": per_level,
            "seed": seed,
            "drain_s": drain,
            "component": "lean",
        },
        "floor": {
            "theoretical_s": round(levels * drain, 3),
            "measured_median_s": floor,
            "measured_s": [round(f, 3) for f in floors],
            "note": "bare asyncio, reverse dependency order, each layer at once: SIGTERM the group, poll the "
            "exit every 5 ms",
        },
        "windflow": {"median_s": windflow, "min_s": min(seconds), "runs_s": seconds},
        "ratio_to_floor": round(windflow / floor, 3),
        "goal": {
            "rule": f"windflow median <= floor x {GOAL_RATIO}",
            "limit_s": round(floor * GOAL_RATIO, 3),
            "pass": windflow <= floor * GOAL_RATIO,
        },
        "windflow_overhead_s": round(windflow - floor, 3),
        "overhead_per_layer_ms": round((windflow - floor) / levels * 1000, 1),
        "profile_of_median_run": median_run["profile"],
        "leftover_processes_killed": left,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 components, 2 runs")
    parser.add_argument("--runs", type=int, default=None, help="runs of each (default 5, quick 2)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--drain", type=float, default=0.2, help="seconds each component takes to stop")
    args = parser.parse_args()
    json_out = os.fdopen(os.dup(1), "w")  # the dev server writes its banner to fd 1: keep stdout for the JSON
    sys.stdout.flush()
    os.dup2(2, 1)
    code = 0
    try:
        report = asyncio.run(run(args.quick, args.runs, args.seed, args.drain))
        json_out.write(json.dumps(report, indent=2) + "\n")
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; processes cleaned up", file=sys.stderr)
        code = 130
    finally:
        system.kill_marked()
    json_out.flush()
    os._exit(code)  # Temporal's core runtime can abort at interpreter exit (sdk-python #300)


if __name__ == "__main__":
    main()
