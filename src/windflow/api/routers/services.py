"""Service registry and versioned configs."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import jsonpatch
from fastapi import APIRouter, BackgroundTasks, Body, Depends, Header, Path, Query, Response, status

from windflow.api.audit import record
from windflow.api.bodies import VERSION_MAX
from windflow.api.cache import read_cache_of, services_stamp
from windflow.api.deps import ReadSessionDep, RequestIdDep, ResourcesDep, WriteSessionDep, get_temporal
from windflow.api.errors import ERROR_RESPONSES, ApiError
from windflow.api.resources import Resources
from windflow.api.schemas import (
    ConfigDiff,
    ConfigRevert,
    ConfigUpdate,
    ConfigVersionPublic,
    JobRunPublic,
    PageOf,
    ReplicaPublic,
    ScaleAccepted,
    ServiceCreate,
    ServicePatch,
    ServicePublic,
    StatusChange,
    StatusHistory,
    ValidationReport,
)
from windflow.api.security import require
from windflow.api.supervisors import ensure_watched
from windflow.auth.permissions import Permission, Principal
from windflow.domain.contracts import ControlInput, ScaleInput
from windflow.domain.errors import ConfigInvalid, NotFound
from windflow.domain.graph import layers
from windflow.domain.models import REPLICAS_MAX, ServiceSpec, replica_id
from windflow.domain.redaction import REDACTED, is_secret_key, redact
from windflow.persistence import registry
from windflow.persistence.job_models import JobRunRepository
from windflow.persistence.repositories import ConfigVersionRepository, ServiceRepository, StatusHistoryRepository
from windflow.temporal import handles, names

router = APIRouter(prefix="/services", tags=["services"], responses=ERROR_RESPONSES)
services = ServiceRepository()
versions = ConfigVersionRepository()
status_history = StatusHistoryRepository()
job_runs = JobRunRepository()

CanRead = Annotated[Principal, Depends(require(Permission.SERVICES_READ))]
CanReadConfigs = Annotated[Principal, Depends(require(Permission.CONFIGS_READ))]
CanWriteConfigs = Annotated[Principal, Depends(require(Permission.CONFIGS_WRITE))]
CanControl = Annotated[Principal, Depends(require(Permission.SERVICES_CONTROL))]


def _labels(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ApiError(
                422,
                f"label filter {item!r} must look like key=value",
                code="validation_error",
                details=[{"loc": ["query", "label"], "msg": "expected key=value"}],
            )
        out[key] = value
    return out


def _expected(if_match: str | None, body_value: int | None) -> int | None:
    if body_value is not None:
        return body_value
    if if_match is None:
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 10 or int(text) > VERSION_MAX:
        raise ApiError(400, 'If-Match must carry the version number, e.g. If-Match: "3"', code="bad_request")
    return int(text)


@router.get("", response_model=PageOf[ServicePublic], summary="List services")
async def list_services(
    resources: ResourcesDep,
    _: CanRead,
    label: Annotated[list[str], Query(description="Filter key=value; repeat for several")] = [],  # noqa: B006
    driver: str | None = None,
    monitored: bool | None = None,
    state: str | None = Query(None, description="e.g. healthy, unhealthy, backing_off, blocked"),
    q: str | None = Query(None, max_length=200, description="Search id, description and labels"),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=512),
) -> Response:
    labels = _labels(label)
    cache = read_cache_of(resources)
    key = None
    if cache is not None:
        # the stamp first, then the page: see windflow.api.cache for why no read can be stale
        query = json.dumps([sorted(labels.items()), driver, monitored, state, q, limit, cursor], separators=(",", ":"))
        key = f"services:{await services_stamp(resources.db)}:{query}"
        body = await cache.get(key)
        if body is not None:
            return Response(body, media_type="application/json")
    async with resources.db.read() as session:
        page = await services.get_all(
            session=session,
            limit=limit,
            cursor=cursor,
            labels=labels,
            driver=driver,
            monitored=monitored,
            state=state,
            q=q,
        )
        result = PageOf[ServicePublic](items=[ServicePublic.of(r) for r in page.items], next_cursor=page.next_cursor)
    body = result.model_dump_json().encode()
    if cache is not None and key is not None:
        await cache.set(key, body)
    return Response(body, media_type="application/json")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ServicePublic, summary="Create a service")
async def create_service(
    body: ServiceCreate,
    session: WriteSessionDep,
    principal: CanWriteConfigs,
    request_id: RequestIdDep,
    response: Response,
    resources: ResourcesDep,
    comment: str = Query("", max_length=2000),
) -> ServicePublic:
    spec = ServiceSpec.model_validate(body.model_dump())
    await registry.create_service(
        session=session,
        spec=spec,
        author=principal.name,
        comment=comment,
        outbound=resources.outbound,
        may_exec=principal.can(Permission.SERVICES_EXEC.value),
    )
    await record(session, principal, "service.create", spec.id, request_id)
    row = await services.require(session=session, service_id=spec.id)
    response.headers["ETag"] = f'"{row.current_version}"'
    response.headers["Location"] = f"/api/v1/services/{spec.id}"
    return ServicePublic.of(row)


@router.post("/validate", response_model=ValidationReport, summary="Validate a new service (saves nothing)")
async def validate_new_service(
    session: ReadSessionDep, _: CanReadConfigs, body: Annotated[dict[str, Any], Body()], resources: ResourcesDep
) -> ValidationReport:
    try:
        spec = registry.parse_spec(body)
        await registry.check_graph_with(session=session, specs=[spec])
    except ConfigInvalid as exc:
        return ValidationReport(valid=False, problems=list(exc.details or []))
    refused = registry.check_outbound(spec, resources.outbound)
    if refused:
        return ValidationReport(valid=False, problems=[p.model_dump() for p in refused])
    graph = await services.graph(session=session)
    graph[spec.id] = list(spec.depends_on)
    return ValidationReport(valid=True, order=layers(graph), conditions={spec.id: spec.conditions()})


@router.get("/{service_id}", response_model=ServicePublic, summary="One service")
async def get_service(service_id: str, session: ReadSessionDep, _: CanRead, response: Response) -> ServicePublic:
    row = await services.require(session=session, service_id=service_id)
    response.headers["ETag"] = f'"{row.current_version}"'
    public = ServicePublic.of(row)
    if row.replicated:
        public.replica_list = [
            ReplicaPublic.of(r) for r in await services.replicas_of(session=session, service_id=row.id)
        ]
    return public


# --------------------------------------------------------------------------- replicas
# A replica's id is `SERVICE/K`; in URLs it is addressed under its service: /services/{id}/replicas/{k}


@router.get(
    "/{service_id}/replicas",
    response_model=list[ServicePublic],
    summary="A replicated service's replicas (each a service of its own: `SERVICE/K`)",
)
async def list_replicas(service_id: str, session: ReadSessionDep, _: CanRead) -> list[ServicePublic]:
    row = await services.require(session=session, service_id=service_id)
    return [ServicePublic.of(r) for r in await services.replicas_of(session=session, service_id=row.id)]


@router.get("/{service_id}/replicas/{index}", response_model=ServicePublic, summary="One replica (`SERVICE/K`)")
async def get_replica(
    service_id: str, session: ReadSessionDep, _: CanRead, index: int = Path(ge=0, le=REPLICAS_MAX - 1)
) -> ServicePublic:
    await services.require(session=session, service_id=service_id)
    row = await services.get(session=session, service_id=replica_id(service_id, index))
    if row is None or row.replica_of != service_id:
        raise NotFound(
            f"service {service_id!r} has no replica {index}", details={"service_id": service_id, "replica": index}
        )
    return ServicePublic.of(row)


@router.patch(
    "/{service_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ScaleAccepted,
    summary="Scale a replicated service",
    description="Saves the new replica count (a new config version) and starts `ServiceScale` "
    "(`scale/{id}` in the Temporal UI): new replicas start in index order, each ready before "
    "the next; on the way down the highest indices stop first. One scale of a service at a "
    "time (409 while one runs). 422 for a service without `replicas` or a count out of "
    "bounds (1-100, not under `min_ready`).",
)
async def patch_service(
    service_id: str,
    body: ServicePatch,
    principal: CanControl,
    request_id: RequestIdDep,
    resources: ResourcesDep,
    response: Response,
) -> ScaleAccepted:
    workflow_id = names.scale_id(service_id)
    async with resources.db.write() as session:  # committed only once the run has started
        row = await services.require(session=session, service_id=service_id, for_update=True)
        if not row.replicated:
            raise ApiError(
                422,
                f"{service_id} is not replicated: give it `replicas` in its config first",
                code="validation_error",
                details=[{"loc": ["body", "replicas"], "type": "value_error", "msg": "the service has no replicas"}],
            )
        previous = int(row.spec.get("replicas") or 0)
        row, version = await registry.update_service(
            session=session,
            service_id=service_id,
            data={**row.spec, "replicas": body.replicas},
            expected_version=None,
            author=principal.name,
            comment=f"scale {previous} → {body.replicas}",
            outbound=resources.outbound,
            may_exec=principal.can(Permission.SERVICES_EXEC.value),
        )
        current = version.version if version is not None else row.current_version
        client = await get_temporal(resources)  # after every check of the request: a bad one is a 4xx all the same
        # one scale at a time: a running `scale/{id}` raises WorkflowAlreadyStartedError (409), and the new count
        # rolls back with the transaction
        await handles.start_scale(
            client,
            task_queue=resources.settings.task_queue,
            request_id=request_id,
            inp=ScaleInput(service_id=service_id, previous=previous, target=body.replicas, actor=principal.name),
        )
        await record(
            session,
            principal,
            "service.scale",
            service_id,
            request_id,
            details={"from": previous, "to": body.replicas, "workflow_id": workflow_id, "version": current},
        )
    if resources.relay is not None:
        resources.relay.notify()
    response.headers["Location"] = f"/api/v1/services/{service_id}"
    return ScaleAccepted(
        service_id=service_id,
        replicas=body.replicas,
        previous=previous,
        workflow_id=workflow_id,
        version=current,
        links={"service": f"/api/v1/services/{service_id}", "replicas": f"/api/v1/services/{service_id}/replicas"},
    )


def _instant(value: datetime | None, name: str) -> datetime | None:
    """The instant in UTC (no zone means UTC); 422 for one with no UTC equivalent."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ApiError(
            422,
            f"{name}: instant out of range",
            code="validation_error",
            details=[{"loc": ["query", name], "msg": "out of range in UTC"}],
        ) from None


@router.get(
    "/{service_id}/status-history",
    response_model=StatusHistory,
    summary="A service's status over a time range (the state timeline)",
)
async def get_status_history(
    service_id: str,
    session: ReadSessionDep,
    resources: ResourcesDep,
    _: CanRead,
    since: datetime | None = Query(
        None, description="From this instant (inclusive); default: an hour before `until`; no zone means UTC"
    ),
    until: datetime | None = Query(None, description="To this instant (exclusive); default: now; no zone means UTC"),
    limit: int = Query(5000, ge=1, le=20000, description="At most this many changes"),
) -> StatusHistory:
    """Every change of the service's status in the range, with the status it had at `since`: enough to draw
    status bands. `since` must be before `until` (422 otherwise)."""
    end = _instant(until, "until") or datetime.now(UTC)
    try:
        start = _instant(since, "since") or end - timedelta(hours=1)
    except OverflowError:
        raise ApiError(
            422,
            "since: instant out of range",
            code="validation_error",
            details=[{"loc": ["query", "until"], "msg": "too early to look an hour back from"}],
        ) from None
    if start >= end:
        raise ApiError(
            422,
            "since must be before until",
            code="validation_error",
            details=[
                {
                    "loc": ["query", "since"],
                    "msg": "must be before until",
                    "since": start.isoformat(),
                    "until": end.isoformat(),
                }
            ],
        )
    row = await services.require(session=session, service_id=service_id)
    timeline = await status_history.timeline(
        session=session, service_id=service_id, since=start, until=end, limit=limit
    )
    return StatusHistory(
        service_id=service_id,
        since=start,
        until=end,
        initial=StatusChange.model_validate(timeline.initial) if timeline.initial is not None else None,
        changes=[StatusChange.model_validate(r) for r in timeline.changes],
        truncated=timeline.truncated,
        current_state=row.state,
        retention_days=resources.settings.status_history_retention_days,
    )


@router.get("/{service_id}/job-runs", response_model=list[JobRunPublic], summary="A job's runs, newest first")
async def list_job_runs(
    service_id: str, session: ReadSessionDep, _: CanReadConfigs, limit: int = Query(20, ge=1, le=50)
) -> list[JobRunPublic]:
    """Each attempt of a `kind: job` service: exit code, duration and the last lines of its output. Reading them
    needs `configs:read`, as a job's output may hold what its config holds."""
    await services.require(session=session, service_id=service_id)
    return [
        JobRunPublic.model_validate(r)
        for r in await job_runs.get_all(session=session, service_id=service_id, limit=limit)
    ]


#: states in which windflow has no process of the service running
_NO_PROCESS = frozenset({"unknown", "stopped", "gave_up"})


@router.delete(
    "/{service_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a service",
    description="Stops the service's process first (an operator's stop, through `ServiceControl`), then "
    "removes it from the registry: no process of a deleted service is left running. "
    "Refused (409) while other services depend on it, unless `force`.",
)
async def delete_service(
    service_id: str,
    principal: CanWriteConfigs,
    request_id: RequestIdDep,
    resources: ResourcesDep,
    force: bool = Query(False, description="Delete even if others depend on it (they are unlinked)"),
) -> Response:
    async with resources.db.read() as session:
        row = await services.require(session=session, service_id=service_id)
        may_run = row.pid is not None or row.desired == "running" or row.state not in _NO_PROCESS
        # checked again in the write below; first here, so that nothing is stopped for a 409
        await registry.check_deletable(session=session, service_id=service_id, force=force)
    if may_run:
        await _stop_before_delete(resources, service_id, principal.name)
    async with resources.db.write() as session:
        unlinked = await registry.delete_service(
            session=session, service_id=service_id, force=force, author=principal.name
        )
        await record(
            session,
            principal,
            "service.delete",
            service_id,
            request_id,
            details={"force": force, "unlinked": unlinked, "stopped": may_run},
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _stop_before_delete(resources: Resources, service_id: str, actor: str) -> None:
    """An operator's stop (supervision paused first, so nothing restarts it), awaited."""
    client = await get_temporal(resources)
    handle = await handles.start_control(
        client,
        task_queue=resources.settings.task_queue,
        nonce=uuid.uuid4().hex[:12],
        inp=ControlInput(service_id=service_id, action="stop", actor=actor),
        summary=f"stop {service_id} before deleting it ({actor})",
    )
    result = await handle.result()
    if not result.ok:
        raise ApiError(
            409,
            f"service {service_id!r} could not be stopped, so it was not deleted: {result.message}",
            code="conflict",
            details={"service_id": service_id, "stop": result.message},
        )


# --------------------------------------------------------------------------- configs


@router.get("/{service_id}/config", response_model=ConfigVersionPublic, summary="Current config")
async def get_config(
    service_id: str, session: ReadSessionDep, _: CanReadConfigs, response: Response
) -> ConfigVersionPublic:
    row = await services.require(session=session, service_id=service_id)
    version = await versions.get(session=session, service_id=service_id, version=row.current_version)
    response.headers["ETag"] = f'"{row.current_version}"'
    return ConfigVersionPublic.of(version)


@router.put(
    "/{service_id}/config",
    response_model=ConfigVersionPublic,
    summary="Change the config (new version)",
    responses={428: ERROR_RESPONSES[409] | {"description": "expected version missing"}},
)
async def put_config(
    service_id: str,
    body: ConfigUpdate,
    session: WriteSessionDep,
    principal: CanWriteConfigs,
    request_id: RequestIdDep,
    response: Response,
    resources: ResourcesDep,
    background: BackgroundTasks,
    if_match: Annotated[str | None, Header(description='Expected current version, e.g. "3"')] = None,
) -> ConfigVersionPublic:
    expected = _expected(if_match, body.expected_version)
    if expected is None:
        raise ApiError(
            428, "send the expected current version (If-Match header or expected_version)", code="precondition_required"
        )
    content = {k: v for k, v in body.content.items() if k != "id"}
    row, version = await registry.update_service(
        session=session,
        service_id=service_id,
        data=content,
        expected_version=expected,
        author=principal.name,
        comment=body.comment,
        outbound=resources.outbound,
        may_exec=principal.can(Permission.SERVICES_EXEC.value),
    )
    if version is None:
        version = await versions.get(session=session, service_id=service_id, version=row.current_version)
    else:
        await record(
            session,
            principal,
            "config.update",
            service_id,
            request_id,
            details={"version": version.version, "comment": body.comment},
        )
        background.add_task(ensure_watched, resources, [service_id])
    response.headers["ETag"] = f'"{version.version}"'
    return ConfigVersionPublic.of(version)


@router.post(
    "/{service_id}/config/validate",
    response_model=ValidationReport,
    summary="Validate a proposed config (saves nothing)",
)
async def validate_config(
    service_id: str,
    session: ReadSessionDep,
    _: CanReadConfigs,
    body: Annotated[dict[str, Any], Body()],
    resources: ResourcesDep,
) -> ValidationReport:
    row = await services.require(session=session, service_id=service_id)
    content = body.get("content", body) if isinstance(body.get("content"), dict) else body
    try:
        spec = registry.merge_and_parse({**content, "id": service_id}, row, outbound=resources.outbound)
        await registry.check_graph_with(session=session, specs=[spec])
    except ConfigInvalid as exc:
        return ValidationReport(valid=False, problems=list(exc.details or []))
    graph = await services.graph(session=session)
    graph[service_id] = list(spec.depends_on)
    return ValidationReport(valid=True, order=layers(graph), conditions={spec.id: spec.conditions()})


@router.get("/{service_id}/config/versions", response_model=PageOf[ConfigVersionPublic], summary="Config history")
async def list_versions(
    service_id: str,
    session: ReadSessionDep,
    _: CanReadConfigs,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=512),
) -> PageOf[ConfigVersionPublic]:
    await services.require(session=session, service_id=service_id)
    page = await versions.get_all(session=session, service_id=service_id, limit=limit, cursor=cursor)
    return PageOf[ConfigVersionPublic](
        items=[ConfigVersionPublic.of(r) for r in page.items], next_cursor=page.next_cursor
    )


@router.get("/{service_id}/config/versions/{version}", response_model=ConfigVersionPublic, summary="One version")
async def get_version(
    service_id: str, version: Annotated[int, Path(ge=1, le=VERSION_MAX)], session: ReadSessionDep, _: CanReadConfigs
) -> ConfigVersionPublic:
    return ConfigVersionPublic.of(await versions.get(session=session, service_id=service_id, version=version))


@router.get("/{service_id}/config/diff", response_model=ConfigDiff, summary="Diff two versions (JSON Patch)")
async def diff_versions(
    service_id: str,
    session: ReadSessionDep,
    _: CanReadConfigs,
    from_version: Annotated[int, Query(alias="from", ge=1, le=VERSION_MAX)],
    to_version: Annotated[int, Query(alias="to", ge=1, le=VERSION_MAX)],
) -> ConfigDiff:
    a = await versions.get(session=session, service_id=service_id, version=from_version)
    b = await versions.get(session=session, service_id=service_id, version=to_version)
    keys = set(a.content.get("secret_keys") or []) | set(b.content.get("secret_keys") or [])
    patch = jsonpatch.make_patch(a.content, b.content).patch
    return ConfigDiff(
        service_id=service_id,
        from_version=from_version,
        to_version=to_version,
        patch=[_redact_op(op, keys) for op in patch],
    )


def _redact_op(op: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    if "value" not in op:
        return op
    if any(is_secret_key(part, keys) for part in str(op["path"]).split("/")):
        return {**op, "value": REDACTED}
    return {**op, "value": redact(op["value"], keys)}


@router.post("/{service_id}/config/revert", response_model=ConfigVersionPublic, summary="Revert to a version")
async def revert_config(
    service_id: str,
    body: ConfigRevert,
    session: WriteSessionDep,
    principal: CanWriteConfigs,
    request_id: RequestIdDep,
    response: Response,
    resources: ResourcesDep,
    background: BackgroundTasks,
    if_match: Annotated[str | None, Header()] = None,
) -> ConfigVersionPublic:
    expected = _expected(if_match, body.expected_version)
    version = await registry.revert_service(
        session=session,
        service_id=service_id,
        to_version=body.version,
        expected_version=expected,
        author=principal.name,
        comment=body.comment,
        may_exec=principal.can(Permission.SERVICES_EXEC.value),
    )
    await record(
        session,
        principal,
        "config.revert",
        service_id,
        request_id,
        details={"to_version": body.version, "new_version": version.version},
    )
    background.add_task(ensure_watched, resources, [service_id])
    response.headers["ETag"] = f'"{version.version}"'
    return ConfigVersionPublic.of(version)
