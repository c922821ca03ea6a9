"""The whole system at once: apply a system file (all-or-nothing), validate it, export it."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request, Response

from windflow.api.audit import record
from windflow.api.deps import ReadSessionDep, RequestIdDep, ResourcesDep, WriteSessionDep
from windflow.api.errors import ERROR_RESPONSES, ApiError
from windflow.api.schemas import ApplyResultPublic, ValidationReport
from windflow.api.security import require
from windflow.api.supervisors import ensure_watched
from windflow.auth.permissions import Permission, Principal
from windflow.domain.errors import ConfigInvalid
from windflow.domain.graph import layers
from windflow.domain.notifications import NotificationsSection, redact_channel
from windflow.domain.redaction import redact
from windflow.domain.system import dump_system, load_system, parse_yaml, to_yaml
from windflow.persistence import registry
from windflow.persistence.notifications import NotificationChannelRepository
from windflow.persistence.repositories import ServiceRepository

router = APIRouter(prefix="/system", tags=["system"], responses=ERROR_RESPONSES)
services = ServiceRepository()
channels = NotificationChannelRepository()

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object", "properties": {"services": {"type": "object"}}}},
        },
    }
}


async def _document(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise ConfigInvalid(
            "empty body: send a system file (YAML or JSON)",
            details=[{"loc": [], "msg": "empty body: send a system file", "type": "missing"}],
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8", code="bad_request") from None
    if "json" in request.headers.get("content-type", ""):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"invalid JSON: {exc}", code="bad_request") from None
        except RecursionError:
            raise ApiError(400, "invalid JSON: nested too deeply", code="bad_request") from None
    return parse_yaml(text)


@router.put(
    "", response_model=ApplyResultPublic, summary="Apply a system file (all-or-nothing)", openapi_extra=_BODY_DOC
)
async def apply(
    request: Request,
    session: WriteSessionDep,
    principal: Annotated[Principal, Depends(require(Permission.CONFIGS_WRITE))],
    request_id: RequestIdDep,
    resources: ResourcesDep,
    background: BackgroundTasks,
    prune: bool = Query(False, description="Delete registered services that the file does not name"),
) -> ApplyResultPublic:
    system = load_system(await _document(request))
    result = await registry.apply_system(
        session=session,
        system=system,
        author=principal.name,
        prune=prune,
        outbound=resources.outbound,
        may_exec=principal.can(Permission.SERVICES_EXEC.value),
    )
    await record(session, principal, "system.apply", "system", request_id, details=result.as_dict())
    # after the commit the watchers pick the change up by themselves (the change stamp: a changed probe reaches the
    # watch within a second); a queue that just got its first service gets its watcher
    if result.updated or result.created:
        background.add_task(ensure_watched, resources, [*result.created, *result.updated])
    return ApplyResultPublic(**result.as_dict())


@router.post(
    "/validate",
    response_model=ValidationReport,
    summary="Validate a system file (saves nothing)",
    openapi_extra=_BODY_DOC,
)
async def validate(
    request: Request, _: Annotated[Principal, Depends(require(Permission.CONFIGS_READ))]
) -> ValidationReport:
    try:
        system = load_system(await _document(request))
    except ConfigInvalid as exc:
        return ValidationReport(valid=False, problems=list(exc.details or []))
    return ValidationReport(
        valid=True,
        order=layers({s.id: list(s.depends_on) for s in system.services}),
        conditions={s.id: s.conditions() for s in system.services if s.depends_on},
    )


@router.get(
    "",
    summary="Export the registry as a system file",
    responses={200: {"content": {"application/yaml": {}, "application/json": {}}}},
)
async def export(
    request: Request,
    session: ReadSessionDep,
    _: Annotated[Principal, Depends(require(Permission.CONFIGS_READ))],
    secrets: bool = Query(False, description="Include secret values (needs configs:write)"),
    format: str | None = Query(None, pattern="^(yaml|json)$"),
) -> Response:
    stored_channels = await channels.get_all(session=session)
    document = dump_system(
        await services.specs(session=session),
        notifications=NotificationsSection(channels=stored_channels) if stored_channels else None,
    )
    principal: Principal = request.state.principal
    if secrets and not principal.can(Permission.CONFIGS_WRITE.value):
        raise ApiError(403, "exporting secrets needs configs:write", code="forbidden")
    if not secrets:
        document["services"] = {
            sid: redact(body, body.get("secret_keys") or []) for sid, body in document["services"].items()
        }
        if "notifications" in document:
            document["notifications"]["channels"] = [redact_channel(c) for c in document["notifications"]["channels"]]
    wants_json = format == "json" or (
        format is None
        and "json" in request.headers.get("accept", "")
        and "yaml" not in request.headers.get("accept", "")
    )
    if wants_json:
        return Response(json.dumps(document, indent=2), media_type="application/json")
    return Response(to_yaml(document), media_type="application/yaml")
