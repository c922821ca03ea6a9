"""Alert webhooks in: monitoring systems start (or join) a service's recovery without glue code.

* ``/hooks`` (``recovery:trigger``): register, list, show, delete hooks and rotate their token. A hook is
  ``alertmanager`` (a label names the service, default ``windflow_service``) or ``generic`` (JSONPath-style
  paths to the service, status and fingerprint). Its token (``wf_hook_...``) is shown once; only its SHA-256
  is stored.
* ``POST /hooks/alertmanager`` (the hook is the one whose token is presented) and ``POST /hooks/{hook_id}``
  receive alerts. They are public routes for the user-token guard and authenticate the hook's own token
  (``Authorization: Bearer wf_hook_...``) themselves. Each alert is mapped to a service: a firing alert for a
  registered service starts ``recover/{service}`` or attaches to the running one (``USE_EXISTING``, so a storm
  of identical alerts makes one recovery); a resolved one is recorded; anything else is recorded as ignored
  with the reason. Every alert lands in ``alert_log`` and every call is audited as ``hook:<name>``.

Guards, in order: the hook's credentials (its bearer token, and/or a Standard Webhooks signature with its
signing secret: ``auth``); its creator (an enabled user who still holds ``recovery:trigger``: a hook stops
working when its creator loses the permission or is disabled or deleted, 403); a rate limit per hook (429 with
``Retry-After``). Then alerts confirm before they act: a repeat of an alert already acted on within the hook's
``dedupe_window`` (same fingerprint and ``startsAt``, or the same ``webhook-id``) is recorded as ``duplicate``;
a firing alert starts a recovery that probes first (unless the hook has ``force``), and a passing probe ends it
without a restart, recorded in the alert log as "alert ignored: service healthy".
"""

from __future__ import annotations

import hmac
import logging
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from windflow.api.audit import audit_as, note, record
from windflow.api.bodies import RequestBody
from windflow.api.deps import ReadSessionDep, RequestIdDep, ResourcesDep, WriteSessionDep, get_temporal
from windflow.api.errors import ERROR_RESPONSES, ApiError
from windflow.api.resources import Resources
from windflow.api.security import require
from windflow.auth.permissions import Permission, Principal
from windflow.auth.tokens import hash_opaque_token, new_opaque_token
from windflow.domain.alerts_in import (
    DEFAULT_LABEL,
    AlertmanagerConfig,
    GenericConfig,
    HookAuth,
    HookKind,
    IncomingAlert,
    JsonPathError,
    alertmanager_alerts,
    dedupe_key,
    generic_alerts,
    truncate_excerpt,
)
from windflow.domain.errors import Conflict
from windflow.persistence.alerts_in_models import AlertLogRow, HookRow
from windflow.persistence.alerts_in_repositories import AlertLogRepository, HookRepository
from windflow.persistence.auth_repositories import UserRepository
from windflow.persistence.models import utcnow
from windflow.persistence.repositories import ServiceRepository
from windflow.temporal.handles import start_recovery
from windflow.webhooks_out.signing import ID_HEADER, new_secret, verify_standard

HOOK_TOKEN_PREFIX = "wf_hook_"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}

router = APIRouter(prefix="/hooks", tags=["hooks"], responses=ERROR_RESPONSES)
hooks = HookRepository()
alert_log = AlertLogRepository()
services = ServiceRepository()
users = UserRepository()
log = logging.getLogger("windflow.hooks")

CanManage = Annotated[Principal, Depends(require(Permission.RECOVERY_TRIGGER))]
Outcome = Literal["recovery_started", "attached", "resolved_recorded", "ignored", "duplicate"]


# --------------------------------------------------------------------------- schemas


class HookCreate(RequestBody):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    kind: HookKind
    label: str = Field(
        DEFAULT_LABEL, min_length=1, max_length=128, description="alertmanager: the alert label naming the service"
    )
    service_path: str | None = Field(
        None, description="generic: JSONPath to the service, e.g. $.alert.labels.service or $.data[*].svc"
    )
    status_path: str | None = Field(None, description="generic: JSONPath to the status (absent: always firing)")
    firing_values: list[str] = Field(default_factory=lambda: ["firing"], max_length=32)
    resolved_values: list[str] = Field(default_factory=lambda: ["resolved"], max_length=32)
    fingerprint_path: str | None = None
    auth: HookAuth = Field(
        "token",
        description="What a delivery must carry: the bearer token, a Standard Webhooks "
        "signature (webhook-id, webhook-timestamp, webhook-signature headers) "
        "made with the hook's signing secret, or both",
    )
    force: bool = Field(
        False,
        description="Act without confirming: a firing alert restarts the service even when "
        "its probe passes (default: probe first, ignore the alert if healthy)",
    )
    dedupe_window: float = Field(
        300.0,
        ge=0,
        le=86400,
        description="Seconds during which a repeat of an alert "
        "already acted on (same fingerprint and startsAt, or same webhook-id) is recorded, "
        "not acted on; 0: off",
    )

    @model_validator(mode="after")
    def _generic_needs_a_service_path(self) -> HookCreate:
        if self.kind == "generic":
            if not self.service_path:
                raise ValueError("a generic hook needs service_path")
            try:
                self.mapping()
            except (ValidationError, JsonPathError) as exc:
                raise ValueError(str(exc)) from None
        return self

    def mapping(self) -> dict[str, Any]:
        if self.kind == "alertmanager":
            return AlertmanagerConfig(label=self.label).model_dump()
        return GenericConfig(
            service_path=self.service_path or "",
            status_path=self.status_path,
            firing_values=self.firing_values,
            resolved_values=self.resolved_values,
            fingerprint_path=self.fingerprint_path,
        ).model_dump()


class HookUpdate(RequestBody):
    """Fields to change; omitted or null: unchanged. The kind and ``auth`` stay (a hook's credentials are
    changed by rotating them, or by a new hook); the mapping fields are those of the hook's kind."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    label: str | None = Field(None, min_length=1, max_length=128)
    service_path: str | None = None
    status_path: str | None = None
    firing_values: list[str] | None = Field(None, max_length=32)
    resolved_values: list[str] | None = Field(None, max_length=32)
    fingerprint_path: str | None = None
    force: bool | None = None
    dedupe_window: float | None = Field(None, ge=0, le=86400)

    def changes(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude_unset=True).items() if v is not None}


class HookPublic(BaseModel):
    id: str
    name: str
    kind: str
    config: dict[str, Any]
    token_prefix: str
    url: str = Field(description="Where the source posts its alerts (with 'Authorization: Bearer <token>')")
    auth: str = "token"
    force: bool = False
    dedupe_window: float = 300.0
    created_by: str
    created_at: datetime
    token_rotated_at: datetime | None = None
    last_used_at: datetime | None = None


class HookCreated(HookPublic):
    token: str = Field(description="Shown once: store it in the alert source's configuration")
    signing_secret: str | None = Field(
        None,
        description="Shown once, for auth 'signature' and 'token+signature': "
        "the Standard Webhooks secret (whsec_...) the source signs with",
    )


class AlertOutcome(BaseModel):
    index: int
    service: str | None
    status: str
    fingerprint: str | None
    outcome: Outcome
    reason: str | None = None
    workflow_id: str | None = None


class HookReceipt(BaseModel):
    hook_id: str
    hook: str
    received: int
    outcomes: list[AlertOutcome]
    recoveries: list[str] = Field(description="Workflow ids of the recoveries started or joined")


class AlertLogPublic(BaseModel):
    id: int
    hook_id: str
    received_at: datetime
    request_id: str | None
    fingerprint: str | None
    service_id: str | None
    status: str
    outcome: str
    reason: str | None
    workflow_id: str | None
    payload: dict[str, Any]


def _public(row: HookRow) -> dict[str, Any]:
    url = "/api/v1/hooks/alertmanager" if row.kind == "alertmanager" else f"/api/v1/hooks/{row.id}"
    return {
        "id": row.id,
        "name": row.name,
        "kind": row.kind,
        "config": row.config or {},
        "token_prefix": row.token_prefix,
        "url": url,
        "created_by": row.created_by,
        "created_at": row.created_at,
        "token_rotated_at": row.token_rotated_at,
        "last_used_at": row.last_used_at,
        "auth": row.auth or "token",
        "force": bool(row.force),
        "dedupe_window": float(row.dedupe_window if row.dedupe_window is not None else 300.0),
    }


def _new_token() -> tuple[str, str, str]:
    token, digest = new_opaque_token(HOOK_TOKEN_PREFIX)
    return token, digest, token[:16]


# --------------------------------------------------------------------------- registry


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=HookCreated,
    summary="Register an incoming alert webhook (its token is returned once)",
)
@audit_as("hook.create")
async def create_hook(
    body: HookCreate, session: WriteSessionDep, principal: CanManage, request_id: RequestIdDep
) -> HookCreated:
    if await hooks.by_name(session=session, name=body.name) is not None:
        raise Conflict(f"a hook named {body.name!r} exists", details={"name": body.name})
    token, digest, prefix = _new_token()
    secret = new_secret() if "signature" in body.auth else None
    row = await hooks.add(
        session=session,
        hook_id=f"hk_{uuid.uuid4().hex[:16]}",
        name=body.name,
        kind=body.kind,
        config=body.mapping(),
        token_hash=digest,
        token_prefix=prefix,
        created_by=principal.name,
        auth=body.auth,
        signing_secret=secret,
        force=body.force,
        dedupe_window=body.dedupe_window,
    )
    await record(
        session,
        principal,
        "hook.create",
        row.id,
        request_id,
        details={"name": row.name, "kind": row.kind, "auth": row.auth, "force": row.force},
    )
    return HookCreated(**_public(row), token=token, signing_secret=secret)


@router.get("", response_model=list[HookPublic], summary="Registered incoming webhooks")
async def list_hooks(session: ReadSessionDep, _: CanManage) -> list[HookPublic]:
    return [HookPublic(**_public(row)) for row in await hooks.get_all(session=session)]


@router.post(
    "/alertmanager",
    response_model=HookReceipt,
    summary="Receive a Prometheus Alertmanager webhook (hook token in 'Authorization: Bearer')",
)
@audit_as("hook.receive")
async def receive_alertmanager(request: Request, resources: ResourcesDep, request_id: RequestIdDep) -> HookReceipt:
    note(request, actor="hook:unknown", target="alertmanager")
    token = _presented_token(request)
    async with resources.db.read() as session:
        row = await hooks.by_token_hash(session=session, token_hash=hash_opaque_token(token))
    if row is None:
        raise ApiError(401, "invalid hook token", code="invalid_token", headers=_CHALLENGE)
    note(request, actor=f"hook:{row.name}")
    return await _receive(request, resources, row, request_id)


@router.get("/{hook_id}", response_model=HookPublic, summary="One incoming webhook")
async def get_hook(hook_id: str, session: ReadSessionDep, _: CanManage) -> HookPublic:
    return HookPublic(**_public(await hooks.require(session=session, hook_id=hook_id)))


@router.get("/{hook_id}/alerts", response_model=list[AlertLogPublic], summary="Alerts received through a hook")
async def list_hook_alerts(
    hook_id: str, session: ReadSessionDep, _: CanManage, limit: int = Query(100, ge=1, le=1000)
) -> list[AlertLogPublic]:
    await hooks.require(session=session, hook_id=hook_id)
    return [
        AlertLogPublic.model_validate(r, from_attributes=True)
        for r in await alert_log.get_all(session=session, hook_id=hook_id, limit=limit)
    ]


@router.patch(
    "/{hook_id}",
    response_model=HookPublic,
    summary="Change a hook: name, mapping (label or JSONPaths), force, dedupe window",
)
@audit_as("hook.update")
async def update_hook(
    hook_id: str, body: HookUpdate, session: WriteSessionDep, principal: CanManage, request_id: RequestIdDep
) -> HookPublic:
    row = await hooks.require(session=session, hook_id=hook_id)
    changes = body.changes()
    mapping_keys = (
        {"label"}
        if row.kind == "alertmanager"
        else {"service_path", "status_path", "firing_values", "resolved_values", "fingerprint_path"}
    )
    foreign = sorted(k for k in changes if k not in mapping_keys | {"name", "force", "dedupe_window"})
    if foreign:
        raise RequestValidationError(
            [
                {"loc": ("body", k), "msg": f"not a field of a {row.kind} hook", "type": "extra_forbidden"}
                for k in foreign
            ]
        )
    current = {
        "name": row.name,
        "kind": row.kind,
        **(row.config or {}),
        "auth": row.auth or "token",
        "force": bool(row.force),
        "dedupe_window": float(row.dedupe_window or 0.0),
    }
    try:  # the whole hook as it would be, checked as a new one is (a generic hook's paths compile)
        merged = HookCreate.model_validate({**current, **changes})
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    if merged.name != row.name and await hooks.by_name(session=session, name=merged.name) is not None:
        raise Conflict(f"a hook named {merged.name!r} exists", details={"name": merged.name})
    changed = sorted(k for k in changes if changes[k] != current.get(k))
    if changed:
        row.name, row.config, row.force, row.dedupe_window = (
            merged.name,
            merged.mapping(),
            merged.force,
            merged.dedupe_window,
        )
        await session.flush()
        await record(
            session, principal, "hook.update", hook_id, request_id, details={"name": row.name, "changed": changed}
        )
    return HookPublic(**_public(row))


@router.delete("/{hook_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a webhook (its token dies)")
@audit_as("hook.delete")
async def delete_hook(hook_id: str, session: WriteSessionDep, principal: CanManage, request_id: RequestIdDep) -> None:
    row = await hooks.require(session=session, hook_id=hook_id)
    name = row.name
    await hooks.delete(session=session, hook_id=hook_id)
    await record(session, principal, "hook.delete", hook_id, request_id, details={"name": name})


@router.post(
    "/{hook_id}/rotate-token",
    response_model=HookCreated,
    summary="Issue a new token for a webhook (the old one stops working at once)",
)
@audit_as("hook.rotate_token")
async def rotate_hook_token(
    hook_id: str, session: WriteSessionDep, principal: CanManage, request_id: RequestIdDep
) -> HookCreated:
    token, digest, prefix = _new_token()
    row = await hooks.set_token(session=session, hook_id=hook_id, token_hash=digest, token_prefix=prefix)
    secret = None
    if "signature" in (row.auth or ""):  # the signing secret is rotated with the token
        secret = row.signing_secret = new_secret()
        await session.flush()
    await record(session, principal, "hook.rotate_token", hook_id, request_id, details={"name": row.name})
    return HookCreated(**_public(row), token=token, signing_secret=secret)


@router.post(
    "/{hook_id}",
    response_model=HookReceipt,
    summary="Receive alerts for one hook (generic JSON mapped by the hook's paths, or Alertmanager's)",
)
@audit_as("hook.receive")
async def receive_generic(
    hook_id: str, request: Request, resources: ResourcesDep, request_id: RequestIdDep
) -> HookReceipt:
    note(request, actor="hook:unknown", target=hook_id)
    async with resources.db.read() as session:
        row = await hooks.get(session=session, hook_id=hook_id)
    if row is not None:
        note(request, actor=f"hook:{row.name}")
    if row is None or "token" in (row.auth or "token"):
        token = _presented_token(request)
        if row is None or not hmac.compare_digest(row.token_hash, hash_opaque_token(token)):
            raise ApiError(401, "invalid hook token", code="invalid_token", headers=_CHALLENGE)
    return await _receive(request, resources, row, request_id)


# --------------------------------------------------------------------------- receiving


def _presented_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "hook token required: send 'Authorization: Bearer wf_hook_...'",
            code="unauthorized",
            headers=_CHALLENGE,
        )
    return token.strip()


async def _payload(request: Request) -> Any:
    try:
        return await request.json()
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to decode
        raise ApiError(400, "the body is not JSON", code="bad_request") from None


def _alerts(row: HookRow, payload: Any) -> list[IncomingAlert]:
    if row.kind == "alertmanager":
        if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
            raise ApiError(
                422, "not an Alertmanager webhook payload: 'alerts' (a list) is missing", code="validation_error"
            )
        return alertmanager_alerts(payload, AlertmanagerConfig.model_validate(row.config or {}))
    return generic_alerts(payload, GenericConfig.model_validate(row.config))


async def _verify_signature(request: Request, row: HookRow) -> None:
    if "signature" not in (row.auth or ""):
        return
    body = await request.body()
    if not row.signing_secret or not verify_standard(row.signing_secret, body, request.headers):
        raise ApiError(
            401,
            "invalid or missing signature: sign with the hook's secret (Standard Webhooks: "
            "webhook-id, webhook-timestamp within 5 minutes, webhook-signature)",
            code="invalid_signature",
        )


async def _creator_problem(session: AsyncSession, row: HookRow) -> str | None:
    """Why the hook's creator no longer vouches for it (None: an enabled user holding recovery:trigger)."""
    user = await users.get(session=session, username=row.created_by)
    if user is None:
        return f"its creator {row.created_by!r} no longer exists"
    if user.disabled:
        return f"its creator {row.created_by!r} is disabled"
    held = await users.with_roles(session=session, user=user)
    if Permission.RECOVERY_TRIGGER.value not in held.permissions:
        return f"its creator {row.created_by!r} no longer holds {Permission.RECOVERY_TRIGGER.value}"
    return None


def _hook_limiter(resources: Resources) -> Any:
    from windflow.api.ratelimit import MemoryRateLimiter, RedisRateLimiter

    limiter = resources.extras.get("hook_limiter")
    if limiter is None:
        url = resources.settings.redis_url
        limiter = resources.extras["hook_limiter"] = RedisRateLimiter.from_url(url) if url else MemoryRateLimiter()
    return limiter


async def _rate_limit(resources: Resources, row: HookRow) -> None:
    settings = resources.settings
    key = f"hook:{row.id}"
    try:
        wait = await _hook_limiter(resources).hit(
            key, limit=settings.hooks_rate_limit, window=settings.hooks_rate_window
        )
    except Exception:  # Redis unreachable: count in this process rather than fail the alert
        fallback = resources.extras.get("hook_limiter_fallback")
        if fallback is None:
            from windflow.api.ratelimit import MemoryRateLimiter

            log.warning("hook rate limiter unavailable; counting in this process")
            fallback = resources.extras["hook_limiter_fallback"] = MemoryRateLimiter()
        wait = await fallback.hit(key, limit=settings.hooks_rate_limit, window=settings.hooks_rate_window)
    if wait is not None:
        raise ApiError(
            429,
            f"hook {row.name!r} is over its rate limit ({settings.hooks_rate_limit} deliveries per "
            f"{settings.hooks_rate_window:g}s)",
            code="rate_limited",
            headers={"Retry-After": str(wait)},
        )


async def _receive(request: Request, resources: Resources, row: HookRow, request_id: str) -> HookReceipt:
    actor = f"hook:{row.name}"
    note(request, actor=actor, target=row.id)
    await _verify_signature(request, row)
    async with resources.db.read() as session:
        problem = await _creator_problem(session, row)
    if problem is not None:
        raise ApiError(
            403,
            f"hook {row.name!r} is disabled: {problem}; recreate it as a user who holds "
            f"{Permission.RECOVERY_TRIGGER.value}",
            code="hook_disabled",
        )
    await _rate_limit(resources, row)
    alerts = _alerts(row, await _payload(request))
    delivery_id = request.headers.get(ID_HEADER) or None
    keys = [dedupe_key(a, delivery_id=delivery_id, index=i) for i, a in enumerate(alerts)]
    window = float(row.dedupe_window if row.dedupe_window is not None else 300.0)
    async with resources.db.read() as session:
        known = set(await services.ids(session=session))
        seen = (
            await alert_log.acted_since(
                session=session, hook_id=row.id, keys=keys, since=utcnow() - timedelta(seconds=window)
            )
            if window > 0
            else {}
        )
    label = (row.config or {}).get("label", DEFAULT_LABEL) if row.kind == "alertmanager" else None
    outcomes: list[AlertOutcome] = []
    started: dict[str, tuple[str, bool, str]] = {}  # service → (workflow id, attached, run id) within this call
    run_ids: list[str | None] = []
    acted: set[str] = set()  # keys of this delivery's alerts that started or joined a recovery
    for i, alert in enumerate(alerts):
        run_ids.append(None)
        out = AlertOutcome(
            index=i, service=alert.service, status=alert.status, fingerprint=alert.fingerprint, outcome="ignored"
        )
        if alert.status == "unknown":
            out.reason = f"status {alert.raw_status!r} is neither firing nor resolved"
        elif alert.service is None:
            out.reason = f"no label {label!r}" if label else "the service path matched nothing"
        elif alert.service not in known:
            out.reason = f"unknown service {alert.service!r}"
        elif alert.status == "resolved":
            out.outcome = "resolved_recorded"
        elif keys[i] in seen or keys[i] in acted:
            out.outcome = "duplicate"
            at = seen.get(keys[i])
            out.reason = (
                "a repeat of an alert acted on "
                + (f"at {at.isoformat(timespec='seconds')} " if at else "in this delivery ")
                + f"(within {window:g}s): recorded, not acted on"
            )
        elif alert.service in started:
            out.outcome, out.workflow_id = "attached", started[alert.service][0]
            run_ids[i] = started[alert.service][2]
            out.reason = "another alert of this call started or joined the recovery"
        else:
            result = await start_recovery(
                await get_temporal(resources),
                task_queue=resources.settings.task_queue,
                service_id=alert.service,
                reason=_reason(row, alert),
                actor=actor,
                source="hook",
                request_id=request_id,
                confirm=not row.force,
            )
            started[alert.service] = (result.workflow_id, result.attached, result.run_id)
            out.outcome = "attached" if result.attached else "recovery_started"
            out.workflow_id = result.workflow_id
            run_ids[i] = result.run_id
        if out.outcome in ("recovery_started", "attached"):
            acted.add(keys[i])
        outcomes.append(out)
    async with resources.db.write() as session:
        await _log(session, row, alerts, outcomes, request_id, keys=keys, run_ids=run_ids)
        await hooks.touch(session=session, hook_id=row.id)
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.outcome] = counts.get(o.outcome, 0) + 1
        await record(
            session,
            actor,
            "hook.receive",
            row.id,
            request_id,
            details={
                "hook": row.name,
                "kind": row.kind,
                "alerts": len(alerts),
                "outcomes": counts,
                "recoveries": sorted({w for w, _, _ in started.values()}),
            },
        )
    if resources.relay is not None:
        resources.relay.notify()
    return HookReceipt(
        hook_id=row.id,
        hook=row.name,
        received=len(alerts),
        outcomes=outcomes,
        recoveries=sorted({w for w, _, _ in started.values()}),
    )


def _reason(row: HookRow, alert: IncomingAlert) -> str:
    labels = alert.excerpt.get("labels") if row.kind == "alertmanager" else None
    name = labels.get("alertname") if isinstance(labels, dict) else None
    return f"alert from hook {row.name}" + (f": {name}" if name else "")


async def _log(
    session: AsyncSession,
    row: HookRow,
    alerts: list[IncomingAlert],
    outcomes: list[AlertOutcome],
    request_id: str,
    *,
    keys: list[str],
    run_ids: list[str | None],
) -> list[AlertLogRow]:
    entries = [
        {
            "fingerprint": (a.fingerprint or None) and a.fingerprint[:128],
            "service_id": (a.service or None) and a.service[:64],
            "status": (a.raw_status or a.status)[:32],
            "outcome": o.outcome,
            "reason": o.reason,
            "workflow_id": o.workflow_id,
            "payload": truncate_excerpt(a.excerpt),
            "dedupe_key": key,
            "run_id": run_id,
        }
        for a, o, key, run_id in zip(alerts, outcomes, keys, run_ids, strict=True)
    ]
    return await alert_log.add_many(session=session, hook_id=row.id, request_id=request_id or None, entries=entries)
