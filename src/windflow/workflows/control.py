"""``ServiceControl`` (id ``control/{service}``): a user's start/stop/restart, and ``RecoverySweep``.

A user's stop pauses supervision first, so windflow does not "recover" a service a human stopped; a
start resumes it once the service is healthy. ``RecoverySweep`` runs from a Temporal Schedule and
reconciles like a controller: every monitored service has a running supervisor, and supervisors of
services that are gone or no longer monitored stop.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from windflow.activities.runs import TemporalActivities
    from windflow.activities.services import ServiceActivities
    from windflow.activities.supervision import SupervisionActivities
    from windflow.domain import summaries
    from windflow.domain.contracts import (
        ControlInput,
        ControlResult,
        ServiceActionInput,
        SupervisorControlInput,
        SupervisorsInput,
        SweepInput,
        SweepResult,
        WaitHealthyInput,
    )
    from windflow.temporal import names
    from windflow.temporal import search_attributes as sa
    from windflow.workflows import _policies as policies


@workflow.defn(name=names.SERVICE_CONTROL)
class ServiceControl:
    @workflow.run
    async def run(self, input: ControlInput) -> ControlResult:
        workflow.upsert_search_attributes([sa.KIND.value_set("control"), sa.SERVICE.value_set(input.service_id),
                                           sa.ACTOR.value_set(input.actor)])
        spec = await workflow.execute_activity_method(
            SupervisionActivities.load_spec_or_none, input.service_id, summary=f"load {input.service_id}",
            start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY)
        if spec is None:
            return ControlResult(service_id=input.service_id, action=input.action, ok=False,
                                 message="service not found")
        supervisor = SupervisorControlInput(service_id=spec.id, actor=input.actor,
                                            reason=f"{input.action} by {input.actor}",
                                            task_queue=workflow.info().task_queue)
        supervision = "none"
        if input.action in ("stop", "restart"):
            paused = await workflow.execute_activity_method(
                TemporalActivities.pause_supervisor, supervisor,
                summary=f"pause supervision of {spec.id} ({input.action} by {input.actor})",
                start_to_close_timeout=timedelta(seconds=120), retry_policy=policies.STORE_RETRY)
            supervision = "paused" if paused else "none"
        action = ServiceActionInput(spec=spec, source="user", actor=input.actor)
        try:
            if input.action == "stop":
                done = await policies.execute_on_host(
                    spec, ServiceActivities.stop_service, action, summary=summaries.stop(spec, f"by {input.actor}"),
                    start_to_close_timeout=policies.CONTROL_TIMEOUT,
                    heartbeat_timeout=policies.CONTROL_HEARTBEAT, retry_policy=policies.CONTROL_RETRY)
                return ControlResult(service_id=spec.id, action="stop", ok=True, message=done.result.message,
                                     supervision=supervision)
            method = ServiceActivities.start_service if input.action == "start" else ServiceActivities.restart_service
            done = await policies.execute_on_host(
                spec, method, action, start_to_close_timeout=policies.CONTROL_TIMEOUT,
                summary=summaries.start(spec) if input.action == "start"
                else summaries.restart(spec, f"by {input.actor}"),
                heartbeat_timeout=policies.CONTROL_HEARTBEAT, retry_policy=policies.CONTROL_RETRY)
            interval = spec.health.interval if spec.health else 1.0
            await policies.execute_on_host(
                spec, ServiceActivities.wait_healthy,
                WaitHealthyInput(spec=spec, timeout=input.timeout, source="user"),
                summary=summaries.wait_healthy(spec),
                start_to_close_timeout=timedelta(seconds=input.timeout + 60),
                heartbeat_timeout=max(policies.WAIT_HEARTBEAT, timedelta(seconds=3 * interval)),
                retry_policy=policies.WAIT_RETRY)
        except ActivityError as exc:
            return ControlResult(service_id=spec.id, action=input.action, ok=False, message=policies.error_text(exc),
                                 supervision=supervision)
        if spec.monitored:
            supervision = await workflow.execute_activity_method(
                TemporalActivities.resume_supervisor, supervisor, summary=f"resume supervision of {spec.id}",
                start_to_close_timeout=timedelta(seconds=60), retry_policy=policies.STORE_RETRY)
        return ControlResult(service_id=spec.id, action=input.action, ok=True, message="healthy",
                             pid=done.result.pid, supervision=supervision)


@workflow.defn(name=names.RECOVERY_SWEEP)
class RecoverySweep:
    @workflow.run
    async def run(self, input: SweepInput) -> SweepResult:
        workflow.upsert_search_attributes([sa.KIND.value_set("sweep"), sa.ACTOR.value_set(input.actor)])
        retry: list[str] = []
        if workflow.patched("sweep-desired-state"):
            # desired state decides, not the last observed one; given-up services with a new version retry
            plan = await workflow.execute_activity_method(
                SupervisionActivities.sweep_plan, "", summary="plan: services that should run and given-up ones "
                "with a new version", start_to_close_timeout=policies.STORE_TIMEOUT,
                retry_policy=policies.STORE_RETRY)
            ids, retry = plan.supervise, plan.retry
        else:
            monitored = await workflow.execute_activity_method(
                SupervisionActivities.list_monitored, "", summary="list monitored services",
                start_to_close_timeout=policies.STORE_TIMEOUT,
                retry_policy=policies.STORE_RETRY)
            ids = [s.id for s in monitored]
        ensured = await workflow.execute_activity_method(
            TemporalActivities.ensure_supervisors,
            SupervisorsInput(service_ids=ids, task_queue=workflow.info().task_queue, actor=input.actor,
                             resume=retry),
            summary=summaries.cut(f"supervise {len(ids)} services" + (f", retry {', '.join(retry)}" if retry else "")),
            start_to_close_timeout=timedelta(minutes=10), heartbeat_timeout=timedelta(seconds=60),
            retry_policy=policies.STORE_RETRY)
        stale = await workflow.execute_activity_method(
            TemporalActivities.stop_stale_supervisors, SupervisorsInput(service_ids=ids),
            summary="stop supervisors of services that should not run",
            start_to_close_timeout=timedelta(minutes=10), retry_policy=policies.STORE_RETRY)
        parts = []
        if ensured.started:
            parts.append(f"started supervisors: {', '.join(ensured.started)}")
        if stale.stopped:
            parts.append(f"stopped supervisors: {', '.join(stale.stopped)}")
        if ensured.resumed:
            parts.append(f"tried again with a new version: {', '.join(ensured.resumed)}")
        return SweepResult(supervisors_started=ensured.started, supervisors_stopped=stale.stopped,
                           retried=ensured.resumed, checked=len(ids),
                           message="; ".join(parts) or f"all {len(ids)} monitored services supervised")
