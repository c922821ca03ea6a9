"""``ServiceScale`` (id ``scale/{service}``): bring a replicated service to the replica count its config says.

The API has saved the new count (``PATCH /services/{id}`` ``{"replicas": M}``, ``windflow scale SVC M``), which
created the rows of new replicas; this run makes the processes follow. Up: each replica ``SVC/K`` in index
order is started (one already running is left as it is), waited for until ready, then supervised as a service of
its own. Down: the highest index first,
each replica's supervision is paused, the replica stopped (stop signal, grace, SIGKILL of its group) and its row
removed. Every step is an idempotent activity, so a worker lost mid-way repeats at most the step in flight. One
scale of a service at a time: the API refuses a second while one runs.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from windflow.activities.runs import TemporalActivities
    from windflow.activities.services import ServiceActivities
    from windflow.domain import summaries
    from windflow.domain.contracts import (
        ScaleInput,
        ScaleResult,
        ServiceActionInput,
        SupervisorControlInput,
        WaitHealthyInput,
    )
    from windflow.domain.models import ServiceSpec
    from windflow.temporal import names
    from windflow.temporal import search_attributes as sa
    from windflow.workflows import _policies as policies


@workflow.defn(name=names.SERVICE_SCALE)
class ServiceScale:
    def __init__(self) -> None:
        self.result: ScaleResult | None = None

    @workflow.query(name=names.STATUS)
    def status(self) -> ScaleResult | None:
        return self.result

    @workflow.run
    async def run(self, input: ScaleInput) -> ScaleResult:
        workflow.upsert_search_attributes(
            [sa.KIND.value_set("scale"), sa.SERVICE.value_set(input.service_id), sa.ACTOR.value_set(input.actor)]
        )
        plan = await workflow.execute_activity_method(
            ServiceActivities.scale_plan,
            input,
            summary=f"plan: {input.target} replicas of {input.service_id}",
            start_to_close_timeout=policies.STORE_TIMEOUT,
            heartbeat_timeout=policies.CONTROL_HEARTBEAT,
            retry_policy=policies.STORE_RETRY,
        )
        if plan.spec is None:
            return ScaleResult(
                service_id=input.service_id,
                replicas=0,
                ok=False,
                message="not a replicated service (deleted meanwhile?)",
            )
        spec = plan.spec
        target = spec.replicas or 0
        self.result = ScaleResult(service_id=spec.id, replicas=target)
        try:
            for k in sorted(k for k in plan.existing if k >= target)[::-1]:  # down: the highest index first
                await self._stop(spec, k, input.actor)
            for k in range(target):  # up, in order: the new ones start; the others are found running (idempotent)
                await self._start(spec, k, input)
        except ActivityError as exc:
            self.result.ok = False
            self.result.message = policies.error_text(exc)
            return self.result
        parts = [f"started {', '.join(self.result.started)}"] if self.result.started else []
        parts += [f"stopped {', '.join(self.result.stopped)}"] if self.result.stopped else []
        self.result.message = f"{spec.id}: {target} replicas" + (f" ({'; '.join(parts)})" if parts else "")
        return self.result

    async def _start(self, spec: ServiceSpec, index: int, input: ScaleInput) -> None:
        unit = spec.replica_spec(index)
        started = await policies.execute_on_host(
            unit,
            ServiceActivities.start_service,
            ServiceActionInput(spec=unit, source="user", actor=input.actor),
            summary=summaries.start(unit),
            start_to_close_timeout=policies.CONTROL_TIMEOUT,
            heartbeat_timeout=policies.CONTROL_HEARTBEAT,
            retry_policy=policies.CONTROL_RETRY,
        )
        probe = unit.readiness_spec()
        await policies.execute_on_host(
            unit,
            ServiceActivities.wait_healthy,
            WaitHealthyInput(spec=unit, timeout=input.timeout, source="user"),
            summary=summaries.wait_healthy(unit),
            start_to_close_timeout=timedelta(seconds=input.timeout + 60),
            heartbeat_timeout=max(policies.WAIT_HEARTBEAT, timedelta(seconds=3 * (probe.interval if probe else 1))),
            retry_policy=policies.WAIT_RETRY,
        )
        if unit.monitored:
            await workflow.execute_activity_method(
                TemporalActivities.resume_supervisor,
                SupervisorControlInput(
                    service_id=unit.id,
                    actor=input.actor,
                    reason=f"scaled up by {input.actor}",
                    task_queue=workflow.info().task_queue,
                ),
                summary=f"supervise {unit.id}",
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=policies.STORE_RETRY,
            )
        assert self.result is not None
        if started.result.changed:
            self.result.started.append(unit.id)

    async def _stop(self, spec: ServiceSpec, index: int, actor: str) -> None:
        unit = spec.replica_spec(index)
        why = f"scaled down by {actor}"
        await workflow.execute_activity_method(
            TemporalActivities.pause_supervisor,
            SupervisorControlInput(service_id=unit.id, actor=actor, reason=why, task_queue=workflow.info().task_queue),
            summary=f"pause supervision of {unit.id} ({why})",
            start_to_close_timeout=policies.STORE_TIMEOUT * 4,
            retry_policy=policies.STORE_RETRY,
        )
        await policies.execute_on_host(
            unit,
            ServiceActivities.stop_service,
            ServiceActionInput(spec=unit, source="user", actor=actor),
            summary=summaries.stop(unit, why),
            start_to_close_timeout=policies.CONTROL_TIMEOUT + timedelta(seconds=unit.process_grace()),
            heartbeat_timeout=policies.CONTROL_HEARTBEAT,
            retry_policy=policies.CONTROL_RETRY,
        )
        await workflow.execute_activity_method(
            ServiceActivities.remove_replica,
            unit.id,
            summary=f"remove {unit.id} from the registry",
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )
        assert self.result is not None
        self.result.stopped.append(unit.id)
