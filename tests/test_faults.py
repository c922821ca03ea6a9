"""Faults injected into real processes this module owns: Temporal, PostgreSQL and Redis go away mid-run, a
worker is SIGKILL-ed mid-recovery, the log disk is full. Each run must end as if nothing had happened."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import func, select
from temporalio.client import Client, WorkflowExecutionStatus

from tests.conftest import TEMPORAL_BIN, mint_token, unavailable
from tests.helpers import (
    eventually,
    healthy,
    kill_process_group,
    processes_with,
    register,
    running_worker,
    standin,
    supervise,
    terminate_quietly,
    worker_process,
)
from tests.servers import RestartablePostgres, free_port, port_open, start_redis
from windflow.domain.contracts import (
    ComponentStatus,
    InitInput,
    InitOptions,
    InitState,
    InitStatus,
    SupervisionState,
    SupervisorStatus,
)
from windflow.domain.events import Event
from windflow.drivers import build_driver_registry
from windflow.drivers.process import ProcessDriver
from windflow.events.redis_streams import RedisStreamsBus
from windflow.persistence.db import Database
from windflow.persistence.migrate import upgrade
from windflow.persistence.models import OutboxRow, RunSummaryRow, ServiceRow
from windflow.settings import Settings
from windflow.temporal.client import DATA_CONVERTER
from windflow.temporal.search_attributes import cli_flags
from windflow.workflows.initialization import SystemInitialization

pytestmark = pytest.mark.asyncio(loop_scope="session")


def settings_for(tmp_path: Path, *, database_url: str, temporal: str, task_queue: str, **extra) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        jwt_secret="x" * 48,
        temporal_address=temporal,
        temporal_namespace="default",
        task_queue=task_queue,
        _env_file=None,
        **extra,
    )


async def start_init(client: Client, task_queue: str, **options) -> tuple[str, object]:
    run_id = uuid.uuid4().hex[:12]
    handle = await client.start_workflow(
        SystemInitialization.run,
        InitInput(run_id=run_id, options=InitOptions(**options), actor="tester"),
        id=f"init/{run_id}",
        task_queue=task_queue,
    )
    return run_id, handle


async def component_is(handle, name: str, status: ComponentStatus) -> InitState | None:
    state = await handle.query(SystemInitialization.status)
    comp = state.components.get(name)
    return state if comp is not None and comp.status == status else None


async def completed(handle) -> bool:
    return (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED


# --------------------------------------------------------------------------- Temporal server killed


class DevServer:
    """A Temporal dev server on a SQLite file, restartable on the same file and ports."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.cmd = [
            TEMPORAL_BIN,
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
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
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.starts += 1
        log = open(self.workdir / f"temporal-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        await eventually(lambda: port_open("127.0.0.1", self.port), timeout=60, interval=0.1)

    def kill(self) -> None:
        kill_process_group(self.proc)


async def test_temporal_server_killed_and_restarted_mid_initialization(sqlite_db, ports, tmp_path):
    """SIGKILL the dev server while a component boots, start it again on the same SQLite file and ports: the
    worker reconnects by itself and the run completes, with every service started once."""
    server = DevServer(tmp_path)
    await server.start()
    try:
        client = await eventually(
            lambda: Client.connect(server.address, namespace="default", data_converter=DATA_CONVERTER), timeout=30
        )
        task_queue = f"tq-{uuid.uuid4().hex[:10]}"
        settings = settings_for(
            tmp_path, database_url=str(sqlite_db.engine.url), temporal=server.address, task_queue=task_queue
        )
        p1, p2, p3 = ports(), ports(), ports()
        await register(
            sqlite_db, standin("a", p1), standin("b", p2, deps=["a"], boot=3.0), standin("c", p3, deps=["b"])
        )
        async with running_worker(client, settings, sqlite_db):
            _, handle = await start_init(client, task_queue, component_timeout=120)
            state = await eventually(lambda: component_is(handle, "b", ComponentStatus.WAITING_HEALTHY), timeout=40)
            pid_a = state.components["a"].pid
            server.kill()
            assert not port_open("127.0.0.1", server.port)
            await asyncio.sleep(1.0)  # an outage, not a blip
            await server.start()
            await eventually(lambda: completed(handle), timeout=120, interval=0.25)
            result: InitState = await handle.result()
        assert server.starts == 2
        assert result.status == InitStatus.SUCCEEDED
        assert all(c.status == ComponentStatus.HEALTHY for c in result.components.values())
        for port in (p1, p2, p3):
            assert len(processes_with(f"--port {port} ")) == 1, port
        assert processes_with(f"--port {p1} ") == [pid_a]
    finally:
        server.kill()


# --------------------------------------------------------------------------- PostgreSQL unreachable


async def pending_attempts(handle) -> int:
    desc = await handle.describe()
    return max((a.attempt for a in desc.raw_description.pending_activities), default=0)


async def test_postgres_down_api_answers_503_and_runs_finish_when_it_is_back(temporal_env, ports, tmp_path):
    pg = RestartablePostgres()
    url = pg.url.replace("postgresql://", "postgresql+psycopg://", 1)
    worker_db = Database.from_url(url)
    try:
        await upgrade(worker_db.engine)
        client = temporal_env.client
        task_queue = f"tq-{uuid.uuid4().hex[:10]}"
        settings = settings_for(
            tmp_path,
            database_url=url,
            temporal=client.service_client.config.target_host,
            task_queue=task_queue,
            events_metrics_interval=0,
            webhooks_dispatch=False,
        )
        p1, p2 = ports(), ports()
        await register(worker_db, standin("a", p1), standin("b", p2, deps=["a"], boot=3.0))

        from windflow.api.app import create_app

        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=app),
                base_url="http://windflow.test",
                headers={"Authorization": f"Bearer {mint_token(settings)}"},
            ) as api,
            running_worker(client, settings, worker_db),
        ):
            assert (await api.get("/api/v1/services")).status_code == 200
            run_id, handle = await start_init(client, task_queue, component_timeout=120)
            await eventually(lambda: component_is(handle, "b", ComponentStatus.WAITING_HEALTHY), timeout=40)

            pg.stop()
            for method, path, body in (
                ("GET", "/api/v1/services", None),
                ("GET", "/api/v1/services/a", None),
                ("POST", "/api/v1/services", {"id": "late", "driver": "noop", "config": {}}),
            ):
                resp = await api.request(method, path, json=body)
                assert resp.status_code == 503, (path, resp.status_code, resp.text)
                error = resp.json()["error"]
                assert set(error) == {"code", "message", "timestamp", "details"}
                assert error["code"] == "store_unavailable" and resp.headers.get("Retry-After")
            assert (await api.get("/readyz")).status_code == 503
            # b turns healthy meanwhile: its store writes fail and the activity is retried, not the run failed
            await eventually(lambda: pending_attempts(handle), timeout=60)
            await eventually(lambda: _attempts_at_least(handle, 2), timeout=60)
            assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING

            pg.start()
            await eventually(lambda: completed(handle), timeout=120, interval=0.25)
            result: InitState = await handle.result()
            assert result.status == InitStatus.SUCCEEDED
            listed = await eventually(lambda: _listed(api), timeout=30)
            assert {s["id"]: s["state"] for s in listed} == {"a": "healthy", "b": "healthy"}
        # nothing the run wrote while the store was away is lost
        async with worker_db.read() as s:
            summary = (await s.execute(select(RunSummaryRow).where(RunSummaryRow.run_id == run_id))).scalar_one()
            updates = list(
                (
                    await s.execute(
                        select(OutboxRow).where(OutboxRow.event_type == "INITIALIZATION_UPDATE").order_by(OutboxRow.id)
                    )
                ).scalars()
            )
            states = dict((await s.execute(select(ServiceRow.id, ServiceRow.state))).all())
        assert summary.status == "SUCCEEDED" and summary.finished_at is not None
        assert updates[-1].payload["data"]["status"] == "SUCCEEDED"
        assert {u.payload["data"]["component"] for u in updates} >= {"a", "b"}
        assert states == {"a": "healthy", "b": "healthy"}
    finally:
        await worker_db.dispose()
        pg.remove()


async def _attempts_at_least(handle, n: int) -> bool:
    return await pending_attempts(handle) >= n


async def _listed(api) -> list[dict] | None:
    resp = await api.get("/api/v1/services")
    if resp.status_code != 200:
        return None
    items = resp.json()["items"]
    return items if all(s["state"] == "healthy" for s in items) else None


# --------------------------------------------------------------------------- Redis down end to end


async def test_redis_down_events_wait_in_the_outbox_and_reach_subscribers(temporal_env, sqlite_db, ports, tmp_path):
    """An initialization runs while the Redis behind the event stream is stopped: its events wait in the outbox
    and reach a durable subscriber (consumer group) once Redis is back, each exactly once."""
    from windflow.api.app import create_app

    redis_port = free_port()
    redis = start_redis(redis_port)
    client = temporal_env.client
    task_queue = f"tq-{uuid.uuid4().hex[:10]}"
    stream = f"wf:fault:{uuid.uuid4().hex[:10]}"
    settings = settings_for(
        tmp_path,
        database_url=str(sqlite_db.engine.url),
        temporal=client.service_client.config.target_host,
        task_queue=task_queue,
        redis_url=redis.url,
        events_stream=stream,
        events_metrics_interval=0,
        events_relay_interval=0.05,
        webhooks_dispatch=False,
    )
    sink = RedisStreamsBus(redis.url, stream=stream, block_ms=200)
    got: list[Event] = []

    async def collect(event: Event) -> None:
        got.append(event)

    stop = asyncio.Event()
    consumer = asyncio.create_task(sink.consumer("fault-sink", "s1", block_ms=200).run(collect, stop=stop))
    p1, p2 = ports(), ports()
    await register(sqlite_db, standin("a", p1), standin("b", p2, deps=["a"], boot=2.0))
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app), running_worker(client, settings, sqlite_db):
            relay = app.state.resources.relay
            _, handle = await start_init(client, task_queue, component_timeout=120)
            await eventually(lambda: any(e.event_type.value == "INITIALIZATION_UPDATE" for e in got), timeout=30)
            redis.stop()  # the stream goes away while the run goes on
            await eventually(lambda: completed(handle), timeout=90, interval=0.2)
            assert (await handle.result()).status == InitStatus.SUCCEEDED
            await eventually(lambda: relay.failures > 0, timeout=20)
            waiting = await _unpublished(sqlite_db)
            assert waiting > 0  # the run's last events are in the outbox, not lost

            redis = start_redis(redis_port)  # back on the same port (this server keeps no data)
            await eventually(lambda: _unpublished_is(sqlite_db, 0), timeout=30)
            async with sqlite_db.read() as s:
                written = list((await s.execute(select(OutboxRow.event_id).order_by(OutboxRow.id))).scalars())
            await eventually(lambda: {e.event_id for e in got} >= set(written), timeout=30)
            await asyncio.sleep(0.5)  # a duplicate would arrive now
        ids = [e.event_id for e in got]
        assert len(ids) == len(set(ids))
        assert set(ids) == set(written)
        # the subscriber saw the run end although it ended while Redis was down
        final = [e for e in got if e.event_type.value == "INITIALIZATION_UPDATE"][-1]
        assert final.data["status"] == "SUCCEEDED"
    finally:
        stop.set()
        await asyncio.gather(consumer, return_exceptions=True)
        with contextlib.suppress(Exception):
            await sink.redis.delete(*sink.keys)
        await sink.close()
        redis.stop()


async def _unpublished(db: Database) -> int:
    async with db.read() as s:
        return int(
            (
                await s.execute(select(func.count()).select_from(OutboxRow).where(OutboxRow.published_at.is_(None)))
            ).scalar_one()
        )


async def _unpublished_is(db: Database, n: int) -> bool:
    return await _unpublished(db) == n


# --------------------------------------------------------------------------- worker killed with the service


def boots(settings: Settings, service_id: str) -> int:
    """Real spawns of the stand-in: it writes one "booting" line to its log each time it starts."""
    log = Path(settings.data_dir) / "logs" / f"{service_id}.out.log"
    return log.read_text().count("booting") if log.exists() else 0


async def supervisor_watching(handle, restarts: int) -> SupervisorStatus | None:
    st: SupervisorStatus = await handle.status()
    return st if st.state == SupervisionState.WATCHING and st.restarts_total == restarts else None


async def test_worker_killed_with_its_service_restarts_it_exactly_once(
    temporal_env, wsettings, sqlite_db, ports, tmp_path
):
    """The service and the only worker die together, so the exit is seen, the recovery decided and the restart
    begun (or not) by a worker that is gone at any of those points; the next worker finishes the recovery with
    one spawn, never two."""
    client = temporal_env.client
    port = ports()
    spec = standin("twice", port, boot=1.0)
    await register(sqlite_db, spec)
    driver = build_driver_registry(data_dir=wsettings.ensure_data_dir()).for_service(spec)
    pid = (await driver.start(spec)).pid
    await eventually(lambda: healthy(port), timeout=15)
    first = worker_process(wsettings, tmp_path, "w1")
    second = None
    try:
        await terminate_quietly(client, "recover/twice")
        handle = await supervise(client, wsettings.task_queue, "twice", sqlite_db, heartbeat_timeout=3)
        await eventually(lambda: supervisor_watching(handle, 0), timeout=40)
        booted = boots(wsettings, "twice")
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.05)  # the worker sees the exit at once (pidfd) and acts on it
        kill_process_group(first)
        second = worker_process(wsettings, tmp_path, "w2")
        st = await eventually(lambda: supervisor_watching(handle, 1), timeout=90)
        assert st.restarts_total == 1
        assert boots(wsettings, "twice") == booted + 1  # one restart, not two
        live = processes_with(f"--port {port} ")
        assert len(live) == 1 and live[0] != pid
        assert await healthy(port)
        await handle.terminate()
    finally:
        kill_process_group(first)
        kill_process_group(second)


# --------------------------------------------------------------------------- log disk full


@contextlib.contextmanager
def full_tmpfs(path: Path):
    """A 64 KiB tmpfs at ``path``, filled to the last block (needs root)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        unavailable("root and mount(8), to mount a tmpfs")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        unavailable(f"a tmpfs mount ({mounted.stderr.decode().strip()})")
    try:
        with open(path / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 4096)
        assert os.statvfs(path).f_bavail == 0
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


async def test_full_log_disk_service_still_runs_and_it_is_reported(
    temporal_env, wsettings, sqlite_db, ports, task_queue
):
    """The process driver's log directory is on a full file system: the service is started with its output on
    /dev/null instead of dying at its first write, and the run's start result and the driver's status say why."""
    client = temporal_env.client
    port = ports()
    spec = standin("chatty", port, boot=0.2)
    await register(sqlite_db, spec)
    with full_tmpfs(Path(wsettings.ensure_data_dir()) / "logs"):
        async with running_worker(client, wsettings, sqlite_db):
            _, handle = await start_init(client, task_queue, component_timeout=60)
            result: InitState = await handle.result()
        assert result.status == InitStatus.SUCCEEDED
        assert await healthy(port)
        pid = result.components["chatty"].pid
        await asyncio.sleep(0.5)  # it keeps running: no write of its own fails
        assert processes_with(f"--port {port} ") == [pid]
        # reported: in the start activity's result (the run's history, the Temporal UI) ...
        history = await handle.fetch_history()
        assert any(
            b"log disk full" in p.data
            for e in history.events
            if e.HasField("activity_task_completed_event_attributes")
            for p in e.activity_task_completed_event_attributes.result.payloads
        )
        # ... and by every status of the driver, also a new driver instance (a restarted worker)
        status = await ProcessDriver(data_dir=Path(wsettings.data_dir)).status(spec)
        assert status.status.value == "running" and "log disk full" in status.message
        await ProcessDriver(data_dir=Path(wsettings.data_dir)).stop(spec)
