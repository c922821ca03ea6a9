"""Outgoing webhooks: subscriptions that receive windflow's events as signed JSON (``webhooks:manage``).

* ``POST /webhooks`` registers a URL for some event types (or all). Its signing secret is generated (or taken
  from the request) and returned in that response only; ``POST /webhooks/{id}/rotate-secret`` replaces it and
  likewise shows the new one once. Nothing else ever returns it.
* ``GET``/``PATCH``/``DELETE /webhooks/{id}``: show, change (url, event types, enabled, description), remove.
* ``POST /webhooks/{id}/ping`` sends a signed ``PING`` at once and answers with the recorded delivery, so a
  receiver's signature check can be tried before (or without) enabling the subscription.
* ``GET /webhooks/{id}/deliveries`` pages through the delivery log (newest first);
  ``POST /webhooks/{id}/deliveries/{delivery_id}/redeliver`` queues the same payload again as a new delivery.

Deliveries themselves are made by :mod:`windflow.webhooks_out.dispatcher`; the signature scheme is in
:mod:`windflow.webhooks_out.signing` and docs/webhooks.md.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, Depends, Path, Query, Request, status
from pydantic import AfterValidator, BaseModel, Field, StrictBool

from windflow.api.audit import audit_as, note, record
from windflow.api.bodies import RequestBody
from windflow.api.deps import ReadSessionDep, RequestIdDep, ResourcesDep
from windflow.api.errors import ERROR_RESPONSES
from windflow.api.resources import Resources
from windflow.api.schemas import PageOf
from windflow.api.security import require
from windflow.auth.permissions import Permission, Principal
from windflow.domain.errors import ConfigInvalid, Conflict
from windflow.domain.events import EventType
from windflow.domain.redaction import REDACTED, redact_text
from windflow.persistence.models import utcnow
from windflow.persistence.webhooks_out_models import WebhookDeliveryRow, WebhookSubscriptionRow
from windflow.persistence.webhooks_out_repositories import (
    DELIVERED,
    FAILED,
    WebhookDeliveryRepository,
    WebhookSubscriptionRepository,
)
from windflow.webhooks_out.dispatcher import attempt, new_client
from windflow.webhooks_out.signing import new_secret, standard_secret_problem

PING = "PING"
MAX_URL = 2048

router = APIRouter(prefix="/webhooks", tags=["webhooks"], responses=ERROR_RESPONSES)
subscriptions = WebhookSubscriptionRepository()
deliveries = WebhookDeliveryRepository()

CanManage = Annotated[Principal, Depends(require(Permission.WEBHOOKS_MANAGE))]
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
WebhookId = Annotated[str, Path(pattern=ID_PATTERN, description="e.g. wh_0123456789abcdef")]
DeliveryId = Annotated[str, Path(pattern=ID_PATTERN, description="e.g. whd_0123456789abcdef0123456789abcdef")]
DeliveryState = Literal["pending", "delivered", "failed"]


# --------------------------------------------------------------------------- schemas


_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
URL_PATTERN = (
    r"^https?://(?:[A-Za-z0-9._~%!$&'()*+,;=:-]+@)?[A-Za-z0-9.-]+(?::" + _PORT + r")?(?:[/?#][^\s\x00-\x1f\x7f]*)?$"
)
"""http(s), an optional ``user:password@``, a host name or IPv4 address, an optional port, then no whitespace
or control characters. Declared in the schema, so what it documents is exactly what is accepted."""
SECRET_PATTERN = r"^[^\x00-\x1f\x7f]*$"
TEXT_PATTERN = r"^[^\x00]*$"


def check_url(value: str) -> str:
    """The pattern (checked here, for a readable message), then the URL parser: a host, a port in range."""
    if not re.fullmatch(URL_PATTERN, value):
        raise ValueError(
            "must be an http:// or https:// URL: a host name or IPv4 address, an optional port in "
            "range, no whitespace or control characters"
        )
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number in range)
    except ValueError:
        raise ValueError("has an invalid port") from None
    return value


def _unique(types: list[EventType]) -> list[EventType]:
    return sorted(set(types), key=list(EventType).index)


WebhookUrl = Annotated[
    str, Field(max_length=MAX_URL, json_schema_extra={"pattern": URL_PATTERN}), AfterValidator(check_url)
]
EventTypes = Annotated[list[EventType], Field(min_length=1, max_length=len(EventType)), AfterValidator(_unique)]


def _standard_secret(value: str) -> str:
    problem = standard_secret_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Secret = Annotated[str, Field(min_length=16, max_length=256, pattern=SECRET_PATTERN), AfterValidator(_standard_secret)]
Description = Annotated[str, Field(max_length=1000, pattern=TEXT_PATTERN)]


class WebhookCreate(RequestBody):
    url: WebhookUrl = Field(
        description="Where events are POSTed: an http:// or https:// URL",
        examples=["https://ops.example.com/windflow-events"],
    )
    event_types: EventTypes | None = Field(
        None, description="Event types to send; omitted or null: every type (METRICS_UPDATE included)"
    )
    secret: Secret | None = Field(
        None, description="Signing secret; omitted: one is generated. Shown only in the response"
    )
    enabled: StrictBool = True
    description: Description = ""


class WebhookUpdate(RequestBody):
    """Fields to change. ``url``, ``enabled``, ``description`` omitted or null: unchanged. ``event_types``
    omitted: unchanged; null: every type."""

    url: WebhookUrl | None = None
    event_types: EventTypes | None = None
    enabled: StrictBool | None = None
    description: Description | None = None

    def changes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if name == "event_types":
                out[name] = [t.value for t in value or []]
            elif value is not None:
                out[name] = value
        return out


class SecretRotate(RequestBody):
    secret: Secret | None = Field(None, description="The new secret; omitted: one is generated")


class WebhookPublic(BaseModel):
    id: str
    url: str = Field(description="Passwords embedded in the URL are redacted")
    event_types: list[str] | None = Field(description="null: every event type")
    enabled: bool
    description: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    secret_rotated_at: datetime | None = None

    @classmethod
    def of(cls, row: WebhookSubscriptionRow) -> WebhookPublic:
        return cls(
            id=row.id,
            url=redact_text(row.url),
            event_types=list(row.event_types) or None,
            enabled=row.enabled,
            description=row.description,
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
            secret_rotated_at=row.secret_rotated_at,
        )


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="Shown once: the receiver verifies webhook-signature (Standard Webhooks) with it")


class DeliveryPublic(BaseModel):
    delivery_id: str = Field(description="webhook-id: the same on every attempt of this delivery")
    webhook_id: str
    event_id: str
    event_type: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None = Field(description="When a pending delivery is tried next")
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    last_duration_ms: float | None
    delivered_at: datetime | None
    created_at: datetime
    redelivery_of: str | None
    payload: dict[str, Any] = Field(description="The JSON body sent")

    @classmethod
    def of(cls, row: WebhookDeliveryRow) -> DeliveryPublic:
        return cls(
            delivery_id=row.delivery_id,
            webhook_id=row.subscription_id,
            event_id=row.event_id,
            event_type=row.event_type,
            state=row.state,  # type: ignore[arg-type]
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_attempt_at=row.last_attempt_at,
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            last_duration_ms=row.last_duration_ms,
            delivered_at=row.delivered_at,
            created_at=row.created_at,
            redelivery_of=row.redelivery_of,
            payload=row.payload,
        )


def _audit_details(row: WebhookSubscriptionRow, **more: Any) -> dict[str, Any]:
    return {"url": redact_text(row.url), "event_types": list(row.event_types) or None, "enabled": row.enabled, **more}


def _committed(
    request: Request, resources: Resources, *, subscriptions_changed: bool = False, queued: bool = False
) -> None:
    """After a commit: the outbox relay publishes its audit event; this process's dispatcher (if it runs here)
    reads the subscriptions again, or looks for the delivery just queued."""
    if resources.relay is not None:
        resources.relay.notify()
    dispatcher = getattr(request.app.state, "webhook_dispatcher", None)
    if dispatcher is not None:
        if subscriptions_changed:
            dispatcher.subscriptions_changed()
        if queued:
            dispatcher.notify()


def _check_outbound(resources: Resources, url: str) -> None:
    reason = resources.outbound.notify.refuse_url(url)
    if reason:
        raise ConfigInvalid(
            f"url refused by the outbound policy: {reason}",
            details=[{"loc": ["body", "url"], "msg": reason, "type": "outbound_refused"}],
        )


# --------------------------------------------------------------------------- subscriptions


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    summary="Subscribe a URL to events (the signing secret is returned once)",
)
@audit_as("webhook.create")
async def create_webhook(
    body: WebhookCreate, request: Request, resources: ResourcesDep, principal: CanManage, request_id: RequestIdDep
) -> WebhookCreated:
    _check_outbound(resources, body.url)
    secret = body.secret or new_secret()
    async with resources.db.write() as session:
        row = await subscriptions.add(
            session=session,
            subscription_id=f"wh_{uuid.uuid4().hex[:16]}",
            url=body.url,
            event_types=[t.value for t in body.event_types or []],
            secret=secret,
            enabled=body.enabled,
            description=body.description,
            created_by=principal.name,
        )
        await record(
            session,
            principal,
            "webhook.create",
            row.id,
            request_id,
            details=_audit_details(row, secret_supplied=body.secret is not None),
        )
    _committed(request, resources, subscriptions_changed=True)
    return WebhookCreated(**WebhookPublic.of(row).model_dump(), secret=secret)


@router.get("", response_model=list[WebhookPublic], summary="Webhook subscriptions")
async def list_webhooks(session: ReadSessionDep, _: CanManage) -> list[WebhookPublic]:
    return [WebhookPublic.of(row) for row in await subscriptions.get_all(session=session)]


@router.get("/{webhook_id}", response_model=WebhookPublic, summary="One webhook subscription (without its secret)")
async def get_webhook(webhook_id: WebhookId, session: ReadSessionDep, _: CanManage) -> WebhookPublic:
    return WebhookPublic.of(await subscriptions.require(session=session, subscription_id=webhook_id))


@router.patch(
    "/{webhook_id}", response_model=WebhookPublic, summary="Change a webhook: url, event types, enabled, description"
)
@audit_as("webhook.update")
async def update_webhook(
    webhook_id: WebhookId,
    body: WebhookUpdate,
    request: Request,
    resources: ResourcesDep,
    principal: CanManage,
    request_id: RequestIdDep,
) -> WebhookPublic:
    changes = body.changes()
    if "url" in changes:
        _check_outbound(resources, changes["url"])
    async with resources.db.write() as session:
        if REDACTED in changes.get("url", ""):  # a redacted URL sent back: kept only if nothing else changed
            current = await subscriptions.require(session=session, subscription_id=webhook_id)
            if redact_text(current.url) != changes["url"]:
                raise ConfigInvalid(
                    "the URL changed: re-enter its password to send it to the new destination",
                    details=[
                        {
                            "loc": ["body", "url"],
                            "msg": "re-enter the password for the new destination",
                            "type": "secret_destination",
                        }
                    ],
                )
            del changes["url"]
        if not changes:
            return WebhookPublic.of(await subscriptions.require(session=session, subscription_id=webhook_id))
        row = await subscriptions.update(session=session, subscription_id=webhook_id, values=changes)
        await record(
            session,
            principal,
            "webhook.update",
            row.id,
            request_id,
            details=_audit_details(row, changed=sorted(changes)),
        )
    _committed(request, resources, subscriptions_changed=True)
    return WebhookPublic.of(row)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a webhook and its delivery log")
@audit_as("webhook.delete")
async def delete_webhook(
    webhook_id: WebhookId, request: Request, resources: ResourcesDep, principal: CanManage, request_id: RequestIdDep
) -> None:
    async with resources.db.write() as session:
        row = await subscriptions.require(session=session, subscription_id=webhook_id)
        details = _audit_details(row)
        await subscriptions.delete(session=session, subscription_id=webhook_id)
        await record(session, principal, "webhook.delete", webhook_id, request_id, details=details)
    _committed(request, resources, subscriptions_changed=True)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=WebhookCreated,
    summary="Replace a webhook's signing secret (the new one is returned once and used at once)",
)
@audit_as("webhook.rotate_secret")
async def rotate_webhook_secret(
    webhook_id: WebhookId,
    request: Request,
    resources: ResourcesDep,
    principal: CanManage,
    request_id: RequestIdDep,
    body: Annotated[SecretRotate | None, Body()] = None,
) -> WebhookCreated:
    secret = (body.secret if body is not None else None) or new_secret()
    async with resources.db.write() as session:
        row = await subscriptions.set_secret(session=session, subscription_id=webhook_id, secret=secret)
        await record(
            session,
            principal,
            "webhook.rotate_secret",
            webhook_id,
            request_id,
            details={"secret_supplied": body is not None and body.secret is not None},
        )
    _committed(request, resources)
    return WebhookCreated(**WebhookPublic.of(row).model_dump(), secret=secret)


@router.post(
    "/{webhook_id}/ping",
    response_model=DeliveryPublic,
    summary="Send a signed PING now (enabled or not) and return the recorded delivery",
)
@audit_as("webhook.ping")
async def ping_webhook(
    webhook_id: WebhookId, request: Request, resources: ResourcesDep, principal: CanManage, request_id: RequestIdDep
) -> DeliveryPublic:
    note(request, target=webhook_id)
    async with resources.db.read() as session:
        sub = await subscriptions.require(session=session, subscription_id=webhook_id)
    event_id = str(uuid.uuid4())
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")  # as the events' envelopes write it
    payload = {
        "event_id": event_id,
        "event_type": PING,
        "timestamp": now,
        "data": {"webhook_id": sub.id, "message": "ping from windflow", "requested_by": principal.name},
    }
    async with resources.db.write() as session:  # the delivery id exists before the request goes out
        row = await deliveries.add(
            session=session,
            subscription_id=sub.id,
            event_id=event_id,
            event_type=PING,
            payload=payload,
            state=FAILED,
            attempts=1,
            next_attempt_at=None,
            last_attempt_at=utcnow(),
            last_error="no answer recorded",
        )
    async with new_client(resources.outbound.notify) as client:
        result = await attempt(
            client,
            url=sub.url,
            secret=sub.secret,
            delivery_id=row.delivery_id,
            event_type=PING,
            payload=payload,
            timeout=resources.settings.webhooks_timeout,
        )
    async with resources.db.write() as session:
        row = await deliveries.require(session=session, subscription_id=sub.id, delivery_id=row.delivery_id)
        row.state = DELIVERED if result.ok else FAILED
        row.last_status_code, row.last_error = result.status_code, result.error
        row.last_duration_ms = round(result.duration_ms, 3)
        row.delivered_at = utcnow() if result.ok else None
        await session.flush()
        await record(
            session,
            principal,
            "webhook.ping",
            webhook_id,
            request_id,
            details={"delivery_id": row.delivery_id, "delivered": result.ok, "status_code": result.status_code},
        )
    _committed(request, resources)
    return DeliveryPublic.of(row)


# --------------------------------------------------------------------------- delivery log


@router.get(
    "/{webhook_id}/deliveries",
    response_model=PageOf[DeliveryPublic],
    summary="A webhook's deliveries, newest first (page with `cursor`)",
)
async def list_webhook_deliveries(
    webhook_id: WebhookId,
    session: ReadSessionDep,
    _: CanManage,
    state: DeliveryState | None = Query(None),
    event_id: str | None = Query(None, max_length=64, pattern=r"^[^\x00]*$"),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=512),
) -> PageOf[DeliveryPublic]:
    await subscriptions.require(session=session, subscription_id=webhook_id)
    page = await deliveries.page(
        session=session, subscription_id=webhook_id, limit=limit, cursor=cursor, state=state, event_id=event_id
    )
    return PageOf[DeliveryPublic](items=[DeliveryPublic.of(r) for r in page.items], next_cursor=page.next_cursor)


@router.get("/{webhook_id}/deliveries/{delivery_id}", response_model=DeliveryPublic, summary="One delivery")
async def get_webhook_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId, session: ReadSessionDep, _: CanManage
) -> DeliveryPublic:
    return DeliveryPublic.of(
        await deliveries.require(session=session, subscription_id=webhook_id, delivery_id=delivery_id)
    )


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryPublic,
    summary="Queue a delivery's payload again, as a new delivery (with a new delivery id)",
)
@audit_as("webhook.redeliver")
async def redeliver_webhook_delivery(
    webhook_id: WebhookId,
    delivery_id: DeliveryId,
    request: Request,
    resources: ResourcesDep,
    principal: CanManage,
    request_id: RequestIdDep,
) -> DeliveryPublic:
    async with resources.db.write() as session:
        sub = await subscriptions.require(session=session, subscription_id=webhook_id)
        original = await deliveries.require(session=session, subscription_id=webhook_id, delivery_id=delivery_id)
        if not sub.enabled:
            raise Conflict(
                f"webhook {webhook_id!r} is disabled: enable it before redelivering", details={"webhook_id": webhook_id}
            )
        row = await deliveries.add(
            session=session,
            subscription_id=webhook_id,
            event_id=original.event_id,
            event_type=original.event_type,
            payload=original.payload,
            next_attempt_at=utcnow(),
            redelivery_of=original.delivery_id,
        )
        await record(
            session,
            principal,
            "webhook.redeliver",
            webhook_id,
            request_id,
            details={
                "delivery_id": row.delivery_id,
                "redelivery_of": original.delivery_id,
                "event_id": original.event_id,
            },
        )
    _committed(request, resources, queued=True)
    return DeliveryPublic.of(row)
