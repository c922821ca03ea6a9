"""``SystemShutdown`` (id ``down/{run_id}``): stop a system, or some services and their dependants, in reverse
dependency order.

plan (layers, dependants first) → for each layer, in parallel: pause the service's supervision (a stopped
service must stay stopped), then stop it (its ``stop_signal``, ``stop_grace``, then SIGKILL of the process group,
see the process driver) → summary. Live state through the ``status`` query; ``SHUTDOWN_UPDATE`` events.

Durable: every step is an idempotent activity, so a worker killed mid-way leaves the run to another worker,
which repeats at most the step in flight (stopping a stopped service changes nothing). Cancelling stops the
run where it is: services already stopped stay stopped, the rest are marked ``skipped`` and keep running.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError

with workflow.unsafe.imports_passed_through():
    from windflow.activities.runs import TemporalActivities
    from windflow.activities.services import ServiceActivities
    from windflow.activities.shutdown import ShutdownActivities
    from windflow.domain import summaries
    from windflow.domain.contracts import ServiceActionInput, SupervisorControlInput
    from windflow.domain.models import ServiceSpec
    from windflow.domain.shutdown import (
        RecordShutdownInput,
        ShutdownComponent,
        ShutdownInput,
        ShutdownState,
        ShutdownStatus,
        StopStatus,
    )
    from windflow.temporal import names
    from windflow.temporal import search_attributes as sa
    from windflow.workflows import _policies as policies

FINISHED = {StopStatus.STOPPED, StopStatus.FAILED, StopStatus.SKIPPED}


@workflow.defn(name=names.SYSTEM_SHUTDOWN)
class SystemShutdown:
    @workflow.init
    def __init__(self, input: ShutdownInput) -> None:
        self.input = input
        self.state = ShutdownState(
            run_id=input.run_id,
            workflow_id=workflow.info().workflow_id,
            actor=input.actor,
            reason=input.reason,
            requested=list(input.services),
            started_at=workflow.now(),
        )
        self.specs: dict[str, ServiceSpec] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.seq = 0

    @workflow.query(name=names.STATUS)
    def status(self) -> ShutdownState:
        return self.state

    @workflow.run
    async def run(self, input: ShutdownInput) -> ShutdownState:
        workflow.upsert_search_attributes(
            [
                sa.KIND.value_set("shutdown"),
                sa.ACTOR.value_set(input.actor),
                sa.STATUS.value_set(ShutdownStatus.STOPPING.value),
            ]
        )
        plan = await workflow.execute_activity_method(
            ShutdownActivities.plan_shutdown,
            list(input.services),
            summary="plan: "
            + (
                ", ".join(input.services[:5]) + (" …" if len(input.services) > 5 else "") + " and their dependants"
                if input.services
                else "every service"
            ),
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )
        if plan.unknown:
            return await self._finish(ShutdownStatus.FAILED, f"unknown services: {', '.join(plan.unknown)}")
        self.specs = {s.id: s for s in plan.specs}
        self.state.layers = plan.layers
        for i, layer in enumerate(plan.layers):
            for name in layer:
                self.state.components[name] = ShutdownComponent(
                    service_id=name, layer=i, requested=not input.services or name in input.services
                )
        self.state.status = ShutdownStatus.STOPPING
        self.state.message = f"stopping {len(self.specs)} services in {len(plan.layers)} layers"
        self._emit(None)
        await self._record()
        try:
            for i, layer in enumerate(plan.layers):
                self.state.message = f"layer {i + 1}/{len(plan.layers)}: {', '.join(layer)}"
                await asyncio.gather(*(self._stop_one(name) for name in layer))
                await self._record()
        except (asyncio.CancelledError, CancelledError):
            for comp in self.state.components.values():
                if comp.status not in FINISHED:
                    comp.status = StopStatus.SKIPPED
                    comp.message = comp.message or "not stopped: the shutdown was cancelled"
            await self._finish(ShutdownStatus.CANCELLED, "cancelled; services stopped so far stay stopped")
            raise
        failed = [n for n, c in self.state.components.items() if c.status == StopStatus.FAILED]
        if failed:
            return await self._finish(ShutdownStatus.FAILED, f"could not stop: {', '.join(sorted(failed))}")
        return await self._finish(ShutdownStatus.COMPLETED, f"stopped {len(self.specs)} services")

    async def _stop_one(self, name: str) -> None:
        spec = self.specs[name]
        comp = self.state.components[name]
        comp.status = StopStatus.STOPPING
        comp.started_at = workflow.now()
        self._emit(name)
        why = f"shutdown by {self.input.actor}" + (f": {self.input.reason}" if self.input.reason else "")
        try:
            await workflow.execute_activity_method(
                TemporalActivities.pause_supervisor,
                SupervisorControlInput(
                    service_id=name, actor=self.input.actor, reason=why, task_queue=workflow.info().task_queue
                ),
                summary=f"pause supervision of {name} ({why})",
                start_to_close_timeout=policies.STORE_TIMEOUT * 4,
                retry_policy=policies.STORE_RETRY,
            )
            done = await policies.execute_on_host(
                spec,
                ServiceActivities.stop_service,
                ServiceActionInput(spec=spec, source="shutdown", run_id=self.state.run_id, actor=self.input.actor),
                summary=summaries.stop(spec, why),
                start_to_close_timeout=policies.CONTROL_TIMEOUT + _grace(spec),
                heartbeat_timeout=policies.CONTROL_HEARTBEAT,
                retry_policy=policies.CONTROL_RETRY,
            )
            comp.status = StopStatus.STOPPED
            comp.message = done.result.message
        except ActivityError as exc:
            comp.status = StopStatus.FAILED
            comp.message = policies.error_text(exc)
        comp.finished_at = workflow.now()
        self._emit(name)

    def _progress(self) -> int:
        comps = self.state.components.values()
        if not comps:
            return 100 if self.state.status in (ShutdownStatus.COMPLETED,) else 0
        return int(100 * sum(1 for c in comps if c.status in FINISHED) / len(comps))

    def _emit(self, component: str | None) -> None:
        self.state.progress = self._progress()
        self.seq += 1
        comp = self.state.components.get(component) if component else None
        self.events.append(
            (
                f"{self.state.workflow_id}/{self.seq}",
                {
                    "run_id": self.state.run_id,
                    "workflow_id": self.state.workflow_id,
                    "status": self.state.status.value,
                    "progress": self.state.progress,
                    "component": component,
                    "component_status": comp.status.value if comp else None,
                    "message": comp.message if comp and comp.message else self.state.message,
                },
            )
        )

    async def _record(self, *, final: bool = False) -> None:
        batch, self.events = self.events, []
        await workflow.execute_activity_method(
            ShutdownActivities.record_shutdown,
            RecordShutdownInput(
                state=self.state,
                final=final,
                events=[d for _, d in batch],
                event_ids=[i for i, _ in batch],
                timestamp=workflow.now(),
            ),
            summary=f"record {self.state.status.value.lower()} {self.state.progress}%",
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )

    async def _finish(self, status: ShutdownStatus, message: str) -> ShutdownState:
        self.state.status = status
        self.state.message = message
        self.state.finished_at = workflow.now()
        self._emit(None)
        workflow.upsert_search_attributes([sa.STATUS.value_set(status.value)])
        await self._record(final=True)  # after a cancellation too: the request cancelled only the step in flight
        return self.state


def _grace(spec: ServiceSpec) -> timedelta:
    return timedelta(seconds=spec.process_grace())
