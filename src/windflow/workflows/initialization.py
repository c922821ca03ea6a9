"""``SystemInitialization`` (id ``init/{run_id}``): bring a system up in dependency order.

validate → plan (topological layers) → start each component as soon as all of its dependencies are
healthy (not layer by layer) → wait until healthy → summary. Live state through the ``status`` query;
``retry_component`` update; cancellation rolls back (stops what this run started, dependants first)
unless ``on_cancel=leave_running``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from windflow.activities.records import RecordActivities
    from windflow.activities.runs import TemporalActivities
    from windflow.activities.services import ServiceActivities
    from windflow.domain import summaries
    from windflow.domain.contracts import (
        TERMINAL_INIT,
        AwaitWorkflowInput,
        ComponentState,
        ComponentStatus,
        InitInput,
        InitState,
        InitStatus,
        RecordInitInput,
        RetryComponentInput,
        RetryComponentResult,
        RunJobInput,
        RunJobResult,
        ServiceActionInput,
        SupervisorsInput,
        ValidateSystemInput,
        ValidateSystemResult,
        WaitHealthyInput,
    )
    from windflow.domain.graph import dependants
    from windflow.domain.models import DependencyCondition, ServiceSpec
    from windflow.temporal import names
    from windflow.temporal import search_attributes as sa
    from windflow.workflows import _policies as policies

#: components starting at once when the options do not say (only systems larger than this notice it)
DEFAULT_PARALLELISM = 100
DONE = {
    ComponentStatus.HEALTHY,
    ComponentStatus.FAILED,
    ComponentStatus.SKIPPED,
    ComponentStatus.STOPPED,
    ComponentStatus.COMPLETED,
}
#: a dependency counts as started in these statuses
STARTED = {ComponentStatus.WAITING_HEALTHY, ComponentStatus.HEALTHY, ComponentStatus.RUNNING, ComponentStatus.COMPLETED}


def condition_met(dep: ComponentState, condition: str) -> bool:
    """Whether a dependency's state meets the condition a dependant put on it."""
    if condition == DependencyCondition.STARTED:
        return dep.status in STARTED
    if condition == DependencyCondition.COMPLETED_SUCCESSFULLY:
        return dep.status == ComponentStatus.COMPLETED
    if dep.kind == "job":  # healthy: its probe passed while it ran, or it completed
        return dep.status == ComponentStatus.COMPLETED or (
            dep.status == ComponentStatus.RUNNING and dep.healthy_at is not None
        )
    return dep.status == ComponentStatus.HEALTHY


def describe_plan(plan: list[list[str]], specs: dict[str, ServiceSpec]) -> str:
    """The start order, and the condition of every dependency edge (``api ← migrate: completed_successfully``)."""
    order = " | ".join(", ".join(layer) for layer in plan)
    edges = [
        f"{name} ← {', '.join(f'{d}: {c}' for d, c in specs[name].conditions().items())}"
        for layer in plan
        for name in layer
        if specs[name].depends_on
    ]
    return f"would start in this order: {order}" + (f"; conditions: {'; '.join(edges)}" if edges else "")


@workflow.defn(name=names.SYSTEM_INITIALIZATION)
class SystemInitialization:
    @workflow.init
    def __init__(self, input: InitInput) -> None:
        info = workflow.info()
        self.input = input
        self.state = InitState(
            run_id=input.run_id,
            workflow_id=info.workflow_id,
            actor=input.actor,
            options=input.options,
            started_at=workflow.now(),
        )
        self.specs: dict[str, ServiceSpec] = {}
        self.graph: dict[str, list[str]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.dirty = False
        self.retry_requested = False
        self.semaphore: asyncio.Semaphore | None = None
        self.pending_events: list[tuple[str, dict[str, Any]]] = []
        self.changed: set[str] = set()  # components changed since the last record (see _flush)
        self.recorded_plan = False  # a record with the whole plan and every component was written
        self.publisher: asyncio.Task[None] | None = None
        self.publish_wakeup = False
        self.closing = False

    # ----------------------------------------------------------------- queries and updates

    @workflow.query(name=names.STATUS)
    def status(self) -> InitState:
        return self.state

    @workflow.update(name=names.RETRY_COMPONENT)
    async def retry_component(self, req: RetryComponentInput) -> RetryComponentResult:
        comp = self.state.components[req.component]
        comp.status = ComponentStatus.PENDING
        comp.last_error = None
        comp.finished_at = None
        for name in dependants(self.graph, req.component):
            other = self.state.components.get(name)
            if other is not None and other.status == ComponentStatus.SKIPPED:
                other.status = ComponentStatus.PENDING
                other.last_error = None
                self.changed.add(name)
        self.retry_requested = True
        self.dirty = True
        self._emit(req.component, f"retry of {req.component} requested")
        return RetryComponentResult(accepted=True, message=f"{req.component} will be retried")

    @retry_component.validator
    def _validate_retry(self, req: RetryComponentInput) -> None:
        comp = self.state.components.get(req.component)
        if comp is None:
            raise ValueError(f"{req.component!r} is not part of this initialization")
        if comp.status != ComponentStatus.FAILED:
            raise ValueError(f"{req.component!r} is {comp.status.value}, only a FAILED component can be retried")
        if self.state.status in (InitStatus.CANCELLING, InitStatus.CANCELLED, InitStatus.SUCCEEDED):
            raise ValueError(f"the initialization is {self.state.status.value}")

    # ----------------------------------------------------------------- run

    @workflow.run
    async def run(self, input: InitInput) -> InitState:
        self.publisher = asyncio.create_task(self._publish_loop())
        options = input.options
        try:
            if input.wait_for:
                self._set_status(InitStatus.PENDING, f"queued after {input.wait_for}")
                await workflow.execute_activity_method(
                    TemporalActivities.await_workflow,
                    AwaitWorkflowInput(workflow_id=input.wait_for),
                    summary=f"wait for {input.wait_for} to finish first",
                    start_to_close_timeout=timedelta(seconds=options.overall_timeout),
                    heartbeat_timeout=policies.WAIT_HEARTBEAT,
                    retry_policy=policies.STORE_RETRY,
                )
            self._set_status(InitStatus.VALIDATING, "validating configs and the dependency graph")
            validation = await workflow.execute_activity_method(
                ServiceActivities.validate_system,
                ValidateSystemInput(components=options.components),
                summary="validate configs and the dependency graph",
                start_to_close_timeout=policies.STORE_TIMEOUT,
                retry_policy=policies.STORE_RETRY,
            )
            if not validation.valid:
                self.state.problems = validation.problems
                first = validation.problems[0] if validation.problems else {"msg": "invalid"}
                where = ".".join(str(p) for p in first.get("loc", []))
                return await self._finish(InitStatus.FAILED, f"validation failed: {where}: {first.get('msg')}")
            self._plan(validation)
            if options.validate_only:
                return await self._finish(InitStatus.SUCCEEDED, f"valid; {describe_plan(validation.plan, self.specs)}")
            self._limit_parallelism(options.parallelism)
            self._set_status(InitStatus.RUNNING, f"starting {len(self.specs)} components")
            deadline = workflow.now() + timedelta(seconds=options.overall_timeout)
            while True:
                timed_out = not await self._drive(deadline)
                failed = [c.name for c in self.state.components.values() if c.status == ComponentStatus.FAILED]
                if timed_out:
                    return await self._finish(
                        InitStatus.FAILED, f"overall timeout of {options.overall_timeout:g}s reached"
                    )
                if not failed:
                    jobs = any(c.kind == "job" for c in self.state.components.values())
                    return await self._finish(
                        InitStatus.SUCCEEDED, "all components healthy" + (", jobs completed" if jobs else "")
                    )
                if options.retry_window <= 0:
                    return await self._finish(InitStatus.FAILED, f"failed: {', '.join(failed)}")
                await self._supervise_healthy()
                self.state.awaiting_retry_until = workflow.now() + timedelta(seconds=options.retry_window)
                self._set_status(InitStatus.FAILED, f"failed: {', '.join(failed)}; awaiting retry_component")
                self.retry_requested = False
                try:
                    await workflow.wait_condition(
                        lambda: self.retry_requested,
                        timeout=timedelta(seconds=options.retry_window),
                        timeout_summary=f"wait {summaries.seconds(options.retry_window)} for retry_component "
                        f"({', '.join(failed)} failed)",
                    )
                except TimeoutError:
                    return await self._finish(InitStatus.FAILED, f"failed: {', '.join(failed)}")
                self.state.awaiting_retry_until = None
                self._set_status(InitStatus.RUNNING, "retrying")
        except (asyncio.CancelledError, CancelledError):
            await self._compensate()
            raise

    def _plan(self, validation: ValidateSystemResult) -> None:
        """The components in their layers, each waiting; the run searchable by the services it starts."""
        self.specs = {s.id: s for s in validation.specs}
        self.graph = {s.id: list(s.depends_on) for s in validation.specs}
        self.state.plan = validation.plan
        for layer_no, layer in enumerate(validation.plan):
            for name in layer:
                spec = self.specs[name]
                self.state.components[name] = ComponentState(
                    name=name,
                    layer=layer_no,
                    depends_on=self.graph[name],
                    conditions=spec.conditions(),
                    kind=spec.kind.value,
                )
        if workflow.patched("bounded-search-attributes"):
            # a system of any size: the list is cut to the engine's value limit, the count is exact
            workflow.upsert_search_attributes(
                [
                    sa.SERVICES.value_set(sa.bounded_keywords(sorted(self.specs))),
                    sa.SERVICE_COUNT.value_set(len(self.specs)),
                ]
            )
        else:
            workflow.upsert_search_attributes([sa.SERVICES.value_set(sorted(self.specs))])

    def _limit_parallelism(self, parallelism: int | None) -> None:
        if parallelism:
            self.semaphore = asyncio.Semaphore(parallelism)
        elif len(self.specs) > DEFAULT_PARALLELISM and workflow.patched("default-parallelism"):
            # thousands of components at once make workflow tasks that each carry thousands of results:
            # long enough for the SDK's deadlock detector on a busy machine. A bounded number in flight
            # keeps every task small; a smaller system is not affected
            self.semaphore = asyncio.Semaphore(DEFAULT_PARALLELISM)

    async def _drive(self, deadline: datetime) -> bool:
        """Start whatever is ready until nothing runs. False when the overall deadline passed."""
        while True:
            self._schedule()
            if not self.tasks:
                return True
            remaining = (deadline - workflow.now()).total_seconds()
            if remaining <= 0:
                for name, task in list(self.tasks.items()):
                    task.cancel()
                    comp = self.state.components[name]
                    comp.status = ComponentStatus.FAILED
                    comp.last_error = "overall timeout"
                await asyncio.gather(*self.tasks.values(), return_exceptions=True)
                self.tasks.clear()
                return False
            self.dirty = False
            try:
                await workflow.wait_condition(
                    lambda: self.dirty,
                    timeout=timedelta(seconds=remaining),
                    timeout_summary=summaries.cut(
                        f"overall deadline, in {summaries.seconds(round(remaining))}, "
                        f"while {', '.join(sorted(self.tasks))} start"
                    ),
                )
            except TimeoutError:
                continue

    def _schedule(self) -> None:
        comps = self.state.components
        stop_mode = self.input.options.on_failure == "stop"
        any_failed = any(c.status == ComponentStatus.FAILED for c in comps.values())
        for name in sorted(comps, key=lambda n: (comps[n].layer, n)):
            comp = comps[name]
            if comp.status != ComponentStatus.PENDING or name in self.tasks:
                continue
            gone = (ComponentStatus.FAILED, ComponentStatus.SKIPPED)
            blocked = [d for d in comp.depends_on if comps[d].status in gone]
            if blocked:
                comp.status = ComponentStatus.SKIPPED
                comp.last_error = f"dependency {blocked[0]} did not come up"
                self._emit(name)
                continue
            if stop_mode and any_failed:
                continue  # start nothing new; what remains is skipped below once nothing runs
            if all(
                condition_met(comps[d], comp.conditions.get(d, DependencyCondition.HEALTHY)) for d in comp.depends_on
            ):
                self.tasks[name] = asyncio.create_task(self._component(name))
        if stop_mode and any_failed and not self.tasks:
            for comp in comps.values():
                if comp.status == ComponentStatus.PENDING:
                    comp.status = ComponentStatus.SKIPPED
                    comp.last_error = "the run stopped after a failure"
                    self._emit(comp.name)
        self._update_progress()

    async def _component(self, name: str) -> None:
        comp = self.state.components[name]
        options = self.input.options
        try:
            if self.semaphore is not None:
                await self.semaphore.acquire()
            try:
                comp.attempts += 1
                comp.status = ComponentStatus.STARTING
                comp.started_at = workflow.now()
                comp.last_error = None
                self._emit(name)
                spec = self.specs[name]
                if comp.attempts > 1:  # a retry picks up the config as it is now (it may have been fixed)
                    spec = await workflow.execute_activity_method(
                        ServiceActivities.load_service,
                        name,
                        start_to_close_timeout=policies.STORE_TIMEOUT,
                        retry_policy=policies.STORE_RETRY,
                        summary=f"load {name}'s current config for the retry",
                    )
                    self.specs[name] = spec
                if spec.is_job and workflow.patched("init-jobs"):
                    await self._job(name, spec)
                    return
                started = await policies.execute_on_host(
                    spec,
                    ServiceActivities.start_service,
                    ServiceActionInput(
                        spec=spec, source="initialization", run_id=self.state.run_id, actor=self.state.actor
                    ),
                    start_to_close_timeout=policies.CONTROL_TIMEOUT,
                    heartbeat_timeout=policies.CONTROL_HEARTBEAT,
                    retry_policy=policies.CONTROL_RETRY,
                    summary=summaries.start(spec, comp.attempts),
                )
                comp.pid = started.result.pid
                comp.started_by_run = comp.started_by_run or started.result.changed
                comp.status = ComponentStatus.WAITING_HEALTHY
                self._wake_started(name)
                self._emit(name)
                interval = spec.health.interval if spec.health else 1.0
                await policies.execute_on_host(
                    spec,
                    ServiceActivities.wait_healthy,
                    WaitHealthyInput(spec=spec, timeout=options.component_timeout, run_id=self.state.run_id),
                    start_to_close_timeout=timedelta(seconds=options.component_timeout + 60),
                    heartbeat_timeout=max(policies.WAIT_HEARTBEAT, timedelta(seconds=3 * interval)),
                    retry_policy=policies.WAIT_RETRY,
                    summary=summaries.wait_healthy(spec),
                    # a rollback must not race a probe loop that would record the stop as a failure
                    cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                )
                comp.status = ComponentStatus.HEALTHY
                comp.healthy_at = workflow.now()
                comp.finished_at = comp.healthy_at
                self._emit(name)
            finally:
                if self.semaphore is not None:
                    self.semaphore.release()
        except ActivityError as exc:
            comp.status = ComponentStatus.FAILED
            comp.last_error = policies.error_text(exc)
            comp.finished_at = workflow.now()
            self._emit(name)
        finally:
            self.tasks.pop(name, None)
            self.dirty = True

    def _wake_started(self, name: str) -> None:
        """``name`` just started: the scheduler looks again if a dependant waits only for that (no extra wake-up,
        so no extra timer, for a run without such a condition: its history replays as before)."""
        if any(c.conditions.get(name) == DependencyCondition.STARTED for c in self.state.components.values()):
            self.dirty = True

    async def _job(self, name: str, spec: ServiceSpec) -> None:
        """Run a job to completion, retried under its restart policy; with a probe, its dependants that wait for
        it to be ``healthy`` may start once the probe passes while it runs."""
        comp = self.state.components[name]
        comp.status = ComponentStatus.RUNNING
        comp.healthy_at = None
        comp.started_by_run = True
        self._wake_started(name)
        self._emit(name)
        policy = spec.restart
        result = RunJobResult(succeeded=False)
        for attempt in range(1, policy.max_attempts + 1):
            if attempt > 1:
                comp.attempts += 1  # shown as the component's attempts
                delay = policy.jittered(policy.delay_before(attempt), workflow.random().random())
                comp.last_error = f"{result.message}; attempt {attempt} of {policy.max_attempts} in {delay:.3g}s"
                self._emit(name)
                if delay > 0:
                    await workflow.sleep(delay, summary=summaries.backoff(delay, attempt))
            ready: asyncio.Task[None] | None = None
            if spec.readiness_spec() is not None:
                ready = asyncio.create_task(self._job_ready(name, spec))
            try:
                result = await policies.execute_on_host(
                    spec,
                    ServiceActivities.run_job,
                    RunJobInput(service_id=name, run_id=self.state.run_id, attempt=attempt),
                    summary=summaries.cut(
                        f"run job {name}{summaries.where(spec)}"
                        + summaries.attempt_suffix(attempt, policy.max_attempts if policy.max_attempts > 1 else None)
                    ),
                    start_to_close_timeout=timedelta(
                        seconds=(spec.timeout or self.input.options.component_timeout) + spec.process_grace() + 60
                    ),
                    heartbeat_timeout=policies.CONTROL_HEARTBEAT,
                    retry_policy=policies.WAIT_RETRY,
                )
            finally:
                if ready is not None and not ready.done():
                    ready.cancel()
            comp.exit_code = result.exit_code
            comp.duration = result.duration
            comp.log_tail = result.log_tail
            comp.pid = result.pid or comp.pid
            if result.succeeded:
                comp.status = ComponentStatus.COMPLETED
                comp.last_error = result.message if result.skipped else None
                comp.finished_at = workflow.now()
                self._emit(name, result.message)
                return
        comp.status = ComponentStatus.FAILED
        comp.last_error = result.message + (
            f" (after {policy.max_attempts} attempts)" if policy.max_attempts > 1 else ""
        )
        comp.finished_at = workflow.now()
        self._emit(name)

    async def _job_ready(self, name: str, spec: ServiceSpec) -> None:
        """A running job's probe passed: dependants waiting for it to be healthy may start."""
        try:
            await policies.execute_on_host(
                spec,
                ServiceActivities.wait_healthy,
                WaitHealthyInput(
                    spec=spec,
                    timeout=self.input.options.component_timeout,
                    run_id=self.state.run_id,
                    require_running=False,
                ),
                summary=summaries.cut(
                    f"wait until job {name} is ready ({summaries.probe_label(summaries.readiness(spec))})"
                ),
                start_to_close_timeout=timedelta(seconds=self.input.options.component_timeout + 60),
                heartbeat_timeout=policies.WAIT_HEARTBEAT,
                retry_policy=policies.WAIT_RETRY,
            )
        except (ActivityError, asyncio.CancelledError, CancelledError):
            return
        comp = self.state.components[name]
        if comp.status == ComponentStatus.RUNNING:
            comp.healthy_at = workflow.now()
            self.dirty = True
            self._emit(name, f"{name} is healthy (still running)")

    # ----------------------------------------------------------------- cancellation

    async def _compensate(self) -> None:
        self._set_status(InitStatus.CANCELLING, "cancelling")
        for task in list(self.tasks.values()):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for comp in self.state.components.values():
            if comp.status not in DONE:
                comp.status = ComponentStatus.SKIPPED if not comp.started_by_run else comp.status
                comp.last_error = comp.last_error or "cancelled"
        if self.input.options.on_cancel == "rollback":
            started = {n for n, c in self.state.components.items() if c.started_by_run}
            for layer in reversed(self.state.plan):
                names = [n for n in layer if n in started]
                if not names:
                    continue
                await asyncio.gather(*(self._stop(n) for n in names))
        await self._finish(
            InitStatus.CANCELLED,
            "cancelled"
            + (
                ", started components stopped"
                if self.input.options.on_cancel == "rollback"
                else ", components left running"
            ),
        )

    async def _stop(self, name: str) -> None:
        comp = self.state.components[name]
        try:
            await policies.execute_on_host(
                self.specs[name],
                ServiceActivities.stop_service,
                ServiceActionInput(
                    spec=self.specs[name], source="initialization", run_id=self.state.run_id, actor=self.state.actor
                ),
                summary=summaries.stop(self.specs[name], "rollback of a cancelled initialization"),
                start_to_close_timeout=policies.CONTROL_TIMEOUT,
                heartbeat_timeout=policies.CONTROL_HEARTBEAT,
                retry_policy=policies.CONTROL_RETRY,
            )
            comp.status = ComponentStatus.STOPPED
        except ActivityError as exc:
            comp.last_error = f"rollback stop failed: {policies.error_text(exc)}"
        comp.finished_at = workflow.now()
        self._emit(name)

    # ----------------------------------------------------------------- state, events, summary

    def _update_progress(self) -> None:
        comps = self.state.components.values()
        if self.state.status == InitStatus.SUCCEEDED:
            self.state.progress = 100
        elif comps:
            done = sum(1 for c in comps if c.status in DONE)
            self.state.progress = min(99, int(100 * done / len(self.state.components)))

    def _set_status(self, status: InitStatus, message: str) -> None:
        self.state.status = status
        self.state.message = message
        if status == InitStatus.SUCCEEDED:  # the status query must never say SUCCEEDED at 99 % (batched progress)
            self.state.progress = 100
        workflow.upsert_search_attributes([sa.STATUS.value_set(status.value)])
        self._emit(None)

    def _emit(self, component: str | None, message: str | None = None) -> None:
        """Queue one event. What takes the whole system into account (progress, the run's current details) is
        computed once per batch, in ``_flush``: per event it made a workflow task of a thousand-component run
        quadratic, long enough to time out."""
        comp = self.state.components.get(component) if component else None
        data = {
            "run_id": self.state.run_id,
            "workflow_id": self.state.workflow_id,
            "status": self.state.status.value,
            "progress": self.state.progress,
            "component": component,
            "component_status": comp.status.value if comp else None,
            "message": message or (comp.last_error or "" if comp else self.state.message),
        }
        self.pending_events.append((str(workflow.uuid4()), data))
        if component:
            self.changed.add(component)
        self.publish_wakeup = True

    def _refresh(self) -> None:
        """Progress, and what the Temporal UI shows as the run's current details (where it stands, what it waits
        for): neither is part of the history, so when they are computed changes nothing on replay."""
        self._update_progress()
        header = f"**{self.state.status.value.lower()}**: {self.state.message}"
        workflow.set_current_details(
            header + ("\n\n" + summaries.progress(self.state.components) if self.state.components else "")
        )

    async def _publish_loop(self) -> None:
        """One writer: events reach the store (and the bus) in the order they happened, in batches."""
        while not self.closing:
            await workflow.wait_condition(lambda: self.publish_wakeup or self.closing)
            if self.publish_wakeup:
                await self._flush(final=False)

    async def _flush(self, *, final: bool) -> None:
        self.publish_wakeup = False
        batch, self.pending_events = self.pending_events, []
        self._refresh()
        for _, data in batch:  # the batch carries the progress at its publication
            data["progress"] = self.state.progress
        changed, self.changed = self.changed, set()
        activity_method = RecordActivities.record_initialization
        state = self.state
        if not final and self.recorded_plan and workflow.patched("record-init-changes"):
            # only what changed since the last record: the history grows with the changes, not with the system
            activity_method = RecordActivities.record_initialization_changes
            state = self.state.model_copy(
                update={"plan": [], "components": {n: c for n, c in self.state.components.items() if n in changed}}
            )
        elif self.state.plan:
            self.recorded_plan = True
        await workflow.execute_activity_method(
            activity_method,
            RecordInitInput(
                state=state,
                final=final,
                events=[d for _, d in batch],
                event_ids=[i for i, _ in batch],
                timestamp=workflow.now(),
            ),
            summary=("record the result: " + self.state.status.value.lower())
            if final
            else summaries.component_events(d for _, d in batch),
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )

    async def _supervise_healthy(self) -> None:
        """The queues of the components that came up have their watcher (idempotent; the activity keeps the name
        it had when it started supervisors)."""
        if not workflow.patched("supervise-after-init"):
            return
        names = [
            n
            for n, c in self.state.components.items()
            if c.status == ComponentStatus.HEALTHY and self.specs[n].monitored
        ]
        if not names or self.input.options.validate_only:
            return
        try:
            await workflow.execute_activity_method(
                TemporalActivities.ensure_supervisors,
                SupervisorsInput(
                    service_ids=names, task_queue=workflow.info().task_queue, actor=self.state.actor, resume=names
                ),
                summary=summaries.cut(f"watch {len(names)} healthy: {', '.join(sorted(names))}"),
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=policies.STORE_RETRY,
            )
        except ActivityError as exc:
            self.state.message += f" (watcher not started: {policies.error_text(exc)})"

    async def _finish(self, status: InitStatus, message: str) -> InitState:
        if status != InitStatus.CANCELLED:
            await self._supervise_healthy()
        self.state.finished_at = workflow.now()
        self._set_status(status, message)
        self.closing = True
        if self.publisher is not None:
            await asyncio.gather(self.publisher, return_exceptions=True)  # let an in-flight batch land first
        await self._flush(final=True)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if status == InitStatus.FAILED:
            raise ApplicationError(
                message, self.state.model_dump(mode="json"), type="InitializationFailed", non_retryable=True
            )
        assert status in TERMINAL_INIT
        return self.state
