"""Structured logs: JSON lines in production, readable lines in a terminal.

``WINDFLOW_LOG_FORMAT`` chooses: ``json``, ``console`` or ``auto`` (console when the stream is a TTY, else
JSON). windflow, uvicorn and the Temporal SDK all log through the standard library; one structlog
``ProcessorFormatter`` on the root logger renders every record the same way and adds:

- ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``;
- inside an activity: ``workflow_id``, ``workflow_run_id``, ``workflow_type``, ``activity_type``,
  ``activity_id``, ``attempt``; inside a workflow (``workflow.logger``): ``workflow_id``,
  ``workflow_run_id``, ``workflow_type``;
- ``request_id`` when the work was started by an API request (the ``X-Request-Id`` of that request, carried
  into workflows and activities by :class:`windflow.tracing.RequestIdInterceptor`);
- ``trace_id`` / ``span_id`` when a span is being recorded (see :mod:`windflow.tracing`).
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from typing import Any, TextIO

import structlog
import temporalio.activity
import temporalio.workflow
from opentelemetry import trace

#: the API request this code runs for (set by the API's RequestIdMiddleware and by the activity interceptor)
REQUEST_ID: ContextVar[str | None] = ContextVar("windflow_request_id", default=None)

_handler: logging.Handler | None = None


def _add_ids(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Temporal ids of the activity or workflow that logs, the API request id and the trace ids."""
    record = event.get("_record")
    if temporalio.activity.in_activity():
        info = temporalio.activity.info()
        event.setdefault("workflow_id", info.workflow_id)
        event.setdefault("workflow_run_id", info.workflow_run_id)
        event.setdefault("workflow_type", info.workflow_type)
        event.setdefault("activity_type", info.activity_type)
        event.setdefault("activity_id", info.activity_id)
        event.setdefault("attempt", info.attempt)
    else:
        wf = getattr(record, "temporal_workflow", None) if record is not None else None
        if isinstance(wf, dict):
            event.setdefault("workflow_id", wf.get("workflow_id"))
            event.setdefault("workflow_run_id", wf.get("run_id"))
            event.setdefault("workflow_type", wf.get("workflow_type"))
    core = getattr(record, "temporal_log", None) if record is not None else None
    if core is not None:  # a line of the Temporal SDK core (forwarded by windflow.metrics.temporal_runtime)
        event.setdefault("sdk_target", getattr(core, "target", None))
        for key, val in (getattr(core, "fields", None) or {}).items():
            event.setdefault(str(key), val if isinstance(val, str | int | float | bool) or val is None else str(val))
    request_id = REQUEST_ID.get()
    if request_id:
        event.setdefault("request_id", request_id)
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid and ctx.trace_flags.sampled:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event.setdefault("span_id", format(ctx.span_id, "016x"))
    return event


_SECRET_QUERY = re.compile(r"([?&;](?:access_)?token=)[^&;\s\"']*", re.IGNORECASE)


def redact_query_secrets(text: str) -> str:
    """``/api/v1/ws?token=eyJ...&types=X`` → ``/api/v1/ws?token=**redacted**&types=X``."""
    return _SECRET_QUERY.sub(r"\1**redacted**", text) if "token=" in text.lower() else text


def _redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Tokens passed in a URL (the WebSocket's ``?token=``) never reach a log line: uvicorn's access and WebSocket
    lines, and HTTP clients' request lines, carry the full URL with its query."""
    message = event.get("event")
    if isinstance(message, str):
        event["event"] = redact_query_secrets(message)
    return event


def use_json(fmt: str, stream: TextIO) -> bool:
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


def configure_logging(*, level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route every log record of the process through one structlog formatter on the root logger.

    Safe to call again (tests, ``windflow up``): the handler installed before is replaced.
    """
    global _handler
    out = stream if stream is not None else sys.stderr
    as_json = use_json(fmt, out)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_ids,
        _redact,
    ]
    renderer: Any
    if as_json:
        renderer = structlog.processors.JSONRenderer()
        final: list[Any] = [structlog.processors.format_exc_info, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=bool(getattr(out, "isatty", lambda: False)()))
        final = [renderer]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(level.upper())
    _handler = handler
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    # the ids go into fields of their own: no "({'workflow_id': ...})" suffix on Temporal's messages
    temporalio.workflow.logger.workflow_info_on_message = False
    temporalio.activity.logger.activity_info_on_message = False
