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
    command = [
        sys.executable,
        str(STANDIN),
        "--name",
        name,
        "--port",
        str(port),
        "--boot",
        str(boot),
        "--protocol",
        protocol,
        *args,
    ]
    health = (
        {
            "kind": "http",
            "url": f"http://127.0.0.1:{port}/health",
            "interval": interval,
            "timeout": "1s",
            "failure_threshold": failure_threshold,
        }
        if protocol == "http"
        else {
            "kind": "tcp",
            "port": port,
            "interval": interval,
            "timeout": "1s",
            "failure_threshold": failure_threshold,
        }
    )
    body: dict[str, Any] = {
        "id": name,
        "driver": "process",
        "config": {"command": command, "stop_grace": "2s"},
        "depends_on": deps if isinstance(deps, dict) else list(deps),
        "health": health,
    }
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


class Supervised:
    """One service under the watcher model, as a test sees it: the queue's watcher (``watch/{queue}``), the
    service's recovery when one runs (``recover/{service}``), and the read model in the store."""

    def __init__(self, client, db: Database, task_queue: str, service_id: str, watcher) -> None:
        self.client = client
        self.db = db
        self.task_queue = task_queue
        self.service_id = service_id
        self.watcher = watcher
        self.id = watcher.id

    @property
    def recovery(self):
        return self.client.get_workflow_handle(f"recover/{self.service_id}")

    async def recovering(self) -> bool:
        from temporalio.client import WorkflowExecutionStatus
        from temporalio.service import RPCError, RPCStatusCode

        try:
            return (await self.recovery.describe()).status == WorkflowExecutionStatus.RUNNING
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise

    async def row(self):
        from windflow.persistence.repositories import ServiceRepository

        async with self.db.read() as session:
            return await ServiceRepository().get(session=session, service_id=self.service_id)

    async def status(self):
        """The running recovery's status, else the last recorded one with the read model's state; the restart
        count is the store's."""
        from windflow.domain.contracts import SupervisionState, SupervisorStatus
        from windflow.workflows.supervision import ServiceRecovery

        row = await self.row()
        if await self.recovering():
            st = await self.recovery.query(ServiceRecovery.query_status)
        else:
            stored = (row.state_detail or {}).get("supervision") if row is not None else None
            st = (
                SupervisorStatus.model_validate(stored)
                if stored
                else SupervisorStatus(service_id=self.service_id, workflow_id=f"recover/{self.service_id}")
            )
            state = row.state if row is not None else "unknown"
            st.state = {
                "healthy": SupervisionState.WATCHING,
                "not_ready": SupervisionState.WATCHING,
                "recovering": SupervisionState.RECOVERING,
                "backing_off": SupervisionState.BACKING_OFF,
                "blocked": SupervisionState.BLOCKED,
                "gave_up": SupervisionState.GAVE_UP,
                "stopped": SupervisionState.PAUSED,
                "stopping": SupervisionState.PAUSED,
            }.get(state, SupervisionState.STARTING)
        st.restarts_total = row.restarts_total if row is not None else 0
        return st

    async def decide(self, decision: str, actor: str = "tester"):
        from windflow.domain.contracts import DecisionInput
        from windflow.workflows.supervision import ServiceRecovery

        return await self.recovery.execute_update(ServiceRecovery.decide, DecisionInput(decision=decision, actor=actor))

    async def terminate(self, reason: str = "test over") -> None:
        await terminate_quietly(self.client, self.watcher.id, f"recover/{self.service_id}")


async def supervise(client, task_queue: str, service_id: str, db: Database, heartbeat_timeout: float = 5.0):
    """Mark ``service_id`` desired running (as an initialization or a start would: started directly, its state
    stays ``unknown`` until the watcher observes it), make sure the watcher of ``task_queue`` runs
    (``watch/{task_queue}``); a view of the service under it."""
    from windflow.persistence.repositories import ServiceRepository
    from windflow.temporal.watchers import ensure_watcher

    async with db.write() as session:
        row = await ServiceRepository().get(session=session, service_id=service_id)
        if row is not None and row.desired != "running":
            row.desired, row.desired_by = "running", "test"
            row.applied_version = row.applied_version or row.current_version

    watcher = await ensure_watcher(client, task_queue=task_queue, heartbeat_timeout=heartbeat_timeout)
    return Supervised(client, db, task_queue, service_id, watcher)


async def watching(handle: Supervised, restarts: int | None = None):
    """The service's status once it is watched and healthy, with no recovery running (after ``restarts``
    restarts, when given); else None."""
    from windflow.domain.contracts import SupervisionState

    st = await handle.status()
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
        except Exception as exc:  # already closed
            if "not found" not in str(exc).lower() and "already completed" not in str(exc).lower():
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


def worker_process(
    settings: Any, tmp_path: Path, name: str, *args: str, **env_overrides: str
) -> subprocess.Popen[bytes]:
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
    return subprocess.Popen(
        [sys.executable, "-c", "from windflow.cli.main import run; run()", "worker", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def worker_identity(proc: subprocess.Popen[bytes]) -> str:
    """The Temporal identity of a worker process started by ``worker_process`` (the SDK's default)."""
    return f"{proc.pid}@{socket.gethostname()}"


def kill_process_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a process started with ``start_new_session`` and everything in its group, and reap it."""
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # the group may have gone on its own meanwhile
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
