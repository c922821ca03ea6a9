"""``ServiceSupervisor`` (id ``supervise/{service}``) and ``ServiceRecovery`` (id ``recover/{service}``).

The supervisor is a long-lived entity workflow per monitored service: it runs the ``watch_service``
activity, which returns as soon as the process exits or the probe fails ``failure_threshold`` times, then
recovers the service inline (restart with backoff, start limit, escalation) and watches again. It is the
single executor of recoveries for its service, so two triggers never make two restarts: the API, the
sweep and alerts reach it through ``ServiceRecovery`` (id ``recover/{service}``, one at a time by id),
which signals the supervisor and follows it, or recovers an unsupervised service itself.
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
        PauseInput,
        RecordSupervisionInput,
        RecoverNowInput,
        RecoverNowResult,
        RecoverStepInput,
        RecoveryInput,
        RecoveryResult,
        ServiceActionInput,
        SupervisionState,
        SupervisorInput,
        SupervisorStatus,
        WaitDependenciesInput,
        WatchInput,
        WatchResult,
    )
    from windflow.domain.models import GiveUp, ServiceSpec
    from windflow.domain.notifications import Notification
    from windflow.domain.status import SUPERVISION_STATUS
    from windflow.temporal import search_attributes as sa
    from windflow.workflows import _policies as policies

#: the service state column (and `GET /services?state=`) for each supervision state
SERVICE_STATE = {state: status.value for state, status in SUPERVISION_STATUS.items()}
WATCH_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0,
                          maximum_interval=timedelta(seconds=10))
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                           maximum_interval=timedelta(seconds=30), maximum_attempts=6)
HISTORY_LIMIT = 4000
#: recoveries send the blocked and recovered notifications, and a RECOVERY_UPDATE "recovered"
NOTIFY_PATCH = "notify-blocked-recovered"
#: how long a watch may stay silent before Temporal retries it on another worker: a dead worker's services are
#: watched again within this (a worker starting on the same host takes them over at once, see
#: ``worker.reclaim_abandoned_activities``)
WATCH_HEARTBEAT = 10.0
#: the heartbeat timeout supervisors were started with before: read as "the default"
_OLD_DEFAULT_HEARTBEAT = 30.0


class _Interrupted(Exception):
    """A signal asked the supervisor to stop what it is doing (pause, reload, recover now, stop)."""


class RecoveryRoutine:
    """Restart with exponential backoff, start limit, dependency blocking and escalation.

    Shared by the supervisor and by ``ServiceRecovery`` for services that have no supervisor.
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
            RecordSupervisionInput(status=self.status, service_state=state, events=[d for _, d in batch],
                                   event_ids=[i for i, _ in batch], recovery=summary, timestamp=workflow.now()),
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
            await workflow.wait_condition(lambda: task.done() or self.interrupt is not None,
                                          timeout=timedelta(seconds=timeout) if timeout else None,
                                          timeout_summary=summary)
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
            await workflow.wait_condition(lambda: self.interrupt is not None, timeout=timedelta(seconds=seconds),
                                          timeout_summary=summary)
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
                    DependencyCheckInput(service_id=self.spec.id, depends_on=self.spec.depends_on),
                    summary=summaries.cut(f"check {self.spec.id}'s dependencies: {', '.join(self.spec.depends_on)}"),
                    start_to_close_timeout=policies.PROBE_TIMEOUT, retry_policy=policies.STORE_RETRY)
                if check.unhealthy:
                    self.status.blocked_on = check.unhealthy
                    self.set_state(SupervisionState.BLOCKED, f"waiting for {', '.join(check.unhealthy)}")
                    if workflow.patched(NOTIFY_PATCH):
                        self.notify_later("blocked", f"{self.spec.id} is not restarted while "
                                                     f"{', '.join(check.unhealthy)} is not healthy ({reason})")
                    await self.interruptible(workflow.execute_activity_method(
                        SupervisionActivities.wait_dependencies,
                        WaitDependenciesInput(service_id=self.spec.id, depends_on=self.spec.depends_on),
                        summary=summaries.cut(f"blocked: {self.spec.id} waits until "
                                              f"{', '.join(check.unhealthy)} healthy"),
                        start_to_close_timeout=timedelta(days=30), heartbeat_timeout=self.heartbeat_timeout,
                        retry_policy=WATCH_RETRY,
                        cancellation_type=ActivityCancellationType.TRY_CANCEL))
                    self.status.blocked_on = []
                    confirm = True  # the dependency is back: the service may well be fine now
            delay = policy.delay_before(self.status.attempt + 1)
            if self.retry_forever:
                delay = policy.backoff_max
            if delay > 0:
                delay = policy.jittered(delay, workflow.random().random())
                self.status.next_attempt_at = workflow.now() + timedelta(seconds=delay)
                self.set_state(SupervisionState.BACKING_OFF,
                               f"attempt {self.status.attempt + 1} of {policy.max_attempts} at "
                               f"{self.status.next_attempt_at.isoformat(timespec='seconds')}")
                await self.sleep(delay, summaries.backoff(delay, self.status.attempt + 1))
            self.status.next_attempt_at = None
            self.status.attempt += 1
            attempts_here += 1
            self.set_state(SupervisionState.RECOVERING,
                           f"attempt {self.status.attempt} of {policy.max_attempts}: {reason}")
            holder = f"{workflow.info().workflow_id}/{workflow.info().run_id}/{workflow.uuid4()}"
            health = self.spec.health
            timeout = max(10.0, (health.start_period if health else 0) + 30.0)
            try:
                step = await policies.execute_on_host(
                    self.spec, SupervisionActivities.recover_step,
                    RecoverStepInput(spec=self.spec, reason=reason, confirm=confirm, requested_at=workflow.now(),
                                     holder=holder, timeout=timeout, source=source,
                                     workflow_id=workflow.info().workflow_id, attempt=self.status.attempt,
                                     max_attempts=policy.max_attempts, recovery_started_at=started,
                                     attempts_here=attempts_here),
                    start_to_close_timeout=timedelta(seconds=timeout + 60),
                    heartbeat_timeout=min(self.heartbeat_timeout, timedelta(seconds=10)),
                    retry_policy=policies.WAIT_RETRY,
                    summary=summaries.restart(self.spec, reason, self.status.attempt, policy.max_attempts))
            except ActivityError as exc:
                self.status.last_error = policies.error_text(exc)
                confirm = False
                continue
            if step.outcome == "healthy":
                self.status.attempt -= 1
                self.status.healthy_since = workflow.now()
                self.set_state(SupervisionState.WATCHING, f"not restarted: {step.message}")
                return "healthy"
            if step.outcome == "budget":
                self.status.attempt -= 1
                self.status.next_attempt_at = workflow.now() + timedelta(seconds=step.retry_after)
                self.set_state(SupervisionState.WAITING_BUDGET, f"waiting for the restart budget: {step.message}")
                await self.sleep(step.retry_after, f"wait {summaries.seconds(step.retry_after)} for the restart "
                                                   "budget")
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
                    self.notify_later("recovered", f"{self.spec.id} {text} ({reason})")
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
            "summary": {"reason": reason, "attempts": attempts, "attempt": self.status.attempt,
                        "seconds": (workflow.now() - started).total_seconds(), "last_error": self.status.last_error,
                        "verdict": self.status.last_verdict.model_dump(mode="json") if self.status.last_verdict
                        else None},
        }
        self.publish_wakeup = True

    async def notify(self, kind: str, text: str) -> None:
        """Escalate through the configured channels; a channel that stays down does not stop the workflow."""
        notification = Notification(
            id=str(workflow.uuid4()), kind=kind, service_id=self.spec.id,
            title=f"{self.spec.id}: {kind.replace('_', ' ')}", text=text,
            details={"attempt": self.status.attempt, "max_attempts": self.status.max_attempts,
                     "last_error": self.status.last_error},
            workflow_id=workflow.info().workflow_id, timestamp=workflow.now())
        try:
            await workflow.execute_activity("notify", NotifyInput(notification=notification),
                                            summary=f"notify: {self.spec.id} {kind.replace('_', ' ')}",
                                            start_to_close_timeout=timedelta(seconds=60), retry_policy=NOTIFY_RETRY)
        except ActivityError as exc:
            workflow.logger.warning("escalation not delivered: %s", policies.error_text(exc))

    def notify_later(self, kind: str, text: str) -> None:
        """Notify without holding up the recovery (a channel that is down retries for a while)."""
        self.notifications.append(asyncio.ensure_future(self.notify(kind, text)))
        self.notifications = [t for t in self.notifications if not t.done()]

    async def give_up(self, reason: str) -> str:
        """Start limit reached. Returns approved (one more round) or stopped."""
        policy = self.spec.restart
        text = (f"{self.spec.id} did not recover after {self.status.attempt} attempts ({reason}); "
                f"last error: {self.status.last_error or 'unknown'}")
        self.record_recovery("gave_up", workflow.now(), self.status.attempt, reason)
        if policy.on_give_up == GiveUp.ESCALATE_AND_RETRY:
            await self.notify("escalated", text + "; retrying at backoff_max")
            self.retry_forever = True
            return "approved"
        if policy.on_give_up == GiveUp.ASK:
            self.decision = None
            self.set_state(SupervisionState.WAITING_DECISION, "gave up; waiting for an operator: approve or "
                           "keep_stopped")
            await self.notify("needs_decision", text + "; approve another round or keep it stopped")
            try:
                await workflow.wait_condition(lambda: self.decision is not None,
                                              timeout=timedelta(seconds=policy.ask_timeout),
                                              timeout_summary=f"wait {summaries.seconds(policy.ask_timeout)} for an "
                                                              "operator: approve or keep_stopped")
            except TimeoutError:
                self.decision = DecisionInput(decision="keep_stopped", actor="timeout")
            decision = self.decision
            self.decision = None
            if decision is not None and decision.decision == "approve":
                self.status.attempt = 0
                self.emit_recovery("approved", f"another round approved by {decision.actor}")
                return "approved"
        else:
            await self.notify("gave_up", text)
        await self.stop_service("gave up: left stopped")
        self.set_state(SupervisionState.GAVE_UP, text)
        return "stopped"

    async def stop_service(self, why: str) -> None:
        try:
            await policies.execute_on_host(
                self.spec, ServiceActivities.stop_service, ServiceActionInput(spec=self.spec, source="supervisor"),
                summary=summaries.stop(self.spec, why),
                start_to_close_timeout=policies.CONTROL_TIMEOUT, heartbeat_timeout=policies.CONTROL_HEARTBEAT,
                retry_policy=policies.CONTROL_RETRY)
        except ActivityError as exc:
            self.status.last_error = f"{why}; stop failed: {policies.error_text(exc)}"


@workflow.defn(name="ServiceSupervisor")
class ServiceSupervisor(RecoveryRoutine):
    @workflow.init
    def __init__(self, input: SupervisorInput) -> None:
        super().__init__()
        self.status = input.carried or SupervisorStatus(service_id=input.service_id,
                                                        workflow_id=workflow.info().workflow_id)
        self.status.workflow_id = workflow.info().workflow_id
        self.paused = input.paused
        self.status.paused_reason = input.paused_reason
        # a timeout is not part of the command a replay compares: changing it is safe for running histories
        heartbeat = input.heartbeat_timeout
        self.heartbeat_timeout = timedelta(seconds=WATCH_HEARTBEAT if heartbeat == _OLD_DEFAULT_HEARTBEAT
                                           else heartbeat)
        self.stop_requested = False
        self.recover_request: RecoverNowInput | None = None
        self.dependency_recovered: str | None = None

    # ----------------------------------------------------------------- messages

    @workflow.query(name="status")
    def query_status(self) -> SupervisorStatus:
        return self.status

    def paused_now(self) -> bool:
        return self.paused or self.stop_requested

    @workflow.update(name="pause")
    async def pause(self, req: PauseInput) -> SupervisorStatus:
        """Stop watching (and recovering) until resumed; returns once supervision is really paused."""
        self.paused = True
        self.status.paused_reason = f"{req.reason} ({req.actor})"
        self.interrupt = "pause"
        await workflow.wait_condition(lambda: self.status.state == SupervisionState.PAUSED)
        return self.status

    @workflow.signal(name="resume")
    def resume(self) -> None:
        if self.paused or self.status.state == SupervisionState.GAVE_UP:
            self.paused = False
            self.status.paused_reason = None
            self.status.attempt = 0
            self.retry_forever = False
            if self.status.state == SupervisionState.GAVE_UP:
                self.status.state = SupervisionState.STARTING
            self.interrupt = "resume"

    @workflow.signal(name="policy_changed")
    def policy_changed(self) -> None:
        self.interrupt = "reload"

    @workflow.signal(name="stop_supervision")
    def stop_supervision(self) -> None:
        self.stop_requested = True
        self.interrupt = "stop"

    @workflow.signal(name="dependency_recovered")
    def on_dependency_recovered(self, dependency: str) -> None:
        if self.spec_loaded and self.spec.restart_with_dependencies and not self.paused:
            self.dependency_recovered = dependency
            if self.status.state == SupervisionState.WATCHING:
                self.interrupt = "dependency"

    @workflow.update(name="recover_now")
    async def recover_now(self, req: RecoverNowInput) -> RecoverNowResult:
        busy = self.status.state in (SupervisionState.RECOVERING, SupervisionState.BACKING_OFF,
                                     SupervisionState.BLOCKED, SupervisionState.WAITING_BUDGET)
        if busy:
            return RecoverNowResult(attached=True, state=self.status.state,
                                    message=f"a recovery is already running ({self.status.message})")
        if self.paused:
            return RecoverNowResult(attached=False, state=self.status.state,
                                    message=f"supervision is paused: {self.status.paused_reason}")
        if self.status.state in (SupervisionState.GAVE_UP, SupervisionState.WAITING_DECISION):
            self.status.attempt = 0  # an operator's trigger gets a fresh round
            self.retry_forever = False
        self.recover_request = req
        self.interrupt = "recover"
        return RecoverNowResult(attached=False, state=SupervisionState.RECOVERING, message="recovery started")

    @workflow.update(name="decide")
    async def decide(self, req: DecisionInput) -> SupervisorStatus:
        self.decision = req
        return self.status

    @decide.validator
    def _validate_decision(self, _req: DecisionInput) -> None:
        if self.status.state != SupervisionState.WAITING_DECISION:
            raise ValueError(f"no decision is pending (state {self.status.state.value})")

    # ----------------------------------------------------------------- run

    @property
    def spec_loaded(self) -> bool:
        return hasattr(self, "spec")

    async def load(self) -> bool:
        spec = await workflow.execute_activity_method(
            SupervisionActivities.load_spec_or_none, self.status.service_id,
            summary=f"load {self.status.service_id}",
            start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY)
        if spec is None or not spec.monitored:
            return False
        self.spec = spec
        return True

    @workflow.run
    async def run(self, input: SupervisorInput) -> SupervisorStatus:
        publisher = asyncio.create_task(self.publish_loop())
        workflow.upsert_search_attributes([sa.KIND.value_set("supervisor"), sa.SERVICE.value_set(input.service_id)])
        while not self.stop_requested:
            if not await self.load():
                self.status.message = "service deleted or no longer monitored"
                break
            if self.paused:
                self.status.healthy_since = None  # a stopped service is not healthy meanwhile
                self.set_state(SupervisionState.PAUSED, self.status.paused_reason or "paused")
                self.interrupt = None
                await workflow.wait_condition(lambda: not self.paused or self.stop_requested)
                continue
            if self.status.state == SupervisionState.GAVE_UP and self.recover_request is None:
                self.interrupt = None
                await workflow.wait_condition(lambda: self.interrupt is not None)
                continue
            self.interrupt = None
            try:
                await self.cycle()
            except _Interrupted:
                pass
            info = workflow.info()
            if info.is_continue_as_new_suggested() or info.get_current_history_length() > HISTORY_LIMIT:
                break
        await self.close_publisher(publisher)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self.stop_requested or not self.spec_loaded or not self.spec.monitored:
            self.status.state = SupervisionState.PAUSED
            self.status.message = self.status.message or "supervision stopped"
            return self.status
        workflow.continue_as_new(SupervisorInput(
            service_id=self.status.service_id, carried=self.status, paused=self.paused,
            paused_reason=self.status.paused_reason, heartbeat_timeout=self.heartbeat_timeout.total_seconds()))

    async def cycle(self) -> None:
        """Watch, then recover when the verdict (or a request) says so."""
        if self.interrupt == "recover" or self.recover_request is not None:
            req, self.recover_request = self.recover_request, None
            self.interrupt = None
            await self.recover(f"requested by {req.actor if req else 'operator'}",
                               confirm=bool(req and req.confirm), source=req.source if req else "api")
            return
        if self.dependency_recovered is not None:
            dependency, self.dependency_recovered = self.dependency_recovered, None
            await self.recover(f"dependency {dependency} recovered", confirm=False, source="supervisor")
            return
        if self.status.state != SupervisionState.WATCHING:
            self.set_state(SupervisionState.WATCHING, "watching")
        keep_healthy_since = workflow.patched("healthy-since-across-watches")
        if keep_healthy_since and self.status.healthy_since is None:
            # watched from now on: until a verdict says otherwise, the service counts as healthy since now
            self.status.healthy_since = workflow.now()
        verdict: WatchResult = await self.interruptible(policies.execute_on_host(
            self.spec, SupervisionActivities.watch_service,
            WatchInput(spec=self.spec),
            summary=summaries.probe(self.spec, "watch"),
            start_to_close_timeout=timedelta(days=365),
            heartbeat_timeout=self.heartbeat_timeout,
            retry_policy=WATCH_RETRY,
            # a pause or reload must not wait for the next (throttled) heartbeat to reach the activity: the
            # abandoned watch ends at its next heartbeat, and whatever it returns then is ignored
            cancellation_type=ActivityCancellationType.TRY_CANCEL,
        ))
        if self.paused:
            return
        self.status.last_verdict = verdict
        healthy_for = verdict.healthy_for
        if keep_healthy_since and self.status.healthy_since is not None:
            # the watch returns at the first bad verdict, so the service was healthy from healthy_since until it.
            # One watch alone knows less: a worker restart, a reload or a dev-server outage starts a new one
            healthy_for = max(healthy_for, (verdict.detected_at - self.status.healthy_since).total_seconds())
            self.status.healthy_since = None
        if healthy_for >= self.spec.restart.reset_after:
            self.status.attempt = 0
            self.retry_forever = False
        self.status.restarts = [t for t in self.status.restarts
                                if (workflow.now() - t).total_seconds() < self.spec.restart.reset_after]
        self.emit_recovery("detected", f"{verdict.verdict}: {verdict.message}")
        # An "unhealthy" verdict is re-probed before the restart (a blip must not restart a healthy service)
        # unless the watch has just seen failure_threshold >= 2 failures in a row: that was the confirmation,
        # and re-probing a hung service would only wait out one more probe timeout.
        health = self.spec.health
        confirm = verdict.verdict == "unhealthy" and (health is None or health.failure_threshold < 2)
        outcome = await self.recover(f"{verdict.verdict}: {verdict.message}", confirm=confirm, source="supervisor")
        if outcome == "recovered":
            await self.signal_dependants()

    async def signal_dependants(self) -> None:
        ids = await workflow.execute_activity_method(
            SupervisionActivities.dependants_of, self.spec.id, summary=f"find services that depend on {self.spec.id}",
            start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY)
        for name in ids:
            try:
                await workflow.get_external_workflow_handle(f"supervise/{name}").signal(
                    ServiceSupervisor.on_dependency_recovered, self.spec.id)
            except ApplicationError:
                continue
            except Exception:  # no supervisor for that dependant
                continue


@workflow.defn(name="ServiceRecovery")
class ServiceRecovery(RecoveryRoutine):
    """One recovery of one service, by id ``recover/{service}`` (a second trigger attaches to it)."""

    @workflow.init
    def __init__(self, input: RecoveryInput) -> None:
        super().__init__()
        self.status = SupervisorStatus(service_id=input.service_id, workflow_id=workflow.info().workflow_id)
        self.heartbeat_timeout = timedelta(seconds=30)

    @workflow.query(name="status")
    def query_status(self) -> SupervisorStatus:
        return self.status

    @workflow.update(name="decide")
    async def decide(self, req: DecisionInput) -> SupervisorStatus:
        self.decision = req
        return self.status

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
            start_to_close_timeout=policies.STORE_TIMEOUT, heartbeat_timeout=timedelta(seconds=10),
            retry_policy=policies.STORE_RETRY)

    @workflow.run
    async def run(self, input: RecoveryInput) -> RecoveryResult:
        started = workflow.now()
        workflow.upsert_search_attributes([sa.KIND.value_set("recovery"), sa.SERVICE.value_set(input.service_id),
                                           sa.ACTOR.value_set(input.actor)])
        follow = await workflow.execute_activity_method(
            TemporalActivities.recover_via_supervisor,
            AwaitSupervisorInput(service_id=input.service_id, reason=input.reason, actor=input.actor,
                                 source=input.source, confirm=input.confirm),
            summary=f"hand the recovery of {input.service_id} to its supervisor, if one runs",
            start_to_close_timeout=timedelta(hours=6), heartbeat_timeout=timedelta(seconds=30),
            retry_policy=policies.STORE_RETRY)
        if follow.supervised:
            if input.confirm and not follow.restarted:
                await self.alerts_ignored(f"alert ignored: service healthy ({follow.message})")
            return RecoveryResult(service_id=input.service_id, outcome="delegated", attempts=follow.attempt,
                                  message=follow.message, started_at=started, finished_at=workflow.now())
        spec = await workflow.execute_activity_method(
            SupervisionActivities.load_spec_or_none, input.service_id, summary=f"load {input.service_id}",
            start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY)
        if spec is None:
            raise ApplicationError(f"service {input.service_id!r} not found", type="NotFound", non_retryable=True)
        self.spec = spec
        publisher = asyncio.create_task(self.publish_loop())
        outcome = await self.recover(input.reason, confirm=input.confirm, source=input.source)
        await self.close_publisher(publisher)
        if input.confirm and outcome == "healthy":
            await self.alerts_ignored(f"alert ignored: service healthy ({self.status.message})")
        return RecoveryResult(service_id=input.service_id, outcome=outcome,  # type: ignore[arg-type]
                              attempts=self.status.attempt, message=self.status.message, started_at=started,
                              finished_at=workflow.now())
