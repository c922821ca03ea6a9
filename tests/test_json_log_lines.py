"""Under WINDFLOW_LOG_FORMAT=json every line is JSON: uvicorn's inside `windflow up` too (the SDK core's lines are
checked with real workers in test_metrics_endpoints)."""

from __future__ import annotations

import io
import logging

import pytest

from tests.test_logs import configured_logging, lines
from windflow.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_uvicorn_lines_of_windflow_up_are_json(tmp_path):
    from windflow.cli.up import api_server_config

    buffer = io.StringIO()
    error_logger = logging.getLogger("uvicorn.error")
    parent = logging.getLogger("uvicorn")
    saved = (
        list(error_logger.handlers),
        error_logger.propagate,
        error_logger.level,
        list(parent.handlers),
        parent.propagate,
        error_logger.disabled,
    )
    try:
        # as in a fresh `windflow up` process (an in-process uvicorn of an earlier test may have configured it)
        error_logger.handlers[:] = []
        error_logger.propagate = True
        error_logger.disabled = False
        logging.getLogger("uvicorn").handlers[:] = []
        logging.getLogger("uvicorn").propagate = True
        with configured_logging("json", buffer):
            settings = Settings(data_dir=tmp_path, jwt_secret="x" * 48, _env_file=None)
            api_server_config(object(), settings)  # what `windflow up` hands uvicorn (configures its loggers)
            error_logger.warning("port in use, probably")
        found = [line for line in lines(buffer) if line.get("logger") == "uvicorn.error"]
        assert found, (buffer.getvalue()[-2000:], error_logger.handlers, error_logger.level, logging.getLogger().level)
        assert found and found[0]["event"] == "port in use, probably" and found[0]["level"] == "warning"
    finally:
        error_logger.handlers[:] = saved[0]
        error_logger.propagate = saved[1]
        error_logger.setLevel(saved[2])
        parent.handlers[:] = saved[3]
        parent.propagate = saved[4]
        error_logger.disabled = saved[5]
