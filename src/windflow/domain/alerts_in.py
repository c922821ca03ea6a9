"""Incoming alerts, independent of their source: JSONPath queries (RFC 9535, python-jsonpath) and the mapping of
payloads to alerts.

Pure: no I/O. The API's hook routes turn a received payload into :class:`IncomingAlert` items here, then act.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any, Literal

from jsonpath import CompoundJSONPath, JSONPath, JSONPathEnvironment, JSONPathError
from pydantic import BaseModel, Field, field_validator

HookKind = Literal["alertmanager", "generic"]
HookAuth = Literal["token", "signature", "token+signature"]
AlertStatus = Literal["firing", "resolved", "unknown"]
DEFAULT_LABEL = "windflow_service"
EXCERPT_CHARS = 2000

_JSONPATH = JSONPathEnvironment(strict=True)  # RFC 9535, by python-jsonpath
MAX_PATH = 512


class JsonPathError(ValueError):
    pass


@functools.lru_cache(maxsize=256)
def compile_path(path: str) -> JSONPath | CompoundJSONPath:
    """An RFC 9535 JSONPath query (``$.a.b``, ``$.a[0]``, ``$.a[*].b``, ``$['a-b']``, ``$..b``,
    ``$.a[?@.state == 'firing'].b``, ...), compiled once."""
    if len(path) > MAX_PATH:
        raise JsonPathError(f"a JSONPath has at most {MAX_PATH} characters")
    try:
        return _JSONPATH.compile(path.strip())
    except JSONPathError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise JsonPathError(f"not a JSONPath (RFC 9535) query: {path!r}: {first}") from None


def parse_path(path: str) -> JSONPath | CompoundJSONPath:
    """Check ``path`` (raises :class:`JsonPathError`), returning the compiled query."""
    return compile_path(path)


def find(path: str, doc: Any) -> list[Any]:
    """Every value ``path`` selects in ``doc`` (empty when nothing matches)."""
    try:
        return list(compile_path(path).findall(doc))
    except (JSONPathError, RecursionError):  # a filter's type error, or a payload nested past any reason
        return []


class AlertmanagerConfig(BaseModel):
    label: str = Field(
        DEFAULT_LABEL, min_length=1, max_length=128, description="The alert label naming the windflow service"
    )


class GenericConfig(BaseModel):
    service_path: str = Field(
        description="JSONPath to the service name(s), e.g. $.alert.labels.service or "
        "$.data[*].svc (one alert per value)"
    )
    status_path: str | None = Field(None, description="JSONPath to the status; absent: every alert is firing")
    firing_values: list[str] = Field(default_factory=lambda: ["firing"])
    resolved_values: list[str] = Field(default_factory=lambda: ["resolved"])
    fingerprint_path: str | None = None

    @field_validator("service_path", "status_path", "fingerprint_path")
    @classmethod
    def _parses(cls, v: str | None) -> str | None:
        if v is not None:
            parse_path(v)
        return v


class IncomingAlert(BaseModel):
    service: str | None
    status: AlertStatus
    raw_status: str | None = None
    fingerprint: str | None = None
    excerpt: dict[str, Any] = Field(default_factory=dict)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def alertmanager_alerts(payload: dict[str, Any], config: AlertmanagerConfig) -> list[IncomingAlert]:
    """Alertmanager webhook (version 4): one item per entry of ``alerts``."""
    out = []
    for alert in payload.get("alerts") or []:
        if not isinstance(alert, dict):
            continue
        labels = alert.get("labels")
        if not isinstance(labels, dict):
            labels = {}
        raw = _text(alert.get("status")) or _text(payload.get("status"))
        status: AlertStatus = "firing" if raw == "firing" else "resolved" if raw == "resolved" else "unknown"
        excerpt = {
            k: alert.get(k)
            for k in ("status", "labels", "annotations", "startsAt", "endsAt", "fingerprint")
            if k in alert
        }
        if "groupKey" in payload:
            excerpt["groupKey"] = payload["groupKey"]
        out.append(
            IncomingAlert(
                service=_text(labels.get(config.label)),
                status=status,
                raw_status=raw,
                fingerprint=_text(alert.get("fingerprint")),
                excerpt=excerpt,
            )
        )
    return out


def generic_alerts(payload: Any, config: GenericConfig) -> list[IncomingAlert]:
    """One item per value ``service_path`` selects; status and fingerprint pair up by position (or one for all)."""
    services = [_text(v) for v in find(config.service_path, payload)] or [None]
    statuses = [_text(v) for v in find(config.status_path, payload)] if config.status_path else []
    prints = [_text(v) for v in find(config.fingerprint_path, payload)] if config.fingerprint_path else []

    def pick(values: list[str | None], i: int) -> str | None:
        if not values:
            return None
        return values[i] if len(values) == len(services) else values[0]

    excerpt = payload if isinstance(payload, dict) else {"payload": payload}
    out = []
    for i, service in enumerate(services):
        raw = pick(statuses, i)
        if config.status_path is None:
            status: AlertStatus = "firing"
        elif raw in config.firing_values:
            status = "firing"
        elif raw in config.resolved_values:
            status = "resolved"
        else:
            status = "unknown"
        out.append(
            IncomingAlert(service=service, status=status, raw_status=raw, fingerprint=pick(prints, i), excerpt=excerpt)
        )
    return out


def truncate_excerpt(doc: dict[str, Any], limit: int = EXCERPT_CHARS) -> dict[str, Any]:
    """The document itself when its JSON is short, else a marker with its beginning (kept for the alert log)."""
    text = json.dumps(doc, default=str, sort_keys=True)
    if len(text) <= limit:
        return doc
    return {"truncated": True, "json": text[:limit]}


def dedupe_key(alert: IncomingAlert, *, delivery_id: str | None = None, index: int = 0) -> str:
    """What makes a repeat of ``alert`` the same alert: its fingerprint and when it started firing
    (Alertmanager's ``startsAt``: a new firing episode is a new alert), else the delivery id the sender gave
    (``webhook-id``) and the alert's position in it, else the alert's own content."""
    if alert.fingerprint:
        basis: list[Any] = ["fingerprint", alert.service, alert.fingerprint, alert.excerpt.get("startsAt")]
    elif delivery_id:
        basis = ["delivery", delivery_id, index]
    else:
        basis = ["content", alert.service, alert.status, alert.excerpt]
    text = json.dumps(basis, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
