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
"""

from __future__ import annotations

import hmac
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import BaseModel, Field, ValidationError, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from windflow.api.audit import audit_as, note, record
from windflow.api.bodies import RequestBody
from windflow.api.deps import ReadSessionDep, RequestIdDep, ResourcesDep, WriteSessionDep, get_temporal
from windflow.api.errors import ERROR_RESPONSES, ApiError
from windflow.api.resources import Resources
from windflow.api.routers.recoveries import start_recovery
from windflow.api.security import require
from windflow.auth.permissions import Permission, Principal
from windflow.auth.tokens import hash_opaque_token, new_opaque_token
from windflow.domain.errors import Conflict
from windflow.domain.hooks import (
    DEFAULT_LABEL,
    AlertmanagerConfig,
    GenericConfig,
    HookKind,
    IncomingAlert,
    JsonPathError,
    alertmanager_alerts,
    generic_alerts,
    truncate_excerpt,
)
from windflow.persistence.hook_models import AlertLogRow, HookRow
from windflow.persistence.hook_repositories import AlertLogRepository, HookRepository
from windflow.persistence.repositories import ServiceRepository

HOOK_TOKEN_PREFIX = "wf_hook_"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}

router = APIRouter(prefix="/hooks", tags=["hooks"], responses=ERROR_RESPONSES)
hooks = HookRepository()
alert_log = AlertLogRepository()
services = ServiceRepository()

CanManage = Annotated[Principal, Depends(require(Permission.RECOVERY_TRIGGER))]
Outcome = Literal["recovery_started", "attached", "resolved_recorded", "ignored"]


# --------------------------------------------------------------------------- schemas


class HookCreate(RequestBody):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    kind: HookKind
    label: str = Field(DEFAULT_LABEL, min_length=1, max_length=128,
                       description="alertmanager: the alert label naming the service")
    service_path: str | None = Field(None, description="generic: JSONPath to the service, e.g. $.alert.labels.service"
                                                       " or $.data[*].svc")
    status_path: str | None = Field(None, description="generic: JSONPath to the status (absent: always firing)")
    firing_values: list[str] = Field(default_factory=lambda: ["firing"], max_length=32)
    resolved_values: list[str] = Field(default_factory=lambda: ["resolved"], max_length=32)
    fingerprint_path: str | None = None

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
        return GenericConfig(service_path=self.service_path or "", status_path=self.status_path,
                             firing_values=self.firing_values, resolved_values=self.resolved_values,
                             fingerprint_path=self.fingerprint_path).model_dump()


class HookPublic(BaseModel):
    id: str
    name: str
    kind: str
    config: dict[str, Any]
    token_prefix: str
    url: str = Field(description="Where the source posts its alerts (with 'Authorization: Bearer <token>')")
    created_by: str
    created_at: datetime
    token_rotated_at: datetime | None = None
    last_used_at: datetime | None = None


class HookCreated(HookPublic):
    token: str = Field(description="Shown once: store it in the alert source's configuration")


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
    return {"id": row.id, "name": row.name, "kind": row.kind, "config": row.config or {},
            "token_prefix": row.token_prefix, "url": url, "created_by": row.created_by,
            "created_at": row.created_at, "token_rotated_at": row.token_rotated_at,
            "last_used_at": row.last_used_at}


def _new_token() -> tuple[str, str, str]:
    token, digest = new_opaque_token(HOOK_TOKEN_PREFIX)
    return token, digest, token[:16]


# --------------------------------------------------------------------------- registry


@router.post("", status_code=status.HTTP_201_CREATED, response_model=HookCreated,
             summary="Register an incoming alert webhook (its token is returned once)")
@audit_as("hook.create")
async def create_hook(body: HookCreate, session: WriteSessionDep, principal: CanManage,
                      request_id: RequestIdDep) -> HookCreated:
    if await hooks.by_name(session=session, name=body.name) is not None:
        raise Conflict(f"a hook named {body.name!r} exists", details={"name": body.name})
    token, digest, prefix = _new_token()
    row = await hooks.add(session=session, hook_id=f"hk_{uuid.uuid4().hex[:16]}", name=body.name, kind=body.kind,
                          config=body.mapping(), token_hash=digest, token_prefix=prefix, created_by=principal.name)
    await record(session, principal, "hook.create", row.id, request_id, details={"name": row.name, "kind": row.kind})
    return HookCreated(**_public(row), token=token)


@router.get("", response_model=list[HookPublic], summary="Registered incoming webhooks")
async def list_hooks(session: ReadSessionDep, _: CanManage) -> list[HookPublic]:
    return [HookPublic(**_public(row)) for row in await hooks.list(session=session)]


@router.post("/alertmanager", response_model=HookReceipt,
             summary="Receive a Prometheus Alertmanager webhook (hook token in 'Authorization: Bearer')")
@audit_as("hook.receive")
async def receive_alertmanager(request: Request, resources: ResourcesDep, request_id: RequestIdDep) -> HookReceipt:
    note(request, actor="hook:unknown", target="alertmanager")
    token = _presented_token(request)
    async with resources.db.read() as session:
        row = await hooks.by_token_hash(session=session, token_hash=hash_opaque_token(token))
    if row is None:
        raise ApiError(401, "invalid hook token", code="invalid_token", headers=_CHALLENGE)
    return await _receive(request, resources, row, request_id)


@router.get("/{hook_id}", response_model=HookPublic, summary="One incoming webhook")
async def get_hook(hook_id: str, session: ReadSessionDep, _: CanManage) -> HookPublic:
    return HookPublic(**_public(await hooks.require(session=session, hook_id=hook_id)))


@router.get("/{hook_id}/alerts", response_model=list[AlertLogPublic], summary="Alerts received through a hook")
async def list_hook_alerts(hook_id: str, session: ReadSessionDep, _: CanManage,
                           limit: int = Query(100, ge=1, le=1000)) -> list[AlertLogPublic]:
    await hooks.require(session=session, hook_id=hook_id)
    return [AlertLogPublic.model_validate(r, from_attributes=True)
            for r in await alert_log.list(session=session, hook_id=hook_id, limit=limit)]


@router.delete("/{hook_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a webhook (its token dies)")
@audit_as("hook.delete")
async def delete_hook(hook_id: str, session: WriteSessionDep, principal: CanManage, request_id: RequestIdDep) -> None:
    row = await hooks.require(session=session, hook_id=hook_id)
    name = row.name
    await hooks.delete(session=session, hook_id=hook_id)
    await record(session, principal, "hook.delete", hook_id, request_id, details={"name": name})


@router.post("/{hook_id}/rotate-token", response_model=HookCreated,
             summary="Issue a new token for a webhook (the old one stops working at once)")
@audit_as("hook.rotate_token")
async def rotate_hook_token(hook_id: str, session: WriteSessionDep, principal: CanManage,
                            request_id: RequestIdDep) -> HookCreated:
    token, digest, prefix = _new_token()
    row = await hooks.set_token(session=session, hook_id=hook_id, token_hash=digest, token_prefix=prefix)
    await record(session, principal, "hook.rotate_token", hook_id, request_id, details={"name": row.name})
    return HookCreated(**_public(row), token=token)


@router.post("/{hook_id}", response_model=HookReceipt,
             summary="Receive alerts for one hook (generic JSON mapped by the hook's paths, or Alertmanager's)")
@audit_as("hook.receive")
async def receive_generic(hook_id: str, request: Request, resources: ResourcesDep,
                          request_id: RequestIdDep) -> HookReceipt:
    note(request, actor="hook:unknown", target=hook_id)
    token = _presented_token(request)
    async with resources.db.read() as session:
        row = await hooks.get(session=session, hook_id=hook_id)
    if row is not None:
        note(request, actor=f"hook:{row.name}")
    if row is None or not hmac.compare_digest(row.token_hash, hash_opaque_token(token)):
        raise ApiError(401, "invalid hook token", code="invalid_token", headers=_CHALLENGE)
    return await _receive(request, resources, row, request_id)


# --------------------------------------------------------------------------- receiving


def _presented_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "hook token required: send 'Authorization: Bearer wf_hook_...'", code="unauthorized",
                       headers=_CHALLENGE)
    return token.strip()


async def _payload(request: Request) -> Any:
    try:
        return await request.json()
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to decode
        raise ApiError(400, "the body is not JSON", code="bad_request") from None


def _alerts(row: HookRow, payload: Any) -> list[IncomingAlert]:
    if row.kind == "alertmanager":
        if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
            raise ApiError(422, "not an Alertmanager webhook payload: 'alerts' (a list) is missing",
                           code="validation_error")
        return alertmanager_alerts(payload, AlertmanagerConfig.model_validate(row.config or {}))
    return generic_alerts(payload, GenericConfig.model_validate(row.config))


async def _receive(request: Request, resources: Resources, row: HookRow, request_id: str) -> HookReceipt:
    actor = f"hook:{row.name}"
    note(request, actor=actor, target=row.id)
    alerts = _alerts(row, await _payload(request))
    async with resources.db.read() as session:
        known = set(await services.ids(session=session))
    label = (row.config or {}).get("label", DEFAULT_LABEL) if row.kind == "alertmanager" else None
    outcomes: list[AlertOutcome] = []
    started: dict[str, tuple[str, bool]] = {}  # service → (workflow id, attached) within this call
    for i, alert in enumerate(alerts):
        out = AlertOutcome(index=i, service=alert.service, status=alert.status, fingerprint=alert.fingerprint,
                           outcome="ignored")
        if alert.status == "unknown":
            out.reason = f"status {alert.raw_status!r} is neither firing nor resolved"
        elif alert.service is None:
            out.reason = f"no label {label!r}" if label else "the service path matched nothing"
        elif alert.service not in known:
            out.reason = f"unknown service {alert.service!r}"
        elif alert.status == "resolved":
            out.outcome = "resolved_recorded"
        elif alert.service in started:
            out.outcome, out.workflow_id = "attached", started[alert.service][0]
            out.reason = "another alert of this call started or joined the recovery"
        else:
            result = await start_recovery(await get_temporal(resources), task_queue=resources.settings.task_queue,
                                          service_id=alert.service, reason=_reason(row, alert), actor=actor,
                                          source="hook", request_id=request_id)
            started[alert.service] = (result.workflow_id, result.attached)
            out.outcome = "attached" if result.attached else "recovery_started"
            out.workflow_id = result.workflow_id
        outcomes.append(out)
    async with resources.db.write() as session:
        await _log(session, row, alerts, outcomes, request_id)
        await hooks.touch(session=session, hook_id=row.id)
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.outcome] = counts.get(o.outcome, 0) + 1
        await record(session, actor, "hook.receive", row.id, request_id,
                     details={"hook": row.name, "kind": row.kind, "alerts": len(alerts), "outcomes": counts,
                              "recoveries": sorted({w for w, _ in started.values()})})
    if resources.relay is not None:
        resources.relay.notify()
    return HookReceipt(hook_id=row.id, hook=row.name, received=len(alerts), outcomes=outcomes,
                       recoveries=sorted({w for w, _ in started.values()}))


def _reason(row: HookRow, alert: IncomingAlert) -> str:
    labels = alert.excerpt.get("labels") if row.kind == "alertmanager" else None
    name = labels.get("alertname") if isinstance(labels, dict) else None
    return f"alert from hook {row.name}" + (f": {name}" if name else "")


async def _log(session: AsyncSession, row: HookRow, alerts: list[IncomingAlert], outcomes: list[AlertOutcome],
               request_id: str) -> list[AlertLogRow]:
    entries = [{"fingerprint": (a.fingerprint or None) and a.fingerprint[:128],
                "service_id": (a.service or None) and a.service[:64], "status": (a.raw_status or a.status)[:32],
                "outcome": o.outcome, "reason": o.reason, "workflow_id": o.workflow_id,
                "payload": truncate_excerpt(a.excerpt)}
               for a, o in zip(alerts, outcomes, strict=True)]
    return await alert_log.add_many(session=session, hook_id=row.id, request_id=request_id or None, entries=entries)
