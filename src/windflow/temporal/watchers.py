"""Client-side door to the watchers (``watch/{queue}``) and recoveries (``recover/{service}``).

Whoever changes what should run — the worker as it starts, an initialization, an operator's start or stop, a
rollout, the API after a registry change, ``windflow up``, the sweep — makes sure the queue's watcher runs
(``ensure_watcher``: one start RPC that joins a running watcher). The watcher notices the change itself
through the registry's change stamp.

Upgrade path: deployments of the previous version run one ``supervise/{service}`` workflow per service.
``end_supervisors`` terminates them (with a reason naming the replacement); a starting worker and
``windflow db upgrade`` call it, and the watcher then takes the services over.
"""

from __future__ import annotations

import logging
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from windflow.domain.contracts import RecoveryInput, WatcherInput, WatchResult
from windflow.temporal import names
from windflow.temporal import search_attributes as sa

log = logging.getLogger(__name__)

SUPERVISOR_PREFIX = names.SUPERVISE_PREFIX
SUPERVISORS_ENDED = (
    "replaced by the watcher model: watch/{queue} observes every service of its queue and "
    "starts recover/{service} on demand"
)


watcher_queue = names.watcher_queue
watcher_id = names.watch_id
recovery_id = names.recover_id


async def ensure_watcher(
    client: Client, *, task_queue: str, host: str | None = None, heartbeat_timeout: float = 5.0
) -> WorkflowHandle[Any, Any]:
    """Start ``watch/{queue}`` for the shared queue (``host=None``) or a host's queue, unless it runs."""
    queue = watcher_queue(task_queue, host)
    return await client.start_workflow(
        names.WATCHER,
        WatcherInput(queue=queue, host=host, heartbeat_timeout=heartbeat_timeout),
        id=watcher_id(queue),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [SearchAttributePair(sa.KIND, "watcher"), SearchAttributePair(sa.STATE, "watching")]
        ),
        static_summary=f"watches every service of {f'host {host}' if host else 'the shared queue'} ({queue})",
    )


async def ensure_watchers(client: Client, *, task_queue: str, hosts: set[str | None]) -> list[str]:
    """``ensure_watcher`` for each host (None: the shared queue); the ids of the watchers."""
    out = []
    for host in sorted(hosts, key=lambda h: h or ""):
        handle = await ensure_watcher(client, task_queue=task_queue, host=host)
        out.append(handle.id)
    return out


async def start_recovery(
    client: Client,
    *,
    task_queue: str,
    service_id: str,
    reason: str,
    actor: str,
    source: str,
    confirm: bool = False,
    verdict: WatchResult | None = None,
) -> WorkflowHandle[Any, Any]:
    """Start ``recover/{service}``, or join the one that runs (``verdict``: what a watcher observed)."""
    return await client.start_workflow(
        names.SERVICE_RECOVERY,
        RecoveryInput(
            service_id=service_id, reason=reason, actor=actor, source=source, confirm=confirm, verdict=verdict
        ),
        id=recovery_id(service_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa.KIND, "recovery"),
                SearchAttributePair(sa.SERVICE, service_id),
                SearchAttributePair(sa.ACTOR, actor),
            ]
        ),
        static_summary=f"recovers {service_id} ({source}: {reason})"[:200],
    )


async def end_supervisors(client: Client, *, reason: str = SUPERVISORS_ENDED) -> list[str]:
    """Terminate every running ``supervise/{service}`` workflow of the previous version; their ids."""
    ended: list[str] = []
    async for execution in client.list_workflows("WindflowKind = 'supervisor' AND ExecutionStatus = 'Running'"):
        if not execution.id.startswith(SUPERVISOR_PREFIX):
            continue
        try:
            await client.get_workflow_handle(execution.id).terminate(reason=reason)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            continue
        ended.append(execution.id)
    if ended:
        log.info("ended %d supervisor workflow(s) of the previous version: %s", len(ended), ", ".join(ended))
    return ended
