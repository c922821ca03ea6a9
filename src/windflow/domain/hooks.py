"""Incoming alerts, independent of their source: a minimal JSONPath and the mapping of payloads to alerts.

Pure: no I/O. The API's hook routes turn a received payload into :class:`IncomingAlert` items here, then act.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

HookKind = Literal["alertmanager", "generic"]
HookAuth = Literal["token", "signature", "token+signature"]
AlertStatus = Literal["firing", "resolved", "unknown"]
DEFAULT_LABEL = "windflow_service"
EXCERPT_CHARS = 2000

_STEP = re.compile(r"""\.(?P<name>[A-Za-z_][\w-]*)|\.\*|\[\*\]|\[(?P<index>-?\d+)\]"""
                   r"""|\[(?P<q>['"])(?P<key>.*?)(?P=q)\]""")
_WILDCARD = object()


class JsonPathError(ValueError):
    pass


def parse_path(path: str) -> list[str | int | object]:
    """``$.a.b``, ``$.a[0]``, ``$.a[*].b``, ``$['a-b']`` → steps (``str`` key, ``int`` index, wildcard)."""
    text = path.strip()
    if not text.startswith("$"):
        raise JsonPathError(f"a path starts with '$': {path!r}")
    steps: list[str | int | object] = []
    pos = 1
    while pos < len(text):
        m = _STEP.match(text, pos)
        if m is None:
            raise JsonPathError(f"cannot parse {path!r} at position {pos}: supported are .name, ['name'], [n], [*]")
        if m.group("name") is not None:
            steps.append(m.group("name"))
        elif m.group("index") is not None:
            steps.append(int(m.group("index")))
        elif m.group("key") is not None:
            steps.append(m.group("key"))
        else:
            steps.append(_WILDCARD)
        pos = m.end()
    return steps


def find(path: str, doc: Any) -> list[Any]:
    """Every value ``path`` selects in ``doc`` (empty when nothing matches)."""
    return list(_walk(parse_path(path), doc))


def _walk(steps: list[str | int | object], node: Any) -> Iterator[Any]:
    if not steps:
        yield node
        return
    step, rest = steps[0], steps[1:]
    if step is _WILDCARD:
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
        for child in children:
            yield from _walk(rest, child)
    elif isinstance(step, int):
        if isinstance(node, list) and -len(node) <= step < len(node):
            yield from _walk(rest, node[step])
    elif isinstance(node, dict) and step in node:
        yield from _walk(rest, node[step])


class AlertmanagerConfig(BaseModel):
    label: str = Field(DEFAULT_LABEL, min_length=1, max_length=128,
                       description="The alert label naming the windflow service")


class GenericConfig(BaseModel):
    service_path: str = Field(description="JSONPath to the service name(s), e.g. $.alert.labels.service or "
                                          "$.data[*].svc (one alert per value)")
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
        labels = alert.get("labels") if isinstance(alert.get("labels"), dict) else {}
        raw = _text(alert.get("status")) or _text(payload.get("status"))
        status: AlertStatus = raw if raw in ("firing", "resolved") else "unknown"  # type: ignore[assignment]
        excerpt = {k: alert.get(k) for k in ("status", "labels", "annotations", "startsAt", "endsAt", "fingerprint")
                   if k in alert}
        if "groupKey" in payload:
            excerpt["groupKey"] = payload["groupKey"]
        out.append(IncomingAlert(service=_text(labels.get(config.label)), status=status, raw_status=raw,
                                 fingerprint=_text(alert.get("fingerprint")), excerpt=excerpt))
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
        out.append(IncomingAlert(service=service, status=status, raw_status=raw, fingerprint=pick(prints, i),
                                 excerpt=excerpt))
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
