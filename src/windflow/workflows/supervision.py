"""``ServiceRecovery`` (id ``recover/{service}``): one recovery of one service, on demand.

The queue's watcher (``watch/{queue}``, see ``workflows.watch``) starts it when what it observes differs from
what is desired, with its verdict; the API's ``recover``, alert hooks and the sweep start the same id. Every
start uses the conflict policy USE_EXISTING, so any number of triggers make one recovery. It restarts with
backoff (cap and jitter), counts attempts (carried from the last recovery until the service was healthy for
``reset_after``), stops at the start limit (``on_give_up``: escalate, escalate_and_retry, ask an operator),
takes the global restart budget, and does not restart a service whose dependency is not healthy (``blocked``,
re-gated when the dependency is back). It never restarts a service desired stopped or held by an operator
path, and always runs the applied version. It ends when the service is healthy again, or gave up with no
decision pending: healthy services have no open workflow.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from windflow.activities.records import RecordActivities
    from windflow.activities.runs import TemporalActivities
    from windflow.activities.services import ServiceActivities
    from windflow.activities.supervision import SupervisionActivities
    from windflow.domain import summaries
    from windflow.domain.contracts import (
        AlertsIgnoredInput,
        AwaitSupervisorInput,
        DecisionInput,
        DependencyCheckInput,
        NotifyInput,
        RecordSupervisionInput,
        RecoverStepInput,
        RecoveryInput,
        RecoveryResult,
        ServiceActionInput,
        StartRecoveriesInput,
        SupervisionState,
        SupervisorStatus,
        WaitDependenciesInput,
    )
    from windflow.domain.models import GiveUp, ServiceSpec
    from windflow.domain.notifications import Notification, NotificationKind
    from windflow.domain.status import SUPERVISION_STATUS
    from windflow.temporal import names
    from windflow.temporal import search_attributes as sa
    from windflow.workflows import _policies as policies

#: the service state column (and `GET /services?state=`) for each supervision state
SERVICE_STATE = {state: status.value for state, status in SUPERVISION_STATUS.items()}
WATCH_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0, maximum_interval=timedelta(seconds=10)
)
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
)
HISTORY_LIMIT = 4000
#: recoveries send the blocked and recovered notifications, and a RECOVERY_UPDATE "recovered"
NOTIFY_PATCH = "notify-blocked-recovered"
#: recoveries run on demand (the watcher starts them); before, they were handed to a supervisor first
ON_DEMAND_PATCH = "recovery-on-demand"
#: how long a recovery's waiting activities may stay silent before they are retried on another worker
RECOVERY_HEARTBEAT = 10.0


class _Interrupted(Exception):
    """A message asked the recovery to stop what it is doing."""


class RecoveryRoutine:
    """Restart with exponential backoff, start limit, dependency blocking and escalation.

    ``ServiceRecovery``'s core (a routine of its own so that the steps read in order).
    """

    status: SupervisorStatus
    spec: ServiceSpec
    heartbeat_timeout: timedelta

    def __init__(self) -> None:
        self.pending_events: list[tuple[str, dict[str, Any]]] = []
        self.recovery_summary: dict[str, Any] | None = None
        self.publish_wakeup = False
        self.service_state: str | None = None
        self.decision: DecisionInput | None = None
        self.interrupt: str | None = None
        self.retry_forever = False
        self.closing = False
        self.notifications: list[asyncio.Future[None]] = []

    # ----------------------------------------------------------------- events and records

    def set_state(self, state: SupervisionState, message: str = "") -> None:
        changed = state != self.status.state
        self.status.state = state
        self.status.message = message
        self.status.since = workflow.now() if changed else self.status.since
        mapped = SERVICE_STATE.get(state)
        if mapped is not None:
            self.service_state = mapped
        workflow.upsert_search_attributes([sa.STATE.value_set(state.value)])
        workflow.set_current_details(summaries.supervision_details(self.status))  # what the Temporal UI shows
        self.emit_recovery(state.value, message)

    def emit_recovery(self, status: str, message: str) -> None:
        data = {
            "service_id": self.status.service_id,
            "workflow_id": workflow.info().workflow_id,
            "status": status,
            "attempt": self.status.attempt,
            "max_attempts": self.status.max_attempts,
            "next_attempt_at": self.status.next_attempt_at.isoformat() if self.status.next_attempt_at else None,
            "message": message,
        }
        self.pending_events.append((str(workflow.uuid4()), {"event_type": "RECOVERY_UPDATE", "data": data}))
        self.publish_wakeup = True

    async def flush(self) -> None:
        self.publish_wakeup = False
        batch, self.pending_events = self.pending_events, []
        summary, self.recovery_summary = self.recovery_summary, None
        state, self.service_state = self.service_state, None
        await workflow.execute_activity_method(
            SupervisionActivities.record_supervision,
            RecordSupervisionInput(
                status=self.status,
                service_state=state,
                events=[d for _, d in batch],
                event_ids=[i for i, _ in batch],
                recovery=summary,
                timestamp=workflow.now(),
            ),
            summary=f"record: {self.status.state.value.replace('_', ' ')}",
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )

    async def publish_loop(self) -> None:
        """One writer, so events land in order; batches what piled up while the last write ran."""
        while not self.closing:
            await workflow.wait_condition(lambda: self.publish_wakeup or self.closing)
            if self.publish_wakeup:
                await self.flush()

    async def close_publisher(self, publisher: asyncio.Task[None]) -> None:
        if self.notifications:
            await asyncio.gather(*self.notifications, return_exceptions=True)
        self.closing = True
        await asyncio.gather(publisher, return_exceptions=True)
        if self.pending_events or self.recovery_summary or self.service_state:
            await self.flush()

    # ----------------------------------------------------------------- waiting that signals can cut short

    async def interruptible(self, awaitable: Any, *, timeout: float | None = None, summary: str | None = None) -> Any:
        """Run ``awaitable`` until done, or until an interrupt arrives (then cancel it and raise)."""
        task = asyncio.ensure_future(awaitable)
        try:
            await workflow.wait_condition(
                lambda: task.done() or self.interrupt is not None,
                timeout=timedelta(seconds=timeout) if timeout else None,
                timeout_summary=summary,
            )
        except TimeoutError:
            pass
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if self.interrupt is not None:
            raise _Interrupted(self.interrupt)
        raise TimeoutError

    async def sleep(self, seconds: float, summary: str | None = None) -> None:
        if seconds <= 0:
            return
        try:
            await workflow.wait_condition(
                lambda: self.interrupt is not None, timeout=timedelta(seconds=seconds), timeout_summary=summary
            )
        except TimeoutError:
            return
        raise _Interrupted(self.interrupt or "interrupted")

    def paused_now(self) -> bool:
        return False

    # ----------------------------------------------------------------- recovery

    async def recover(self, reason: str, *, confirm: bool, source: str) -> str:
        """Bring the service back. Returns recovered | healthy | gave_up."""
        policy = self.spec.restart
        self.status.max_attempts = policy.max_attempts
        started = workflow.now()
        attempts_here = 0
        while True:
            if self.paused_now():
                raise _Interrupted("pause")
            if self.status.attempt >= policy.max_attempts and not self.retry_forever:
                outcome = await self.give_up(reason)
                if outcome != "approved":
                    return "gave_up"
                continue
            if self.spec.depends_on:
                check = await workflow.execute_activity_method(
                    SupervisionActivities.check_dependencies,
                    DependencyCheckInput(service_id=self.spec.id, depends_on=list(self.spec.depends_on)),
                    summary=summaries.cut(f"check {self.spec.id}'s dependencies: {', '.join(self.spec.depends_on)}"),
                    start_to_close_timeout=policies.PROBE_TIMEOUT,
                    retry_policy=policies.STORE_RETRY,
                )
                if check.unhealthy:
                    self.status.blocked_on = check.unhealthy
                    self.set_state(SupervisionState.BLOCKED, f"waiting for {', '.join(check.unhealthy)}")
                    if workflow.patched(NOTIFY_PATCH):
                        self.notify_later(
                            NotificationKind.BLOCKED,
                            f"{self.spec.id} is not restarted while "
                            f"{', '.join(check.unhealthy)} is not healthy ({reason})",
                        )
                    await self.interruptible(
                        workflow.execute_activity_method(
                            SupervisionActivities.wait_dependencies,
                            WaitDependenciesInput(service_id=self.spec.id, depends_on=list(self.spec.depends_on)),
                            summary=summaries.cut(
                                f"blocked: {self.spec.id} waits until {', '.join(check.unhealthy)} healthy"
                            ),
                            start_to_close_timeout=timedelta(days=30),
                            heartbeat_timeout=self.heartbeat_timeout,
                            retry_policy=WATCH_RETRY,
                            cancellation_type=ActivityCancellationType.TRY_CANCEL,
                        )
                    )
                    self.status.blocked_on = []
                    confirm = True  # the dependency is back: the service may well be fine now
            delay = policy.delay_before(self.status.attempt + 1)
            if self.retry_forever:
                delay = policy.backoff_max
            if delay > 0:
                delay = policy.jittered(delay, workflow.random().random())
                self.status.next_attempt_at = workflow.now() + timedelta(seconds=delay)
                self.set_state(
                    SupervisionState.BACKING_OFF,
                    f"attempt {self.status.attempt + 1} of {policy.max_attempts} at "
                    f"{self.status.next_attempt_at.isoformat(timespec='seconds')}",
                )
                await self.sleep(delay, summaries.backoff(delay, self.status.attempt + 1))
            self.status.next_attempt_at = None
            self.status.attempt += 1
            attempts_here += 1
            self.set_state(
                SupervisionState.RECOVERING, f"attempt {self.status.attempt} of {policy.max_attempts}: {reason}"
            )
            holder = f"{workflow.info().workflow_id}/{workflow.info().run_id}/{workflow.uuid4()}"
            health = self.spec.health
            timeout = max(10.0, (health.start_period if health else 0) + 30.0)
            try:
                step = await policies.execute_on_host(
                    self.spec,
                    SupervisionActivities.recover_step,
                    RecoverStepInput(
                        spec=self.spec,
                        reason=reason,
                        confirm=confirm,
                        requested_at=workflow.now(),
                        holder=holder,
                        timeout=timeout,
                        source=source,
                        workflow_id=workflow.info().workflow_id,
                        attempt=self.status.attempt,
                        max_attempts=policy.max_attempts,
                        recovery_started_at=started,
                        attempts_here=attempts_here,
                    ),
                    start_to_close_timeout=timedelta(seconds=timeout + 60),
                    heartbeat_timeout=min(self.heartbeat_timeout, timedelta(seconds=10)),
                    retry_policy=policies.WAIT_RETRY,
                    summary=summaries.restart(self.spec, reason, self.status.attempt, policy.max_attempts),
                )
            except ActivityError as exc:
                self.status.last_error = policies.error_text(exc)
                confirm = False
                continue
            if step.outcome == "healthy":
                self.status.attempt -= 1
                self.status.healthy_since = workflow.now()
                self.set_state(SupervisionState.WATCHING, f"not restarted: {step.message}")
                return "healthy"
            if step.outcome == "skipped":  # desired stopped or held by an operator path: not ours to restart
                self.status.attempt -= 1
                self.status.message = step.message
                return "skipped"
            if step.outcome == "budget":
                self.status.attempt -= 1
                self.status.next_attempt_at = workflow.now() + timedelta(seconds=step.retry_after)
                self.set_state(SupervisionState.WAITING_BUDGET, f"waiting for the restart budget: {step.message}")
                await self.sleep(step.retry_after, f"wait {summaries.seconds(step.retry_after)} for the restart budget")
                continue
            if step.restarted:
                self.status.restarts.append(workflow.now())
                self.status.restarts_total += 1
            if step.outcome == "recovered":
                now = workflow.now()
                self.status.recoveries_total += 1
                self.status.last_error = None
                self.status.healthy_since = now
                self.status.last_recovery_seconds = (now - started).total_seconds()
                self.record_recovery("recovered", started, attempts_here, reason)
                took = self.status.last_recovery_seconds
                text = f"recovered after {attempts_here} attempt(s) in {took:.2f}s"
                if workflow.patched(NOTIFY_PATCH):
                    self.emit_recovery("recovered", text)
                    self.notify_later(NotificationKind.RECOVERED, f"{self.spec.id} {text} ({reason})")
                self.set_state(SupervisionState.WATCHING, text)
                return "recovered"
            self.status.last_error = step.message
            confirm = False

    def record_recovery(self, outcome: str, started: Any, attempts: int, reason: str) -> None:
        info = workflow.info()
        self.recovery_summary = {
            "run_id": f"{info.workflow_id}:{info.run_id}:{self.status.recoveries_total}:{attempts}:{outcome}",
            "kind": "recovery",
            "workflow_id": info.workflow_id,
            "service_id": self.spec.id,
            "status": outcome,
            "started_at": started,
            "finished_at": workflow.now(),
            "summary": {
                "reason": reason,
                "attempts": attempts,
                "attempt": self.status.attempt,
                "seconds": (workflow.now() - started).total_seconds(),
                "last_error": self.status.last_error,
                "verdict": self.status.last_verdict.model_dump(mode="json") if self.status.last_verdict else None,
            },
        }
        self.publish_wakeup = True

    async def notify(self, kind: NotificationKind, text: str) -> None:
        """Escalate through the configured channels; a channel that stays down does not stop the workflow."""
        notification = Notification(
            id=str(workflow.uuid4()),
            kind=kind,
            service_id=self.spec.id,
            title=f"{self.spec.id}: {kind.replace('_', ' ')}",
            text=text,
            details={
                "attempt": self.status.attempt,
                "max_attempts": self.status.max_attempts,
                "last_error": self.status.last_error,
            },
            workflow_id=workflow.info().workflow_id,
            timestamp=workflow.now(),
        )
        try:
            await workflow.execute_activity(
                names.NOTIFY,
                NotifyInput(notification=notification),
                summary=f"notify: {self.spec.id} {kind.replace('_', ' ')}",
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError as exc:
            workflow.logger.warning("escalation not delivered: %s", policies.error_text(exc))

    def notify_later(self, kind: NotificationKind, text: str) -> None:
        """Notify without holding up the recovery (a channel that is down retries for a while)."""
        self.notifications.append(asyncio.ensure_future(self.notify(kind, text)))
        self.notifications = [t for t in self.notifications if not t.done()]

    async def give_up(self, reason: str) -> str:
        """Start limit reached. Returns approved (one more round) or stopped."""
        policy = self.spec.restart
        text = (
            f"{self.spec.id} did not recover after {self.status.attempt} attempts ({reason}); "
            f"last error: {self.status.last_error or 'unknown'}"
        )
        self.record_recovery("gave_up", workflow.now(), self.status.attempt, reason)
        if policy.on_give_up == GiveUp.ESCALATE_AND_RETRY:
            await self.notify(NotificationKind.ESCALATED, text + "; retrying at backoff_max")
            self.retry_forever = True
            return "approved"
        if policy.on_give_up == GiveUp.ASK:
            self.decision = None
            self.set_state(
                SupervisionState.WAITING_DECISION, "gave up; waiting for an operator: approve or keep_stopped"
            )
            await self.notify(NotificationKind.NEEDS_DECISION, text + "; approve another round or keep it stopped")
            try:
                await workflow.wait_condition(
                    lambda: self.decision is not None,
                    timeout=timedelta(seconds=policy.ask_timeout),
                    timeout_summary=f"wait {summaries.seconds(policy.ask_timeout)} for an "
                    "operator: approve or keep_stopped",
                )
            except TimeoutError:
                self.decision = DecisionInput(decision="keep_stopped", actor="timeout")
            decision = self.decision
            self.decision = None
            if decision is not None and decision.decision == "approve":
                self.status.attempt = 0
                self.emit_recovery("approved", f"another round approved by {decision.actor}")
                return "approved"
        else:
            await self.notify(NotificationKind.GAVE_UP, text)
        await self.stop_service("gave up: left stopped")
        self.set_state(SupervisionState.GAVE_UP, text)
        return "stopped"

    async def stop_service(self, why: str) -> None:
        try:
            await policies.execute_on_host(
                self.spec,
                ServiceActivities.stop_service,
                ServiceActionInput(spec=self.spec, source="supervisor"),
                summary=summaries.stop(self.spec, why),
                start_to_close_timeout=policies.CONTROL_TIMEOUT,
                heartbeat_timeout=policies.CONTROL_HEARTBEAT,
                retry_policy=policies.CONTROL_RETRY,
            )
        except ActivityError as exc:
            self.status.last_error = f"{why}; stop failed: {policies.error_text(exc)}"


@workflow.defn(name=names.SERVICE_RECOVERY)
class ServiceRecovery(RecoveryRoutine):
    """One recovery of one service, by id ``recover/{service}`` (a second trigger joins it)."""

    @workflow.init
    def __init__(self, input: RecoveryInput) -> None:
        super().__init__()
        self.status = SupervisorStatus(service_id=input.service_id, workflow_id=workflow.info().workflow_id)
        self.heartbeat_timeout = timedelta(seconds=30)

    @workflow.query(name=names.STATUS)
    def query_status(self) -> SupervisorStatus:
        return self.status

    @workflow.update(name=names.DECIDE)
    async def decide(self, req: DecisionInput) -> SupervisorStatus:
        self.decision = req
        return self.status

    @decide.validator
    def _validate_decision(self, req: DecisionInput) -> None:
        if self.status.state != SupervisionState.WAITING_DECISION:
            raise ValueError(f"no decision is pending (state {self.status.state.value}): {req.decision} not taken")

    async def alerts_ignored(self, reason: str) -> None:
        """Tell the alert log that the alerts behind this run needed nothing (only runs an alert started with
        ``confirm`` get here; older histories never do, and the patch marks the new command)."""
        if not workflow.patched("alerts-ignored-record"):
            return
        info = workflow.info()
        await workflow.execute_activity_method(
            RecordActivities.note_alerts_ignored,
            AlertsIgnoredInput(workflow_id=info.workflow_id, run_id=info.run_id, reason=reason[:1000]),
            summary="record: the alerts behind this recovery are ignored (service healthy)",
            start_to_close_timeout=policies.STORE_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=10),
            retry_policy=policies.STORE_RETRY,
        )

    def result(self, input: RecoveryInput, started: Any, outcome: str) -> RecoveryResult:
        return RecoveryResult(
            service_id=input.service_id,
            outcome=outcome,  # type: ignore[arg-type]
            attempts=self.status.attempt,
            message=self.status.message,
            started_at=started,
            finished_at=workflow.now(),
        )

    @workflow.run
    async def run(self, input: RecoveryInput) -> RecoveryResult:
        started = workflow.now()
        workflow.upsert_search_attributes(
            [sa.KIND.value_set("recovery"), sa.SERVICE.value_set(input.service_id), sa.ACTOR.value_set(input.actor)]
        )
        if not workflow.patched(ON_DEMAND_PATCH):
            return await self.run_delegating(input, started)
        self.heartbeat_timeout = timedelta(seconds=RECOVERY_HEARTBEAT)
        target = await workflow.execute_activity_method(
            SupervisionActivities.begin_recovery,
            input.service_id,
            summary=f"load {input.service_id}: applied config, desired state, attempts so far",
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )
        if target.spec is None:
            raise ApplicationError(f"service {input.service_id!r} not found", type="NotFound", non_retryable=True)
        gave_up = input.source == "watcher" and target.state == "gave_up"  # a verdict from before it gave up
        if target.desired == "stopped" or target.held_by is not None or gave_up:
            why = (
                "desired stopped"
                if target.desired == "stopped"
                else "it gave up"
                if gave_up
                else f"held by {target.held_by}"
            )
            self.status.message = f"not recovered: {why}"
            return self.result(input, started, "skipped")
        self.spec = target.spec
        self.status.attempt = target.attempt
        self.status.healthy_since = target.healthy_since
        self.status.last_verdict = input.verdict
        publisher = asyncio.create_task(self.publish_loop())
        if input.verdict is not None:
            self.emit_recovery("detected", f"{input.verdict.verdict}: {input.verdict.message}")
        outcome = await self.recover(input.reason, confirm=input.confirm, source=input.source)
        if outcome == "recovered":
            await self.regate_dependants()
        await self.close_publisher(publisher)
        if input.confirm and outcome == "healthy":
            await self.alerts_ignored(f"alert ignored: service healthy ({self.status.message})")
        return self.result(input, started, outcome)

    async def regate_dependants(self) -> None:
        """Dependants flagged ``restart_with_dependencies`` are restarted now that this service is back."""
        ids = await workflow.execute_activity_method(
            SupervisionActivities.dependants_of,
            self.spec.id,
            summary=f"find services that depend on {self.spec.id}",
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )
        if not ids:
            return
        await workflow.execute_activity_method(
            TemporalActivities.start_recoveries,
            StartRecoveriesInput(
                service_ids=ids,
                reason=f"dependency {self.spec.id} recovered",
                actor=workflow.info().workflow_id,
                source="recovery",
                task_queue=workflow.info().task_queue,
            ),
            summary=summaries.cut(f"restart with {self.spec.id}: {', '.join(ids)}"),
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=policies.STORE_RETRY,
        )

    async def run_delegating(self, input: RecoveryInput, started: Any) -> RecoveryResult:
        """Runs started by the previous version: they asked the service's supervisor first (none runs now, so
        this goes on by itself)."""
        follow = await workflow.execute_activity_method(
            TemporalActivities.recover_via_supervisor,
            AwaitSupervisorInput(
                service_id=input.service_id,
                reason=input.reason,
                actor=input.actor,
                source=input.source,
                confirm=input.confirm,
            ),
            summary=f"hand the recovery of {input.service_id} to its supervisor, if one runs",
            start_to_close_timeout=timedelta(hours=6),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=policies.STORE_RETRY,
        )
        if follow.supervised:
            if input.confirm and not follow.restarted:
                await self.alerts_ignored(f"alert ignored: service healthy ({follow.message})")
            return RecoveryResult(
                service_id=input.service_id,
                outcome="delegated",
                attempts=follow.attempt,
                message=follow.message,
                started_at=started,
                finished_at=workflow.now(),
            )
        spec = await workflow.execute_activity_method(
            SupervisionActivities.load_spec_or_none,
            input.service_id,
            summary=f"load {input.service_id}",
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )
        if spec is None:
            raise ApplicationError(f"service {input.service_id!r} not found", type="NotFound", non_retryable=True)
        self.spec = spec
        publisher = asyncio.create_task(self.publish_loop())
        outcome = await self.recover(input.reason, confirm=input.confirm, source=input.source)
        await self.close_publisher(publisher)
        if input.confirm and outcome == "healthy":
            await self.alerts_ignored(f"alert ignored: service healthy ({self.status.message})")
        return self.result(input, started, outcome)
