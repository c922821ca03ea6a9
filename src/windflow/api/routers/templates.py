"""Config templates: ready-made service definitions with ``${parameter}`` placeholders."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from windflow.api.audit import record
from windflow.api.deps import ReadSessionDep, RequestIdDep, ResourcesDep, WriteSessionDep
from windflow.api.errors import ERROR_RESPONSES
from windflow.api.schemas import ServicePublic, TemplateInstantiate, TemplatePublic
from windflow.api.security import require
from windflow.auth.permissions import Permission, Principal
from windflow.domain.errors import ConfigInvalid
from windflow.persistence import registry
from windflow.persistence.repositories import ServiceRepository, TemplateRepository

router = APIRouter(prefix="/config-templates", tags=["configs"], responses=ERROR_RESPONSES)
templates = TemplateRepository()
services = ServiceRepository()
_PLACEHOLDER = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")

CanRead = Annotated[Principal, Depends(require(Permission.CONFIGS_READ))]


def render(content: Any, values: dict[str, Any]) -> Any:
    """Substitute ``${name}``; a value that is exactly one placeholder keeps the parameter's type."""
    if isinstance(content, dict):
        return {k: render(v, values) for k, v in content.items()}
    if isinstance(content, list):
        return [render(v, values) for v in content]
    if isinstance(content, str):
        whole = _PLACEHOLDER.fullmatch(content)
        if whole:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), content)
    return content


def parameter_values(parameters: list[dict[str, Any]], given: dict[str, Any], service_id: str) -> dict[str, Any]:
    known = {p["name"] for p in parameters}
    problems = [{"loc": ["parameters", k], "msg": "unknown parameter"} for k in given if k not in known]
    values: dict[str, Any] = {"service_id": service_id}
    for p in parameters:
        if p["name"] in given:
            values[p["name"]] = given[p["name"]]
        elif p.get("required"):
            problems.append({"loc": ["parameters", p["name"]], "msg": "required"})
        else:
            values[p["name"]] = p.get("default")
    if problems:
        raise ConfigInvalid(f"template parameters: {problems[0]['loc'][-1]}: {problems[0]['msg']}", details=problems)
    return values


@router.get("", response_model=list[TemplatePublic], summary="List templates")
async def list_templates(session: ReadSessionDep, _: CanRead) -> list[TemplatePublic]:
    return [TemplatePublic.of(t) for t in await templates.get_all(session=session)]


@router.get("/{name}", response_model=TemplatePublic, summary="One template")
async def get_template(name: str, session: ReadSessionDep, _: CanRead) -> TemplatePublic:
    return TemplatePublic.of(await templates.get(session=session, name=name))


@router.post("/{name}/instantiate", summary="Render a template into a service definition (and create it)")
async def instantiate(
    name: str,
    body: TemplateInstantiate,
    session: WriteSessionDep,
    principal: Annotated[Principal, Depends(require(Permission.CONFIGS_READ))],
    request_id: RequestIdDep,
    resources: ResourcesDep,
) -> dict[str, Any]:
    template = await templates.get(session=session, name=name)
    values = parameter_values(template.parameters, body.parameters, body.service_id)
    data = {**render(template.content, values), "id": body.service_id}
    spec = registry.parse_spec(data)
    if not body.create:
        return {"service": spec.model_dump(mode="json"), "created": False}
    if not principal.can(Permission.CONFIGS_WRITE.value):
        from windflow.api.errors import ApiError

        raise ApiError(403, "creating a service needs configs:write", code="forbidden")
    await registry.create_service(
        session=session,
        spec=spec,
        author=principal.name,
        comment=body.comment or f"from template {name}",
        outbound=resources.outbound,
        may_exec=principal.can(Permission.SERVICES_EXEC.value),
    )
    await record(session, principal, "service.create", spec.id, request_id, details={"template": name})
    row = await services.require(session=session, service_id=spec.id)
    return {"service": ServicePublic.of(row).model_dump(mode="json"), "created": True}
