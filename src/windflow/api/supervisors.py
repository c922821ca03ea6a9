"""After a committed config change: the service's supervisor reloads, starts or stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from windflow.api.resources import Resources
from windflow.domain.contracts import SUPERVISABLE_STATES, SupervisorInput
from windflow.temporal import names
from windflow.temporal import search_attributes as sa
from windflow.workflows.supervision import ServiceSupervisor

log = logging.getLogger("windflow.api.supervisors")


async def tell_supervisor(resources: Resources, service_id: str, *, monitored: bool) -> None:
    """Signal ``policy_changed`` to a running supervisor (it reloads), or ``stop_supervision`` when the service is
    gone or no longer monitored; start one when the service became monitored. Best effort: the sweep reconciles."""
    try:
        client = await resources.temporal.get()
        handle = client.get_workflow_handle(names.supervise_id(service_id))
        try:
            running = (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            running = False
        if running and not monitored:  # deleted or no longer monitored: ends (a paused one too)
            await handle.signal(ServiceSupervisor.stop_supervision)
        elif running:
            await handle.signal(ServiceSupervisor.policy_changed)
        elif monitored and await _was_initialized(resources, service_id):
            await client.start_workflow(
                ServiceSupervisor.run, SupervisorInput(service_id=service_id), id=names.supervise_id(service_id),
                task_queue=resources.settings.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                search_attributes=TypedSearchAttributes([SearchAttributePair(sa.KIND, "supervisor"),
                                                         SearchAttributePair(sa.SERVICE, service_id)]),
                static_summary=f"supervises {service_id}")
    except Exception as exc:  # Temporal down: the next sweep reconciles
        log.warning("could not update the supervisor of %s: %s", service_id, exc)


async def _was_initialized(resources: Resources, service_id: str) -> bool:
    """Only a service windflow has brought up is supervised; a merely registered one is left alone."""
    from windflow.persistence.repositories import ServiceRepository

    async with resources.db.read() as session:
        row = await ServiceRepository().get(session=session, service_id=service_id)
    # a job (kind: job) runs to completion: it is never supervised
    return row is not None and row.state in SUPERVISABLE_STATES and (row.spec or {}).get("kind") != "job"


async def tell_supervisors(resources: Resources, changes: Sequence[tuple[str, bool]]) -> None:
    """:func:`tell_supervisor` for each ``(service_id, monitored)``, a few at a time."""
    gate = asyncio.Semaphore(16)

    async def one(service_id: str, monitored: bool) -> None:
        async with gate:
            await tell_supervisor(resources, service_id, monitored=monitored)

    await asyncio.gather(*(one(sid, monitored) for sid, monitored in changes))
