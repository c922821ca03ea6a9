"""Session fixtures: real PostgreSQL, Redis and Temporal; per-test data dirs and task queues."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from tests.servers import Throwaway, port_open, start_postgres, start_redis

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
_SKIPPED: list[str] = []


def _server(env_name: str, default: str, starter, what: str) -> Iterator[str]:
    url = os.environ.get(env_name, default)
    parsed = urlparse(url)
    if port_open(parsed.hostname or "127.0.0.1", parsed.port or 0):
        yield url
        return
    try:
        server: Throwaway = starter()
    except Exception as exc:  # no server binaries on this machine
        if IN_CI:
            raise RuntimeError(f"{what} is required in CI and could not be started: {exc}") from exc
        _SKIPPED.append(f"{what}: {exc}")
        pytest.skip(f"{what} unavailable: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """libpq URL of a real PostgreSQL database the tests may use freely."""
    yield from _server("WINDFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test", start_postgres,
                       "PostgreSQL")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis server (db 0 is shared; tests use unique key prefixes)."""
    yield from _server("WINDFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0", start_redis, "Redis")


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    if _SKIPPED:
        terminalreporter.write_line("servers that could not be started (their tests were skipped):", yellow=True)
        for line in _SKIPPED:
            terminalreporter.write_line(f"  - {line}", yellow=True)


def pytest_unconfigure(config):
    # Temporal's core runtime can abort at interpreter exit (sdk-python #300): leave with pytest's own status.
    status = getattr(config, "_windflow_exitstatus", None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(status))


def pytest_sessionfinish(session, exitstatus):
    session.config._windflow_exitstatus = int(exitstatus)
