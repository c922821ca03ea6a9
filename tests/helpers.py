"""Helpers shared by workflow tests: stand-in services, process counting, workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from windflow.domain.models import ServiceSpec
from windflow.persistence import registry
from windflow.persistence.db import Database

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "examples" / "services" / "standin.py"


def standin(
    name: str,
    port: int,
    *,
    boot: float = 0.2,
    deps: Iterable[str] = (),
    protocol: str = "http",
    args: Iterable[str] = (),
    interval: str = "0.2s",
    failure_threshold: int = 2,
    **extra: Any,
) -> ServiceSpec:
    command = [sys.executable, str(STANDIN), "--name", name, "--port", str(port), "--boot", str(boot),
               "--protocol", protocol, *args]
    health = (
        {"kind": "http", "url": f"http://127.0.0.1:{port}/health", "interval": interval, "timeout": "1s",
         "failure_threshold": failure_threshold}
        if protocol == "http"
        else {"kind": "tcp", "port": port, "interval": interval, "timeout": "1s",
              "failure_threshold": failure_threshold}
    )
    body: dict[str, Any] = {"id": name, "driver": "process", "config": {"command": command, "stop_grace": "2s"},
                            "depends_on": deps if isinstance(deps, dict) else list(deps), "health": health}
    body.update(extra)
    return ServiceSpec.model_validate(body)


async def register(db: Database, *specs: ServiceSpec) -> None:
    async with db.write() as session:
        for spec in specs:
            await registry.create_service(session=session, spec=spec, author="test")


def processes_with(marker: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line contains ``marker``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state = stat.rsplit(")", 1)[1].split()[0]
        if marker in cmdline and state != "Z" and int(entry) != os.getpid():
            out.append(int(entry))
    return out


def kill_marked(marker: str) -> None:
    for pid in processes_with(marker):
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except OSError:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


async def eventually(check: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``check`` (sync or async) until it returns a truthy value."""
    from temporalio.service import RPCError

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if asyncio.iscoroutine(last):
                last = await last
        except RPCError as exc:  # e.g. a query while no worker polls yet (one was just killed): ask again
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


async def create(api, spec: ServiceSpec) -> None:
    """Register ``spec`` through the API."""
    r = await api.post("/api/v1/services", json=spec.model_dump(mode="json"))
    assert r.status_code == 201, r.text


async def start_service(settings: Any, spec: ServiceSpec) -> int:
    """Start ``spec`` with its driver directly (no workflow), as the worker with ``settings`` would; its pid."""
    from windflow.drivers import build_driver_registry

    result = await build_driver_registry(data_dir=settings.ensure_data_dir()).for_service(spec).start(spec)
    assert result.ok, result.message
    return result.pid


async def healthy(port: int) -> bool:
    """A stand-in on ``port`` answers its /health with 200."""
    import httpx2

    try:
        async with httpx2.AsyncClient(timeout=0.5) as http:
            return (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
    except httpx2.HTTPError:
        return False


async def supervise(client, task_queue: str, service_id: str, heartbeat_timeout: float = 5.0):
    """Start (or replace) the ServiceSupervisor of ``service_id``; its handle."""
    from temporalio.common import WorkflowIDConflictPolicy

    from windflow.domain.contracts import SupervisorInput
    from windflow.workflows.supervision import ServiceSupervisor

    return await client.start_workflow(
        ServiceSupervisor.run, SupervisorInput(service_id=service_id, heartbeat_timeout=heartbeat_timeout),
        id=f"supervise/{service_id}", task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
    )


async def watching(handle, restarts: int | None = None):
    """The supervisor's status once it watches again (after ``restarts`` restarts, when given); else None."""
    from windflow.domain.contracts import SupervisionState
    from windflow.workflows.supervision import ServiceSupervisor

    st = await handle.query(ServiceSupervisor.query_status)
    if st.state != SupervisionState.WATCHING:
        return None
    if restarts is not None and st.restarts_total != restarts:
        return None
    return st


async def terminate_quietly(client, *workflow_ids: str) -> None:
    """Terminate each workflow that is still running (a test's leftovers); one not found or already closed is fine."""
    from temporalio.service import RPCError, RPCStatusCode

    for workflow_id in workflow_ids:
        try:
            await client.get_workflow_handle(workflow_id).terminate("test over")
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise


def worker_settings(tmp_path, task_queue: str, temporal_env, db: Database):
    from windflow.settings import Settings

    client = temporal_env.client
    return Settings(
        data_dir=tmp_path / "data",
        database_url=str(db.engine.url.render_as_string(hide_password=False)),
        jwt_secret="x" * 48,
        temporal_address=client.service_client.config.target_host,
        temporal_namespace=client.namespace,
        task_queue=task_queue,
        _env_file=None,
    )


@asynccontextmanager
async def running_worker(client, settings, db, **kwargs):
    from tests.conftest import strict_runner
    from windflow.worker import build_worker

    parts = build_worker(client=client, settings=settings, db=db, workflow_runner=strict_runner(), **kwargs)
    async with parts.worker:
        yield parts


async def initialize_through_api(api, settings: Any, db: Database, port: int, request_id: str):
    """Register one stand-in ``web`` on ``port`` and run an initialization through the API (``request_id`` as its
    X-Request-Id) on an in-process worker whose client comes from ``connect``, as in `windflow worker` (with its
    tracing and request-id interceptors). Returns the finished run's workflow handle."""
    from windflow.temporal.client import connect

    await register(db, standin("web", port, boot=0.1, monitored=False))
    client = await connect(settings)
    async with running_worker(client, settings, db):
        r = await api.post("/api/v1/initializations", json={}, headers={"X-Request-Id": request_id})
        assert r.status_code == 202, r.text
        assert r.headers["x-request-id"] == request_id
        handle = client.get_workflow_handle(r.json()["workflow_id"])
        await asyncio.wait_for(handle.result(), timeout=60)
    return handle


def worker_process(settings: Any, tmp_path: Path, name: str, *args: str,
                   **env_overrides: str) -> subprocess.Popen[bytes]:
    """A real `windflow worker` OS process for ``settings`` (its own process group, output in NAME.log).

    ``args`` go after ``worker`` (e.g. ``"--host", "alpha"``); ``env_overrides`` are extra WINDFLOW_* settings."""
    env = {
        **os.environ,
        "WINDFLOW_DATA_DIR": str(settings.data_dir),
        "WINDFLOW_DATABASE_URL": settings.database_url or "",
        "WINDFLOW_TEMPORAL_ADDRESS": settings.temporal_address,
        "WINDFLOW_TEMPORAL_NAMESPACE": settings.temporal_namespace,
        "WINDFLOW_TASK_QUEUE": settings.task_queue,
        "WINDFLOW_JWT_SECRET": "y" * 40,
        "WINDFLOW_WORKER_METRICS_PORT": "0",  # several workers on one machine: no fixed metrics port
        **env_overrides,
    }
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (the child keeps writing to it)
    return subprocess.Popen([sys.executable, "-c", "from windflow.cli.main import run; run()", "worker", *args],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def worker_identity(proc: subprocess.Popen[bytes]) -> str:
    """The Temporal identity of a worker process started by ``worker_process`` (the SDK's default)."""
    return f"{proc.pid}@{socket.gethostname()}"


def kill_process_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a process started with ``start_new_session`` and everything in its group, and reap it."""
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # the group may have gone on its own meanwhile
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
