"""Structured logs: the format switch, and Temporal + request ids on every line an activity writes."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from tests.helpers import register, running_worker, standin
from windflow import logs
from windflow.settings import Settings
from windflow.temporal_client import connect

pytestmark = pytest.mark.asyncio(loop_scope="session")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def captured():
    """Configure windflow's logging into a buffer (JSON), and put the root logger back afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buffer = io.StringIO()
    logs.configure_logging(level="INFO", fmt="json", stream=buffer)
    yield buffer
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


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
    root = logging.getLogger()
    handlers = list(root.handlers)
    tty = _Tty()
    try:
        logs.configure_logging(level="INFO", fmt="auto", stream=tty)
        logging.getLogger("windflow.test").warning("hello %s", "there")
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
    text = tty.getvalue()
    assert "hello there" in text and not text.lstrip().startswith("{")


async def test_activity_lines_carry_workflow_run_activity_and_request_ids(captured, temporal_env, settings, db, api,
                                                                          ports):
    port = ports()
    await register(db, standin("web", port, boot=0.1, monitored=False))
    client = await connect(settings)  # with the request-id interceptor, inherited by the worker
    async with running_worker(client, settings, db):
        r = await api.post("/api/v1/initializations", json={}, headers={"X-Request-Id": "req-logs-42"})
        assert r.status_code == 202, r.text
        assert r.headers["x-request-id"] == "req-logs-42"
        handle = client.get_workflow_handle(r.json()["workflow_id"])
        await asyncio.wait_for(handle.result(), timeout=60)
        run_id = (await handle.describe()).run_id

    records = lines(captured)
    started = [rec for rec in records if rec.get("logger") == "windflow.activities.services"
               and rec.get("event", "").startswith("start web")]
    assert started, records[-20:]
    line = started[0]
    assert line["workflow_id"] == handle.id
    assert line["workflow_run_id"] == run_id
    assert line["activity_type"] in ("bring_up", "start_service")
    assert line["request_id"] == "req-logs-42"
    assert line["level"] == "info" and line["timestamp"].endswith("Z")
    # every line written inside an activity of this run carries the same ids
    from_activities = [rec for rec in records if rec.get("workflow_id") == handle.id and "activity_type" in rec]
    assert from_activities and all(rec["request_id"] == "req-logs-42" and rec["workflow_run_id"] == run_id
                                   for rec in from_activities)
