"""``ServiceControl`` (id ``control/{service}``): a user's start/stop/restart, and ``RecoverySweep``.

A user's stop or restart first holds the service (``pause_supervisor``: a recovery in flight is cancelled, and
no recovery restarts it meanwhile), so windflow does not "recover" a service a human stops; the desired state
it then sets (``stopped`` / ``running``) is what the watcher and recoveries follow. ``RecoverySweep`` runs from
a Temporal Schedule and reconciles like a controller: every queue with services has its watcher
(``watch/{queue}``), every service desired running that is neither healthy nor in a recovery gets one
(``recover/{service}``), and a given-up service whose applied version changed is tried again.
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
        StartRecoveriesInput,
        SupervisorControlInput,
        SupervisorsInput,
        SweepInput,
        SweepResult,
        WaitHealthyInput,
        WatchersInput,
    )
    from windflow.domain.models import ServiceSpec
    from windflow.temporal import names
    from windflow.temporal import search_attributes as sa
    from windflow.workflows import _policies as policies

#: the sweep reconciles watchers and recoveries on demand (before: one supervisor per service)
WATCHERS_PATCH = "sweep-watchers"
#: an operator's start or restart releases its hold whatever the outcome (before: only once healthy)
RELEASE_PATCH = "control-release-hold"


@workflow.defn(name=names.SERVICE_CONTROL)
class ServiceControl:
    @workflow.run
    async def run(self, input: ControlInput) -> ControlResult:
        workflow.upsert_search_attributes(
            [sa.KIND.value_set("control"), sa.SERVICE.value_set(input.service_id), sa.ACTOR.value_set(input.actor)]
        )
        spec = await workflow.execute_activity_method(
            SupervisionActivities.load_spec_or_none,
            input.service_id,
            summary=f"load {input.service_id}",
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )
        if spec is None:
            return ControlResult(
                service_id=input.service_id, action=input.action, ok=False, message="service not found"
            )
        supervisor = SupervisorControlInput(
            service_id=spec.id,
            actor=input.actor,
            reason=f"{input.action} by {input.actor}",
            task_queue=workflow.info().task_queue,
        )
        supervision = "none"
        if input.action in ("stop", "restart"):
            paused = await workflow.execute_activity_method(
                TemporalActivities.pause_supervisor,
                supervisor,
                summary=f"pause supervision of {spec.id} ({input.action} by {input.actor})",
                start_to_close_timeout=timedelta(seconds=120),
                retry_policy=policies.STORE_RETRY,
            )
            supervision = "paused" if paused else "none"
        action = ServiceActionInput(spec=spec, source="user", actor=input.actor)
        if workflow.patched(RELEASE_PATCH):
            try:
                return await self.act(input, spec, action, supervisor, supervision)
            finally:
                if input.action != "stop":  # a stop's hold ends with desired stopped; a failed start is released
                    await workflow.execute_activity_method(
                        TemporalActivities.resume_supervisor,
                        supervisor,
                        summary=f"release {spec.id}",
                        start_to_close_timeout=timedelta(seconds=60),
                        retry_policy=policies.STORE_RETRY,
                    )
        return await self.act(input, spec, action, supervisor, supervision)

    async def act(
        self,
        input: ControlInput,
        spec: ServiceSpec,
        action: ServiceActionInput,
        supervisor: SupervisorControlInput,
        supervision: str,
    ) -> ControlResult:
        try:
            if input.action == "stop":
                done = await policies.execute_on_host(
                    spec,
                    ServiceActivities.stop_service,
                    action,
                    summary=summaries.stop(spec, f"by {input.actor}"),
                    start_to_close_timeout=policies.CONTROL_TIMEOUT,
                    heartbeat_timeout=policies.CONTROL_HEARTBEAT,
                    retry_policy=policies.CONTROL_RETRY,
                )
                return ControlResult(
                    service_id=spec.id, action="stop", ok=True, message=done.result.message, supervision=supervision
                )
            method = ServiceActivities.start_service if input.action == "start" else ServiceActivities.restart_service
            done = await policies.execute_on_host(
                spec,
                method,
                action,
                start_to_close_timeout=policies.CONTROL_TIMEOUT,
                summary=summaries.start(spec)
                if input.action == "start"
                else summaries.restart(spec, f"by {input.actor}"),
                heartbeat_timeout=policies.CONTROL_HEARTBEAT,
                retry_policy=policies.CONTROL_RETRY,
            )
            interval = spec.health.interval if spec.health else 1.0
            await policies.execute_on_host(
                spec,
                ServiceActivities.wait_healthy,
                WaitHealthyInput(spec=spec, timeout=input.timeout, source="user"),
                summary=summaries.wait_healthy(spec),
                start_to_close_timeout=timedelta(seconds=input.timeout + 60),
                heartbeat_timeout=max(policies.WAIT_HEARTBEAT, timedelta(seconds=3 * interval)),
                retry_policy=policies.WAIT_RETRY,
            )
        except ActivityError as exc:
            return ControlResult(
                service_id=spec.id,
                action=input.action,
                ok=False,
                message=policies.error_text(exc),
                supervision=supervision,
            )
        if spec.monitored and not workflow.patched(RELEASE_PATCH):
            supervision = await workflow.execute_activity_method(
                TemporalActivities.resume_supervisor,
                supervisor,
                summary=f"resume supervision of {spec.id}",
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=policies.STORE_RETRY,
            )
        elif spec.monitored:
            supervision = "resumed"  # released right after this returns
        return ControlResult(
            service_id=spec.id,
            action=input.action,
            ok=True,
            message="healthy",
            pid=done.result.pid,
            supervision=supervision,
        )


@workflow.defn(name=names.RECOVERY_SWEEP)
class RecoverySweep:
    @workflow.run
    async def run(self, input: SweepInput) -> SweepResult:
        workflow.upsert_search_attributes([sa.KIND.value_set("sweep"), sa.ACTOR.value_set(input.actor)])
        if workflow.patched(WATCHERS_PATCH):
            return await self.reconcile(input)
        retry: list[str] = []
        if workflow.patched("sweep-desired-state"):
            # desired state decides, not the last observed one; given-up services with a new version retry
            plan = await workflow.execute_activity_method(
                SupervisionActivities.sweep_plan,
                "",
                summary="plan: services that should run and given-up ones with a new version",
                start_to_close_timeout=policies.STORE_TIMEOUT,
                retry_policy=policies.STORE_RETRY,
            )
            ids, retry = plan.supervise, plan.retry
        else:
            monitored = await workflow.execute_activity_method(
                SupervisionActivities.list_monitored,
                "",
                summary="list monitored services",
                start_to_close_timeout=policies.STORE_TIMEOUT,
                retry_policy=policies.STORE_RETRY,
            )
            ids = [s.id for s in monitored]
        ensured = await workflow.execute_activity_method(
            TemporalActivities.ensure_supervisors,
            SupervisorsInput(service_ids=ids, task_queue=workflow.info().task_queue, actor=input.actor, resume=retry),
            summary=summaries.cut(f"supervise {len(ids)} services" + (f", retry {', '.join(retry)}" if retry else "")),
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=policies.STORE_RETRY,
        )
        stale = await workflow.execute_activity_method(
            TemporalActivities.stop_stale_supervisors,
            SupervisorsInput(service_ids=ids),
            summary="stop supervisors of services that should not run",
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=policies.STORE_RETRY,
        )
        return SweepResult(
            supervisors_started=ensured.started,
            supervisors_stopped=stale.stopped,
            retried=ensured.resumed,
            checked=len(ids),
            message=f"all {len(ids)} monitored services supervised",
        )

    async def reconcile(self, input: SweepInput) -> SweepResult:
        """Every queue with services has its watcher; every service desired running that is neither healthy nor
        in a recovery gets one; a given-up service whose applied version changed is tried again."""
        plan = await workflow.execute_activity_method(
            SupervisionActivities.sweep_plan,
            "",
            summary="plan: queues to watch, services to recover, given-up ones with a new version",
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )
        queue = workflow.info().task_queue
        watchers = await workflow.execute_activity_method(
            TemporalActivities.ensure_watchers,
            WatchersInput(task_queue=queue, hosts=[None, *(h or None for h in plan.hosts)], actor=input.actor),
            summary=summaries.cut(f"watch the queues of {len(plan.supervise)} services"),
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=policies.STORE_RETRY,
        )
        recover = sorted({*plan.recover, *plan.retry})
        if recover:
            await workflow.execute_activity_method(
                TemporalActivities.start_recoveries,
                StartRecoveriesInput(
                    service_ids=recover,
                    reason="sweep: desired running, not healthy",
                    actor=input.actor,
                    source="sweep",
                    task_queue=queue,
                ),
                summary=summaries.cut(f"recover {', '.join(recover)}"),
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=policies.STORE_RETRY,
            )
        parts = []
        if watchers.started:
            parts.append(f"started watchers: {', '.join(watchers.started)}")
        if watchers.terminated_supervisors:
            parts.append(f"ended supervisors of the previous version: {len(watchers.terminated_supervisors)}")
        if plan.recover:
            parts.append(f"recovering: {', '.join(plan.recover)}")
        if plan.retry:
            parts.append(f"tried again with a new version: {', '.join(plan.retry)}")
        return SweepResult(
            watchers_started=watchers.started,
            recoveries_started=recover,
            retried=plan.retry,
            supervisors_stopped=[s.removeprefix(names.SUPERVISE_PREFIX) for s in watchers.terminated_supervisors],
            checked=len(plan.supervise),
            message="; ".join(parts) or f"all {len(plan.supervise)} monitored services watched",
        )
