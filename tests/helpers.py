"""Helpers shared by workflow tests: stand-in services, process counting, workers."""

from __future__ import annotations

import asyncio
import os
import signal
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
                            "depends_on": list(deps), "health": health}
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


def worker_process(settings: Any, tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    """A real `windflow worker` OS process for ``settings`` (its own process group, output in NAME.log)."""
    env = {
        **os.environ,
        "WINDFLOW_DATA_DIR": str(settings.data_dir),
        "WINDFLOW_DATABASE_URL": settings.database_url or "",
        "WINDFLOW_TEMPORAL_ADDRESS": settings.temporal_address,
        "WINDFLOW_TEMPORAL_NAMESPACE": settings.temporal_namespace,
        "WINDFLOW_TASK_QUEUE": settings.task_queue,
        "WINDFLOW_JWT_SECRET": "y" * 40,
        "WINDFLOW_WORKER_METRICS_PORT": "0",  # several workers on one machine: no fixed metrics port
    }
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (the child keeps writing to it)
    return subprocess.Popen([sys.executable, "-c", "from windflow.cli.main import run; run()", "worker"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill_process_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a process started with ``start_new_session`` and everything in its group, and reap it."""
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
