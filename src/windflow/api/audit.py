"""The audit trail: who did what to which target, when, with what outcome and under which request id.

* Successful actions are recorded by the route itself with :func:`record`, inside the route's own unit of
  work, so the record commits (or rolls back) with the change it describes.
* Failed or refused mutating requests (any 4xx/5xx answer to POST/PUT/PATCH/DELETE on a route) are recorded
  by :class:`AuditFailuresMiddleware` in a transaction of their own, after the route's one was rolled back.
  The actor is the authenticated principal, else what the route noted with :func:`note` (e.g. the user name
  a failed login tried), else ``anonymous``. The action is the route's :func:`audit_as` name, else
  ``"<METHOD> <path template>"``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi.routing import iter_route_contexts
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from windflow.auth.permissions import Principal
from windflow.domain.events import AuditEvent, Event, EventType, make_event
from windflow.persistence.db import Database
from windflow.persistence.repositories import AuditRepository, OutboxRepository

log = logging.getLogger("windflow.api.audit")

_audit = AuditRepository()
_outbox = OutboxRepository()

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ANONYMOUS = "anonymous"
F = TypeVar("F", bound=Callable[..., Any])


def _entry(
    principal: Principal | str,
    action: str,
    target: str,
    request_id: str | None,
    outcome: str,
    details: dict[str, Any] | None,
) -> tuple[dict[str, Any], Event]:
    """The audit row's fields and its ``AUDIT`` event."""
    actor = principal if isinstance(principal, str) else principal.name
    fields: dict[str, Any] = {
        "actor": actor[:128],
        "action": action[:64],
        "target": target[:256],
        "outcome": outcome,
        "request_id": request_id or None,
    }
    event = make_event(EventType.AUDIT, AuditEvent(**fields), event_id=str(uuid.uuid4()), timestamp=datetime.now(UTC))
    return {**fields, "details": details}, event


async def record(
    session: AsyncSession,
    principal: Principal | str,
    action: str,
    target: str = "",
    request_id: str | None = None,
    *,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
) -> None:
    fields, event = _entry(principal, action, target, request_id, outcome, details)
    await _audit.add(session=session, **fields)
    await _outbox.add(session=session, event=event)


async def record_now(
    db: Database,
    principal: Principal | str,
    action: str,
    target: str = "",
    request_id: str | None = None,
    *,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
) -> None:
    """:func:`record` in a transaction of its own, the cheapest way (:meth:`Database.write_sync`): for routes
    whose change happened elsewhere (in Temporal) and that write nothing else."""
    fields, event = _entry(principal, action, target, request_id, outcome, details)

    def work(session: Session) -> None:
        _audit.add_sync(session=session, **fields)
        _outbox.add_sync(session=session, event=event)

    await db.write_sync(work)


def audit_as(action: str) -> Callable[[F], F]:
    """Name the action a route's failures are audited under (put it below ``@router.<method>``)."""

    def mark(fn: F) -> F:
        fn.audit_action = action  # type: ignore[attr-defined]
        return fn

    return mark


def note(conn: HTTPConnection, *, actor: str | None = None, target: str | None = None, **details: Any) -> None:
    """Context for the failure record of this request, should it fail (who tried, on what, why)."""
    state: dict[str, Any] = conn.scope.setdefault("state", {}).setdefault("audit", {})
    if actor is not None:
        state["actor"] = actor
    if target is not None:
        state["target"] = target
    state.setdefault("details", {}).update(details)


def client_address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


class AuditFailuresMiddleware:
    """Writes an ``outcome=failure`` audit record for every failed mutating request that reached a route."""

    def __init__(self, app: ASGIApp, *, max_body: int = 4096) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method", "GET") not in MUTATING_METHODS:
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        body = b""
        done = False

        async def _send(message: Message) -> None:
            nonlocal held, body, done
            if message["type"] == "http.response.start" and message.get("status", 200) >= 400 and not done:
                held = message  # hold the error's head until its body is seen: the record comes first
                return
            if held is not None and message["type"] == "http.response.body":
                body += message.get("body", b"")
                if message.get("more_body", False) and len(body) < self.max_body:
                    return
                start, held = held, None
                done = True
                await self._write(scope, int(start["status"]), body)
                await send(start)
                await send({**message, "body": body})
                return
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except Exception:
            if not done:
                done = True
                await self._write(scope, 500, b"")
            raise

    async def _write(self, scope: Scope, status: int, body: bytes) -> None:
        route = scope.get("route")
        if route is None or not hasattr(route, "endpoint"):
            return  # no route matched: nothing was attempted (plain 404)
        try:
            state = scope.get("state") or {}
            noted: dict[str, Any] = state.get("audit") or {}
            principal = state.get("principal")
            actor = principal.name if isinstance(principal, Principal) else noted.get("actor") or ANONYMOUS
            action = getattr(route.endpoint, "audit_action", None) or (
                f"{scope['method']} {_path_template(scope['app'], route.endpoint, scope['method'], route.path)}"
            )
            target = noted.get("target") or _target(scope)
            details: dict[str, Any] = {"status": status, **_error_of(body), **(noted.get("details") or {})}
            client = scope.get("client")
            details.setdefault("client", client[0] if client else "unknown")
            resources = scope["app"].state.resources
            async with resources.db.write() as session:
                await record(
                    session, actor, action, target, state.get("request_id"), outcome="failure", details=details
                )
            if resources.relay is not None:
                resources.relay.notify()
        except Exception:
            log.exception("could not write the audit record of a failed request")


def _path_template(app: Any, endpoint: Any, method: str, fallback: str) -> str:
    """The route's full path template (``/api/v1/services/{service_id}``): routers are nested, not flattened."""
    templates: dict[tuple[Any, str], str] | None = getattr(app.state, "audit_path_templates", None)
    if templates is None:
        templates = {}
        for rc in iter_route_contexts(app.routes):
            for m in rc.methods or ():
                templates.setdefault((rc.endpoint, m), str(rc.path_format or rc.path))
        app.state.audit_path_templates = templates
    return templates.get((endpoint, method), fallback)


def _target(scope: Scope) -> str:
    params = scope.get("path_params") or {}
    if params:
        return "/".join(str(v) for v in params.values())
    return str(scope.get("path", ""))


def _error_of(body: bytes) -> dict[str, Any]:
    try:
        err = json.loads(body)["error"]
        return {"code": str(err.get("code", "")), "message": str(err.get("message", ""))[:500]}
    except (ValueError, KeyError, TypeError):
        return {}
