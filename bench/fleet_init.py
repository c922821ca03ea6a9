"""One initialization of a fleet: N services (default 1,000) in one run. Prints one JSON document.

    .venv/bin/python bench/fleet_init.py [--n 1000] [--levels 5] [--driver sleep|noop] [--parallelism 0]

Checks that an initialization of any size starts, stays within the engine's limits (search attribute values,
payload and history sizes) and completes; measures what it costs. Every service is a real process by default:
``sleep 86400.PID`` through the process driver (a few hundred KiB each, so a thousand fit on a small machine),
with no health probe (running is healthy): the figure is windflow's own orchestration of N spawns, not the
services' boot. ``--driver noop`` leaves processes out. Services are ``monitored: false``: this measures the
initialization, not supervision. Levels: ``--levels`` dependency levels of equal size, each service depending
on one service of the level before (seeded).

Reported: wall time from ``start_workflow`` to the result, per service, the run's history (events, bytes,
largest event), the search attributes it carries, the worker's and the dev server's CPU seconds, and how many
processes run afterwards. A bench, not a test: nothing here is asserted but the run's success.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

MARKER = f"86400.{os.getpid()}"  # the sleep's argument: finds (and kills) every process of this bench


def marked() -> list[int]:
    out = []
    needle = b"sleep\0" + MARKER.encode() + b"\0"
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle in Path(f"/proc/{entry}/cmdline").read_bytes():
                    out.append(int(entry))
            except OSError:
                continue
    return out


def kill_marked() -> int:
    pids = marked()
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return len(pids)


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dev_server_pid(port: int) -> int | None:
    needle = f"--port\0{port}\0".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"start-dev" in cmdline and needle in cmdline:
                return int(entry)
    return None


def graph_of(n: int, levels: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    per = max(1, n // levels)
    names = [f"fleet-{i:05d}" for i in range(n)]
    graph: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        level = min(i // per, levels - 1)
        graph[name] = [names[rng.randrange(per * (level - 1), per * level)]] if level > 0 else []
    return graph


async def run(n: int, levels: int, driver: str, parallelism: int, seed: int) -> dict[str, Any]:
    from temporalio.api.enums.v1 import EventType
    from temporalio.testing import WorkflowEnvironment

    from windflow.domain.contracts import InitInput, InitOptions, InitStatus
    from windflow.domain.graph import layers
    from windflow.domain.models import ServiceSpec
    from windflow.domain.system import SystemFile
    from windflow.persistence import registry
    from windflow.persistence.db import Database
    from windflow.persistence.migrate import upgrade
    from windflow.settings import Settings
    from windflow.temporal import search_attributes as sa
    from windflow.temporal.client import DATA_CONVERTER
    from windflow.worker import build_worker
    from windflow.workflows.initialization import SystemInitialization

    tmp = Path(tempfile.mkdtemp(prefix="wf-fleet-"))
    temporal = shutil.which("temporal", path=os.path.dirname(sys.executable)) or shutil.which("temporal")
    env = await WorkflowEnvironment.start_local(
        namespace="default",
        data_converter=DATA_CONVERTER,
        search_attributes=sa.ALL_KEYS,
        dev_server_existing_path=temporal,
        dev_server_extra_args=[
            "--dynamic-config-value",
            "matching.numTaskqueueReadPartitions=1",
            "--dynamic-config-value",
            "matching.numTaskqueueWritePartitions=1",
        ],
        dev_server_startup_timeout=timedelta(seconds=60),
    )
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp / 'store.db'}")
    try:
        await upgrade(db.engine)
        client = env.client
        task_queue = f"fleet-{uuid.uuid4().hex[:8]}"
        settings = Settings(
            data_dir=tmp / "data",
            database_url=f"sqlite+aiosqlite:///{tmp / 'store.db'}",
            jwt_secret="x" * 48,
            temporal_address=client.service_client.config.target_host,
            temporal_namespace=client.namespace,
            task_queue=task_queue,
            _env_file=None,
        )
        parts = build_worker(client=client, settings=settings, db=db)  # before the long registration
        graph = graph_of(n, levels, seed)
        specs = []
        for layer in layers(graph):
            for name in layer:
                config: dict[str, Any] = {"command": ["sleep", MARKER], "stop_grace": "1s"} if driver == "sleep" else {}
                specs.append(
                    ServiceSpec.model_validate(
                        {
                            "id": name,
                            "driver": "process" if driver == "sleep" else "noop",
                            "config": config,
                            "depends_on": graph[name],
                            "monitored": False,
                        }
                    )
                )
        async with db.write() as session:  # as `windflow apply` does: one all-or-nothing transaction
            await registry.apply_system(session=session, system=SystemFile(services=specs), author="bench")
        server = dev_server_pid(int(client.service_client.config.target_host.rsplit(":", 1)[1]))
        server_cpu = cpu_seconds(server) if server else None
        own_cpu = resource.getrusage(resource.RUSAGE_SELF)
        async with parts.worker:
            run_id = uuid.uuid4().hex[:12]
            begin = time.perf_counter()
            handle = await client.start_workflow(
                SystemInitialization.run,
                InitInput(
                    run_id=run_id,
                    options=InitOptions(
                        retry_window=0, parallelism=parallelism or None, overall_timeout=3600, component_timeout=600
                    ),
                    actor="bench",
                ),
                id=f"init/{run_id}",
                task_queue=task_queue,
            )
            state = await handle.result()
            elapsed = time.perf_counter() - begin
        after = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu_after = cpu_seconds(server) if server else None
        events = 0
        size = 0
        largest = (0, "")
        workflow_tasks = 0
        async for event in handle.fetch_history_events():
            events += 1
            raw = event.ByteSize()
            size += raw
            if raw > largest[0]:
                largest = (raw, EventType.Name(event.event_type))
            workflow_tasks += event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        attrs = (await handle.describe()).typed_search_attributes
        listed = attrs.get(sa.SERVICES) or []
        running = len(marked()) if driver == "sleep" else None
        return {
            "status": state.status.value,
            "succeeded": state.status == InitStatus.SUCCEEDED,
            "components": len(state.components),
            "healthy": sum(1 for c in state.components.values() if c.status.value == "HEALTHY"),
            "processes_running_after": running,
            "wall_s": round(elapsed, 2),
            "per_component_ms": round(1000 * elapsed / n, 2),
            "history": {
                "events": events,
                "bytes": size,
                "largest_event_bytes": largest[0],
                "largest_event_type": largest[1],
                "workflow_tasks": workflow_tasks,
            },
            "search_attributes": {
                "WindflowServices_listed": len(listed),
                "WindflowServices_json_bytes": len(json.dumps(listed)),
                "WindflowServiceCount": attrs.get(sa.SERVICE_COUNT),
            },
            "cpu_s": {
                "bench_process (worker, store, client)": round(
                    after.ru_utime + after.ru_stime - own_cpu.ru_utime - own_cpu.ru_stime, 2
                ),
                "dev_server": round(server_cpu_after - server_cpu, 2)
                if server_cpu is not None and server_cpu_after is not None
                else None,
            },
        }
    finally:
        kill_marked()
        await db.dispose()
        await env.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--driver", choices=("sleep", "noop"), default="sleep")
    parser.add_argument("--parallelism", type=int, default=0, help="0: no limit")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    from _common import raise_nofile

    raise_nofile(8192)
    result = asyncio.run(run(args.n, args.levels, args.driver, args.parallelism, args.seed))
    print(
        json.dumps(
            {
                "bench": "fleet_init",
                "n": args.n,
                "levels": args.levels,
                "driver": args.driver,
                "parallelism": args.parallelism,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                **result,
            },
            indent=2,
        )
    )
    os._exit(0 if result["succeeded"] else 1)  # the Temporal SDK can abort at interpreter exit


if __name__ == "__main__":
    main()
