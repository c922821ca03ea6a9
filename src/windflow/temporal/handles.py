"""Typed starts and messages of windflow's workflows: what the API, the CLI and activities call.

Each start names the workflow's business id, its search attributes, its memo and its summary in the
Temporal UI in one place, and returns a handle typed by the workflow's result. Workflows are named by
type (:mod:`windflow.temporal.names`), not imported: the API and the CLI do not load workflow code (nor what
it imports) to start one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from windflow.domain.contracts import (
    ControlInput,
    ControlResult,
    InitInput,
    InitState,
    InitStatus,
    RecoveryInput,
    RecoveryResult,
    RetryComponentInput,
    RetryComponentResult,
    ScaleInput,
    ScaleResult,
)
from windflow.domain.rollout import RolloutInput, RolloutState, RolloutStatus
from windflow.domain.shutdown import ShutdownInput, ShutdownState, ShutdownStatus
from windflow.temporal import names
from windflow.temporal import search_attributes as sa

T = TypeVar("T")

#: how long a read waits for a running workflow to answer a query: a workflow whose worker died is answered for
#: from the store at once, instead of holding the request until the engine gives up
QUERY_TIMEOUT = timedelta(seconds=3)


def _attributes(
    kind: str, *, actor: str | None = None, service: str | None = None, status: str | None = None
) -> TypedSearchAttributes:
    pairs: list[SearchAttributePair[Any]] = [SearchAttributePair(sa.KIND, kind)]
    if service is not None:
        pairs.append(SearchAttributePair(sa.SERVICE, service))
    if actor is not None:
        pairs.append(SearchAttributePair(sa.ACTOR, actor))
    if status is not None:
        pairs.append(SearchAttributePair(sa.STATUS, status))
    return TypedSearchAttributes(pairs)


def _listed(items: list[str], most: int = 5) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


# ------------------------------------------------------------------------------------------- initialization


async def start_initialization(
    client: Client, *, task_queue: str, inp: InitInput, request_id: str = ""
) -> WorkflowHandle[Any, InitState]:
    """Start ``init/{run_id}``; raises ``WorkflowAlreadyStartedError`` if that id was ever used."""
    options = inp.options
    summary = (
        f"initialization by {inp.actor}"
        + (" (validate only)" if options.validate_only else "")
        + (f": {_listed(options.components)}" if options.components else "")
    )
    return await client.start_workflow(
        names.SYSTEM_INITIALIZATION,
        inp,
        id=names.init_id(inp.run_id),
        task_queue=task_queue,
        result_type=InitState,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        memo={"actor": inp.actor, "request_id": request_id},
        search_attributes=_attributes("initialization", actor=inp.actor, status=InitStatus.PENDING.value),
        static_summary=summary,
    )


async def retry_component(client: Client, workflow_id: str, component: str) -> RetryComponentResult:
    """Ask a running initialization to retry one failed component (``WorkflowUpdateFailedError`` when it may
    not: not part of the run, not failed, or the run is ending)."""
    result: RetryComponentResult = await client.get_workflow_handle(workflow_id).execute_update(
        names.RETRY_COMPONENT, RetryComponentInput(component=component), result_type=RetryComponentResult
    )
    return result


# ------------------------------------------------------------------------------------------------- shutdown


async def start_shutdown(
    client: Client, *, task_queue: str, inp: ShutdownInput, request_id: str = ""
) -> WorkflowHandle[Any, ShutdownState]:
    """Start ``down/{run_id}``."""
    what = _listed(inp.services) if inp.services else "all"
    return await client.start_workflow(
        names.SYSTEM_SHUTDOWN,
        inp,
        id=names.down_id(inp.run_id),
        task_queue=task_queue,
        result_type=ShutdownState,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        memo={"actor": inp.actor, "request_id": request_id},
        search_attributes=_attributes("shutdown", actor=inp.actor, status=ShutdownStatus.PENDING.value),
        static_summary=f"shutdown of {what} by {inp.actor}" + (f": {inp.reason}" if inp.reason else ""),
    )


# ---------------------------------------------------------------------------------------------------- scale


async def start_scale(
    client: Client, *, task_queue: str, inp: ScaleInput, request_id: str = ""
) -> WorkflowHandle[Any, ScaleResult]:
    """Start ``scale/{service}``; WorkflowAlreadyStartedError while one runs (one scale of a service at a time)."""
    return await client.start_workflow(
        names.SERVICE_SCALE,
        inp,
        id=names.scale_id(inp.service_id),
        task_queue=task_queue,
        result_type=ScaleResult,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        memo={"actor": inp.actor, "request_id": request_id},
        search_attributes=_attributes("scale", service=inp.service_id, actor=inp.actor),
        static_summary=f"scale {inp.service_id}: {inp.previous} → {inp.target} replicas ({inp.actor})",
    )


# -------------------------------------------------------------------------------------------------- rollout


async def start_rollout(
    client: Client, *, task_queue: str, inp: RolloutInput, request_id: str = ""
) -> WorkflowHandle[Any, RolloutState]:
    """Start ``rollout/{service}``; raises ``WorkflowAlreadyStartedError`` while one runs (one at a time)."""
    return await client.start_workflow(
        names.CONFIG_ROLLOUT,
        inp,
        id=names.rollout_id(inp.service_id),
        task_queue=task_queue,
        result_type=RolloutState,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        memo={"actor": inp.actor, "request_id": request_id, "rollout_id": inp.rollout_id},
        search_attributes=_attributes(
            "rollout", service=inp.service_id, actor=inp.actor, status=RolloutStatus.PENDING.value
        ),
        static_summary=f"config rollout of {inp.service_id} by {inp.actor}"
        + (f": {inp.comment[:100]}" if inp.comment else ""),
    )


# ------------------------------------------------------------------------------------------------- control


async def start_control(
    client: Client, *, task_queue: str, inp: ControlInput, nonce: str, summary: str | None = None
) -> WorkflowHandle[Any, ControlResult]:
    """Start ``control/{service}/{nonce}``: an operator's start, stop or restart of one service."""
    return await client.start_workflow(
        names.SERVICE_CONTROL,
        inp,
        id=names.control_id(inp.service_id, nonce),
        task_queue=task_queue,
        result_type=ControlResult,
        memo={"actor": inp.actor},
        search_attributes=_attributes("control", service=inp.service_id, actor=inp.actor),
        static_summary=summary or f"{inp.action} {inp.service_id} by {inp.actor}",
    )


# ------------------------------------------------------------------------------------------------ recovery


@dataclass(frozen=True)
class RecoveryStarted:
    workflow_id: str
    run_id: str
    #: True when a recovery of the service was already running and this call joined it
    attached: bool
    #: the run this call started or joined
    handle: WorkflowHandle[Any, RecoveryResult]


async def start_recovery(
    client: Client,
    *,
    task_queue: str,
    service_id: str,
    reason: str,
    actor: str,
    source: str,
    request_id: str = "",
    confirm: bool = False,
) -> RecoveryStarted:
    """Start ``recover/{service}``, or join the running one: one recovery of a service at a time, whoever
    asks (operator, alert, watcher, sweep). ``confirm``: probe first and end without a restart when the
    service is healthy (alerts).

    Started with the conflict policy ``FAIL``: the server's refusal names the running run, so "joined" is
    known from the answer to this one call (``USE_EXISTING`` answers with a handle that does not say whether
    it started the run)."""
    workflow_id = names.recover_id(service_id)
    try:
        handle = await client.start_workflow(
            names.SERVICE_RECOVERY,
            RecoveryInput(service_id=service_id, reason=reason, actor=actor, source=source, confirm=confirm),
            id=workflow_id,
            task_queue=task_queue,
            result_type=RecoveryResult,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            memo={"actor": actor, "request_id": request_id},
            search_attributes=_attributes("recovery", service=service_id, actor=actor),
            static_summary=f"recovery of {service_id} by {actor}",
        )
    except WorkflowAlreadyStartedError as exc:
        joined = client.get_workflow_handle(workflow_id, run_id=exc.run_id, result_type=RecoveryResult)
        return RecoveryStarted(workflow_id=workflow_id, run_id=exc.run_id or "", attached=True, handle=joined)
    return RecoveryStarted(workflow_id=workflow_id, run_id=handle.result_run_id or "", attached=False, handle=handle)


# ------------------------------------------------------------------------------------------- any workflow


async def query_status(
    client: Client, workflow_id: str, result_type: type[T], *, timeout: timedelta | None = QUERY_TIMEOUT
) -> T:
    """The running workflow's ``status`` query, typed."""
    state: T = await client.get_workflow_handle(workflow_id).query(
        names.STATUS, result_type=result_type, rpc_timeout=timeout
    )
    return state


async def execution_status(client: Client, workflow_id: str) -> WorkflowExecutionStatus | None:
    """The status of the workflow's latest run; ``None`` when Temporal does not know the id."""
    try:
        desc = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return desc.status


async def is_running(client: Client, workflow_id: str) -> bool:
    return await execution_status(client, workflow_id) == WorkflowExecutionStatus.RUNNING
