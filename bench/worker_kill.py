"""Recovery after a worker SIGKILL: how long until a crash that happened while no worker ran is repaired.

    .venv/bin/python bench/worker_kill.py [--rounds 3] [--heartbeat 10]

A real dev server, a SQLite store, a supervised stand-in service (``examples/services/standin.py``, 0.2 s boot)
and a real `windflow worker` process. Each round: the worker watches the service; the worker is SIGKILL-ed,
then the service's process; a new `windflow worker` is started. Measured from the moment the new worker
process is spawned:

* ``polling_s``: until it logs that it polls (interpreter start, imports, connections: the floor);
* ``recovered_s``: until the service answers ``/health`` from a new process.

``recovered_s - polling_s`` is what windflow adds once a worker runs again. Without the take-over (a worker of
another host, or before it existed) the watch waits for the heartbeat timeout instead (``--heartbeat``; the
supervisors' default is 10 s, 30 s before). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
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
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "examples" / "services" / "standin.py"
sys.path.insert(0, str(ROOT / "src"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health_pid(port: int) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        conn.request("GET", "/health")
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
    except OSError:
        return None
    if resp.status != 200:
        return None
    try:
        return int(json.loads(body).get("pid"))
    except (ValueError, TypeError, AttributeError):
        return -1


def pids_with(marker: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd and int(entry) != os.getpid():
                out.append(int(entry))
    return out


def spawn_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from windflow.cli.main import run; run()", "worker"],
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait(timeout=10)


async def until(check: Any, timeout: float, interval: float = 0.01) -> float:
    begin = time.perf_counter()
    while time.perf_counter() - begin < timeout:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.perf_counter() - begin
        await asyncio.sleep(interval)
    raise TimeoutError(f"not within {timeout}s")


async def run(rounds: int, heartbeat: float) -> dict[str, Any]:
    from temporalio.common import WorkflowIDConflictPolicy
    from temporalio.testing import WorkflowEnvironment

    from windflow.domain.contracts import SupervisionState, SupervisorInput
    from windflow.domain.models import ServiceSpec
    from windflow.drivers import build_driver_registry
    from windflow.persistence import registry
    from windflow.persistence.db import Database
    from windflow.persistence.migrate import upgrade
    from windflow.temporal.client import DATA_CONVERTER
    from windflow.temporal.search_attributes import ALL_KEYS
    from windflow.workflows.supervision import ServiceSupervisor

    tmp = Path(tempfile.mkdtemp(prefix="wf-wkill-"))
    temporal = shutil.which("temporal", path=os.path.dirname(sys.executable)) or shutil.which("temporal")
    env = await WorkflowEnvironment.start_local(
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
    database_url = f"sqlite+aiosqlite:///{tmp / 'store.db'}"
    db = Database.from_url(database_url)
    port = free_port()
    task_queue = f"wkill-{uuid.uuid4().hex[:8]}"
    worker_env = {
        **os.environ,
        "WINDFLOW_DATA_DIR": str(tmp / "data"),
        "WINDFLOW_DATABASE_URL": database_url,
        "WINDFLOW_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "WINDFLOW_TEMPORAL_NAMESPACE": "default",
        "WINDFLOW_TASK_QUEUE": task_queue,
        "WINDFLOW_JWT_SECRET": "y" * 40,
        "WINDFLOW_WORKER_METRICS_PORT": "0",
        "WINDFLOW_CODEC_DISABLED": "true",
    }  # this bench's own client reads the payloads
    workers: list[subprocess.Popen[bytes]] = []
    samples: list[dict[str, float]] = []
    try:
        await upgrade(db.engine)
        spec = ServiceSpec.model_validate(
            {
                "id": "victim",
                "driver": "process",
                "config": {
                    "command": [sys.executable, str(STANDIN), "--name", "victim", "--port", str(port), "--boot", "0.2"],
                    "stop_grace": "2s",
                },
                "health": {
                    "kind": "http",
                    "url": f"http://127.0.0.1:{port}/health",
                    "interval": "0.2s",
                    "timeout": "1s",
                    "failure_threshold": 2,
                },
                "restart": {"backoff": "0s", "max_attempts": 1000, "jitter": 0},
            }
        )
        async with db.write() as session:
            await registry.create_service(session=session, spec=spec, author="bench")
        driver = build_driver_registry(data_dir=tmp / "data").for_service(spec)
        await driver.start(spec)
        await until(lambda: health_pid(port), 30)
        workers.append(spawn_worker(worker_env, tmp / "w0.log"))
        handle = await env.client.start_workflow(
            ServiceSupervisor.run,
            SupervisorInput(service_id="victim", heartbeat_timeout=heartbeat),
            id="supervise/victim",
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
        )

        async def watching() -> bool:
            st = await handle.query(ServiceSupervisor.query_status)
            return st.state == SupervisionState.WATCHING

        for n in range(rounds):
            await until(watching, 90, 0.1)
            await asyncio.sleep(1.0)  # the watch is under way
            kill_group(workers[-1])
            old = health_pid(port)
            for pid in pids_with(f"--port {port} "):
                os.kill(pid, signal.SIGKILL)
            log = tmp / f"w{n + 1}.log"
            workers.append(spawn_worker(worker_env, log))
            polling = await until(lambda log=log: log.exists() and b"worker polling" in log.read_bytes(), 90)
            recovered = polling + await until(lambda old=old: (health_pid(port) or old) != old, 120)
            samples.append(
                {
                    "polling_s": round(polling, 3),
                    "recovered_s": round(recovered, 3),
                    "added_s": round(recovered - polling, 3),
                }
            )
        await handle.terminate("bench over")
    finally:
        for proc in workers:
            kill_group(proc)
        for pid in pids_with(f"--port {port} "):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        await db.dispose()
        await env.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    added = [s["added_s"] for s in samples]
    return {
        "rounds": samples,
        "added_median_s": round(statistics.median(added), 3) if added else None,
        "added_max_s": max(added) if added else None,
        "heartbeat_timeout_s": heartbeat,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--heartbeat", type=float, default=10.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.rounds, args.heartbeat))
    print(
        json.dumps(
            {
                "bench": "worker_kill",
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_avg_1m": os.getloadavg()[0],
                **result,
            },
            indent=2,
        )
    )
    os._exit(0)


if __name__ == "__main__":
    main()
