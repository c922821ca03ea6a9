"""Structured logs: the format switch, and Temporal + request ids on every line an activity writes."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.helpers import initialize_through_api
from windflow import logs
from windflow.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@contextmanager
def configured_logging(fmt: str, stream: io.StringIO) -> Iterator[None]:
    """Configure windflow's logging into ``stream``, and put the root logger back afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    logs.configure_logging(level="INFO", fmt=fmt, stream=stream)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """windflow's logs as JSON lines in a buffer."""
    buffer = io.StringIO()
    with configured_logging("json", buffer):
        yield buffer


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]


@pytest.fixture
def db(sqlite_db):
    return sqlite_db


@pytest.fixture
def settings(wsettings: Settings) -> Settings:
    return wsettings


async def test_auto_format_is_console_on_a_tty_and_json_otherwise():
    assert logs.use_json("auto", io.StringIO()) is True
    assert logs.use_json("auto", _Tty()) is False
    assert logs.use_json("json", _Tty()) is True
    assert logs.use_json("console", io.StringIO()) is False
    tty = _Tty()
    with configured_logging("auto", tty):
        logging.getLogger("windflow.test").warning("hello %s", "there")
    text = tty.getvalue()
    assert "hello there" in text and not text.lstrip().startswith("{")


async def test_activity_lines_carry_workflow_run_activity_and_request_ids(
    captured, temporal_env, settings, db, api, ports
):
    handle = await initialize_through_api(api, settings, db, ports(), "req-logs-42")
    run_id = (await handle.describe()).run_id

    records = lines(captured)
    started = [
        rec
        for rec in records
        if rec.get("logger") == "windflow.activities.services" and rec.get("event", "").startswith("start web")
    ]
    assert started, records[-20:]
    line = started[0]
    assert line["workflow_id"] == handle.id
    assert line["workflow_run_id"] == run_id
    assert line["activity_type"] in ("bring_up", "start_service")
    assert line["request_id"] == "req-logs-42"
    assert line["level"] == "info" and line["timestamp"].endswith("Z")
    # every line written inside an activity of this run carries the same ids
    from_activities = [rec for rec in records if rec.get("workflow_id") == handle.id and "activity_type" in rec]
    assert from_activities and all(
        rec["request_id"] == "req-logs-42" and rec["workflow_run_id"] == run_id for rec in from_activities
    )
