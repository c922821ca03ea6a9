"""Notification channels (where escalations go: webhook, Slack-compatible, log), one at a time.

The same stored set as the system file's ``notifications`` key (an apply of a file with that key replaces it).
Channels from settings (``WINDFLOW_NOTIFICATION_CHANNELS``) are listed as such and cannot be changed here.

* ``GET /notification-channels`` (``configs:read``): every channel, secrets redacted (a Slack URL's path, a
  URL's password and query, secret-looking headers), as the system export shows them.
* ``POST``, ``PUT /{name}``, ``DELETE /{name}`` (``configs:write``): create, replace, delete a stored channel.
  A PUT may send back the redacted values it read: the stored secrets are kept as long as the channel still
  sends to the same scheme, host and port (otherwise 422 names what to re-enter). URLs pass the outbound
  policy for notifications (422 ``outbound_refused``).
* ``POST /{name}/test`` (``configs:write``): send a test notification now; the result is logged like any
  delivery and returned.
* ``GET /{name}/deliveries`` (``configs:read``): the channel's delivery log, newest first.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, status
from pydantic import BaseModel, Field, ValidationError

from windflow.api.audit import audit_as, note, record
from windflow.api.bodies import RequestBody
from windflow.api.deps import ReadSessionDep, RequestIdDep, ResourcesDep
from windflow.api.errors import ERROR_RESPONSES
from windflow.api.schemas import PageOf
from windflow.api.security import require
from windflow.auth.permissions import Permission, Principal
from windflow.domain.durations import Duration
from windflow.domain.errors import ConfigInvalid, Conflict, NotFound
from windflow.domain.models import SERVICE_ID_PATTERN
from windflow.domain.notifications import (
    ChannelConfig,
    ChannelKind,
    DeliveryResult,
    Notification,
    NotificationKind,
    redact_channel,
    restore_channel,
)
from windflow.domain.redaction import REDACTED, contains_placeholder
from windflow.escalation import build_channel
from windflow.persistence.notifications import NotificationChannelRepository, NotificationLogRepository

router = APIRouter(prefix="/notification-channels", tags=["notifications"], responses=ERROR_RESPONSES)
channels = NotificationChannelRepository()
deliveries = NotificationLogRepository()

CanRead = Annotated[Principal, Depends(require(Permission.CONFIGS_READ))]
CanWrite = Annotated[Principal, Depends(require(Permission.CONFIGS_WRITE))]
ChannelPath = Annotated[str, Path(pattern=SERVICE_ID_PATTERN, max_length=64)]


class ChannelBody(RequestBody):
    """A channel without its name (the path names it)."""

    kind: ChannelKind
    url: str | None = Field(None, max_length=2048, description="webhook and slack: the target (http/https)")
    headers: dict[str, str] = Field(default_factory=dict, max_length=32)
    timeout: Duration = Field(5.0, gt=0, le=300)
    events: list[NotificationKind] = Field(default_factory=lambda: list(NotificationKind), max_length=16)


class ChannelCreate(ChannelBody):
    name: str = Field(pattern=SERVICE_ID_PATTERN, min_length=1, max_length=64)


class ChannelPublic(BaseModel):
    name: str
    kind: str
    url: str | None = Field(description="Redacted: a Slack URL's path, a URL's password and query")
    headers: dict[str, str] = Field(description="Secret-looking values redacted")
    timeout: Duration = Field(description="Per-request timeout")
    events: list[str]
    source: str = Field(description="stored (API or system file) or settings (read-only here)")


class ChannelDelivery(BaseModel):
    id: int
    at: datetime
    notification_id: str
    channel: str
    kind: str
    service_id: str
    workflow_id: str | None
    delivered: bool
    status_code: int | None
    error: str | None


def _public(channel: ChannelConfig, source: str) -> ChannelPublic:
    return ChannelPublic(**redact_channel(channel.model_dump(mode="json")), source=source)


def _settings_names(resources: Any) -> set[str]:
    return {c.name for c in resources.settings.notification_channels}


def _validated(name: str, body: ChannelBody, old: ChannelConfig | None, resources: Any) -> ChannelConfig:
    """The channel as it will be stored: secrets sent back redacted restored from ``old``; checked whole
    (kind and url agree, headers, the outbound policy). 422 otherwise, nothing saved."""
    doc, moved = restore_channel(
        {"name": name, **body.model_dump(mode="json", exclude_unset=False)},
        old.model_dump(mode="json") if old is not None else None,
    )
    if moved:
        raise ConfigInvalid(
            "a redacted secret would go to another destination: re-enter it",
            details=[{"loc": ["body", *loc], "msg": msg, "type": "secret_destination"} for loc, msg in moved],
        )
    try:
        channel = ChannelConfig.model_validate(doc)
    except ValueError as exc:
        errors = exc.errors() if isinstance(exc, ValidationError) else []
        raise ConfigInvalid(
            f"invalid channel: {errors[0]['msg'] if errors else exc}",
            details=[{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in errors] or None,
        ) from None
    if contains_placeholder(channel.model_dump(mode="json")):
        raise ConfigInvalid(
            f"{REDACTED!r} is a placeholder for a secret: give the real value",
            details=[{"loc": ["body"], "msg": "re-enter the redacted values", "type": "secret_placeholder"}],
        )
    if channel.url:
        reason = resources.outbound.notify.refuse_url(channel.url)
        if reason:
            raise ConfigInvalid(
                f"url refused by the outbound policy: {reason}",
                details=[{"loc": ["body", "url"], "msg": reason, "type": "outbound_refused"}],
            )
    return channel


def _audit_details(channel: ChannelConfig, **more: Any) -> dict[str, Any]:
    doc = redact_channel(channel.model_dump(mode="json"))
    return {"kind": doc["kind"], "url": doc.get("url"), "events": doc.get("events"), **more}


def _committed(resources: Any) -> None:
    if resources.relay is not None:
        resources.relay.notify()


@router.get("", response_model=list[ChannelPublic], summary="Notification channels (secrets redacted)")
async def list_channels(session: ReadSessionDep, resources: ResourcesDep, _: CanRead) -> list[ChannelPublic]:
    fixed = list(resources.settings.notification_channels)
    names = {c.name for c in fixed}
    stored = [c for c in await channels.get_all(session=session) if c.name not in names]
    return [*(_public(c, "settings") for c in fixed), *(_public(c, "stored") for c in stored)]


@router.get("/{name}", response_model=ChannelPublic, summary="One notification channel (secrets redacted)")
async def get_channel(name: ChannelPath, session: ReadSessionDep, resources: ResourcesDep, _: CanRead) -> ChannelPublic:
    for c in resources.settings.notification_channels:
        if c.name == name:
            return _public(c, "settings")
    channel = await channels.get(session=session, name=name)
    if channel is None:
        raise NotFound(f"notification channel {name!r} not found", details={"name": name})
    return _public(channel, "stored")


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=ChannelPublic, summary="Add a notification channel"
)
@audit_as("notification_channel.create")
async def create_channel(
    body: ChannelCreate, request: Request, resources: ResourcesDep, principal: CanWrite, request_id: RequestIdDep
) -> ChannelPublic:
    note(request, target=body.name)
    if body.name in _settings_names(resources):
        raise Conflict(f"channel {body.name!r} is defined in settings", details={"name": body.name})
    channel = _validated(body.name, body, None, resources)
    async with resources.db.write() as session:
        if await channels.get(session=session, name=body.name) is not None:
            raise Conflict(f"channel {body.name!r} exists", details={"name": body.name})
        await channels.put(session=session, channel=channel)
        await record(
            session, principal, "notification_channel.create", body.name, request_id, details=_audit_details(channel)
        )
    _committed(resources)
    return _public(channel, "stored")


@router.put(
    "/{name}",
    response_model=ChannelPublic,
    summary="Replace a notification channel (redacted values sent back keep the stored secrets)",
)
@audit_as("notification_channel.update")
async def update_channel(
    name: ChannelPath,
    body: ChannelBody,
    request: Request,
    resources: ResourcesDep,
    principal: CanWrite,
    request_id: RequestIdDep,
) -> ChannelPublic:
    note(request, target=name)
    if name in _settings_names(resources):
        raise Conflict(f"channel {name!r} is defined in settings: change it there", details={"name": name})
    async with resources.db.write() as session:
        old = await channels.get(session=session, name=name)
        if old is None:
            raise NotFound(f"notification channel {name!r} not found", details={"name": name})
        channel = _validated(name, body, old, resources)
        if channel != old:
            await channels.put(session=session, channel=channel)
            changed = sorted(
                k for k, v in channel.model_dump(mode="json").items() if v != old.model_dump(mode="json").get(k)
            )
            await record(
                session,
                principal,
                "notification_channel.update",
                name,
                request_id,
                details=_audit_details(channel, changed=changed),
            )
    _committed(resources)
    return _public(channel, "stored")


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a notification channel")
@audit_as("notification_channel.delete")
async def delete_channel(
    name: ChannelPath, request: Request, resources: ResourcesDep, principal: CanWrite, request_id: RequestIdDep
) -> None:
    note(request, target=name)
    if name in _settings_names(resources):
        raise Conflict(f"channel {name!r} is defined in settings: remove it there", details={"name": name})
    async with resources.db.write() as session:
        old = await channels.get(session=session, name=name)
        if old is None or not await channels.remove(session=session, name=name):
            raise NotFound(f"notification channel {name!r} not found", details={"name": name})
        await record(session, principal, "notification_channel.delete", name, request_id, details=_audit_details(old))
    _committed(resources)


@router.post(
    "/{name}/test",
    response_model=DeliveryResult,
    summary="Send a test notification through a channel now (logged like any delivery)",
)
@audit_as("notification_channel.test")
async def test_channel(
    name: ChannelPath, request: Request, resources: ResourcesDep, principal: CanWrite, request_id: RequestIdDep
) -> DeliveryResult:
    note(request, target=name)
    channel = next((c for c in resources.settings.notification_channels if c.name == name), None)
    if channel is None:
        async with resources.db.read() as session:
            channel = await channels.get(session=session, name=name)
    if channel is None:
        raise NotFound(f"notification channel {name!r} not found", details={"name": name})
    notification = Notification(
        id=f"test-{uuid.uuid4().hex}",
        kind=channel.events[0] if channel.events else NotificationKind.ESCALATED,
        service_id="windflow",
        title=f"Test notification from windflow (channel {name})",
        text=f"Sent by {principal.name} to check the channel; nothing needs doing.",
        details={"test": True, "requested_by": principal.name},
        timestamp=datetime.now(UTC),
    )
    try:
        result = await build_channel(channel, resources.outbound.notify).send(notification)
    except Exception as exc:  # an adapter bug is a failed test, not a 500
        result = DeliveryResult(channel=name, delivered=False, error=f"{type(exc).__name__}: {exc}"[:500])
    result = result.model_copy(update={"channel": name})
    async with resources.db.write() as session:
        await deliveries.add(session=session, notification=notification, result=result)
        await record(
            session,
            principal,
            "notification_channel.test",
            name,
            request_id,
            outcome="success" if result.delivered else "failure",
            details={"delivered": result.delivered, "status_code": result.status_code, "error": result.error},
        )
    _committed(resources)
    return result


@router.get(
    "/{name}/deliveries",
    response_model=PageOf[ChannelDelivery],
    summary="A channel's deliveries (tests included), newest first",
)
async def list_channel_deliveries(
    name: ChannelPath,
    session: ReadSessionDep,
    _: CanRead,
    delivered: bool | None = Query(None),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=512),
) -> PageOf[ChannelDelivery]:
    page = await deliveries.get_all(session=session, channel=name, delivered=delivered, limit=limit, cursor=cursor)
    return PageOf[ChannelDelivery](
        items=[ChannelDelivery.model_validate(r, from_attributes=True) for r in page.items],
        next_cursor=page.next_cursor,
    )
