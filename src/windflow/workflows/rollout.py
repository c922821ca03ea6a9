"""``ConfigRollout`` (id ``rollout/{service}``): change a service's config safely, one rollout at a time.

validate → pause supervision → save the new version → apply it (restart, or the driver's reload) → watch
health: the service must come up, then stay healthy for ``verify_window`` seconds (its own probe interval and
thresholds) → mark the version good. When the new version fails (the process exits, it does not come up in
time, or the probe fails ``failure_threshold`` times in a row) the last good version is restored as a new
version, applied and verified (for the window, at most ``ROLLBACK_VERIFY_MAX``): the rollout ends ROLLED_BACK
with the probe results of both verifications as evidence. Supervision is resumed at the end whatever happens.

A cancel is a request to roll back: honoured at once while verifying, after the step in flight otherwise; a
rollback itself is never cut short. The health watch is a loop of short probe activities on workflow timers,
so the ``status`` query shows every probe as it lands and a worker that dies loses at most one probe.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError

with workflow.unsafe.imports_passed_through():
    from windflow.activities.rollout import RolloutActivities
    from windflow.activities.runs import TemporalActivities
    from windflow.domain import summaries
    from windflow.domain.contracts import SupervisorControlInput
    from windflow.domain.health import HealthTracker, HealthVerdict
    from windflow.domain.models import ServiceSpec
    from windflow.domain.rollout import (
        MAX_PROBES,
        PHASE_PROGRESS,
        ApplyRolloutInput,
        MarkVersionInput,
        PhaseChange,
        PrepareRolloutInput,
        ProbeRolloutInput,
        RecordRolloutInput,
        RestoreRolloutInput,
        RolloutInput,
        RolloutPhase,
        RolloutProbe,
        RolloutState,
        RolloutStatus,
        RolloutVerification,
        SaveRolloutInput,
    )
    from windflow.temporal import names
    from windflow.temporal import search_attributes as sa
    from windflow.workflows import _policies as policies

#: a probe is short; a try lost with its worker is retried on another one
PROBE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=5,
    non_retryable_error_types=policies.NON_RETRYABLE,
)
SUPERVISION_TIMEOUT = timedelta(seconds=120)
#: the restored version was good before: its verification window is the rollout's, but at most this long
ROLLBACK_VERIFY_MAX = 10.0
#: an applied version gets at least this long to come up (or its start period, or the window, if longer)
COME_UP_MIN = 10.0


class _Cancelled(Exception):
    """A cancel was requested before anything was changed."""


@workflow.defn(name=names.CONFIG_ROLLOUT)
class ConfigRollout:
    @workflow.init
    def __init__(self, input: RolloutInput) -> None:
        self.input = input
        self.state = RolloutState(
            rollout_id=input.rollout_id,
            service_id=input.service_id,
            workflow_id=workflow.info().workflow_id,
            actor=input.actor,
            comment=input.comment,
            verify_window=input.verify_window,
            started_at=workflow.now(),
        )
        self.cancel_requested = False
        self.paused = False  # this rollout paused the service's supervisor (and must resume it)
        self.pending_events: list[tuple[str, dict[str, Any]]] = []
        self.supervisor = SupervisorControlInput(
            service_id=input.service_id,
            actor=input.actor,
            reason=f"config rollout {input.rollout_id} by {input.actor}",
            task_queue=workflow.info().task_queue,
        )

    # ----------------------------------------------------------------- queries

    @workflow.query(name=names.STATUS)
    def status(self) -> RolloutState:
        return self.state

    # ----------------------------------------------------------------- run

    @workflow.run
    async def run(self, input: RolloutInput) -> RolloutState:
        workflow.upsert_search_attributes(
            [sa.KIND.value_set("rollout"), sa.SERVICE.value_set(input.service_id), sa.ACTOR.value_set(input.actor)]
        )
        # the rollout runs in its own task: a cancel of the workflow becomes a request it honours at safe
        # points (rolling back), instead of an exception at whatever await happens to be in flight
        body = asyncio.create_task(self._rollout())
        while True:
            try:
                await asyncio.shield(body)
                break
            except (asyncio.CancelledError, CancelledError):
                if body.done():
                    break
                if not self.cancel_requested:
                    self.cancel_requested = True
                    self.state.cancelled = True
                    self.state.message = "cancel requested: rolling back"
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self.cancel_requested:
            raise asyncio.CancelledError("rollout cancelled")
        return self.state

    async def _rollout(self) -> None:
        try:
            await self._phase(RolloutPhase.VALIDATING, RolloutStatus.RUNNING, "validating the proposed config")
            prepared = await workflow.execute_activity_method(
                RolloutActivities.prepare_rollout,
                PrepareRolloutInput(
                    service_id=self.input.service_id, config=self.input.config, rollout_id=self.input.rollout_id
                ),
                summary=f"validate the proposed config of {self.input.service_id}",
                start_to_close_timeout=policies.STORE_TIMEOUT,
                retry_policy=policies.STORE_RETRY,
            )
            if not prepared.valid or prepared.spec is None:
                self.state.problems = prepared.problems
                first = prepared.problems[0] if prepared.problems else {"loc": [], "msg": "invalid"}
                where = ".".join(str(p) for p in first.get("loc", []))
                await self._finish(RolloutStatus.FAILED, f"invalid config: {where}: {first.get('msg')}")
                return
            assert prepared.current_version is not None and prepared.good_version is not None
            self.state.previous_version = prepared.current_version
            self.state.good_version = prepared.good_version
            expected = self.input.expected_version
            if expected is not None and expected != prepared.current_version:
                await self._finish(
                    RolloutStatus.FAILED,
                    f"the service is at version {prepared.current_version}, not {expected}: nothing changed",
                )
                return
            if prepared.unchanged:
                await self._finish(RolloutStatus.FAILED, "the proposed config equals the current one: nothing to do")
                return
            self._check_cancel()

            await self._phase(RolloutPhase.PAUSING_SUPERVISION, RolloutStatus.RUNNING, "pausing supervision")
            self.paused = await workflow.execute_activity_method(
                TemporalActivities.pause_supervisor,
                self.supervisor,
                summary=f"pause supervision of {self.input.service_id} during the rollout",
                start_to_close_timeout=SUPERVISION_TIMEOUT,
                retry_policy=policies.STORE_RETRY,
            )
            self.state.supervision = "paused" if self.paused else "none"
            self._check_cancel()

            await self._phase(RolloutPhase.SAVING, RolloutStatus.RUNNING, "saving the new config version")
            try:
                saved = await workflow.execute_activity_method(
                    RolloutActivities.save_rollout_version,
                    SaveRolloutInput(
                        rollout_id=self.input.rollout_id,
                        spec=prepared.spec,
                        expected_version=prepared.current_version,
                        good_version=prepared.good_version,
                        mark_good_first=prepared.good_is_implicit,
                        author=self.input.actor,
                        comment=self.input.comment,
                    ),
                    summary=f"save the new config version of {self.input.service_id}",
                    start_to_close_timeout=policies.STORE_TIMEOUT,
                    retry_policy=policies.STORE_RETRY,
                )
            except ActivityError as exc:
                await self._finish(RolloutStatus.FAILED, f"not saved: {policies.error_text(exc)}")
                return
            if not saved.changed:
                await self._finish(RolloutStatus.FAILED, "the proposed config equals the current one: nothing to do")
                return
            self.state.new_version = saved.version
            if self.cancel_requested:  # saved but not applied yet: put the good version back
                await self._roll_back(prepared.good_version, saved.version)
                return
            if await self._deploy(
                prepared.spec, saved.version, RolloutPhase.APPLYING, RolloutPhase.VERIFYING, "verification"
            ):
                await self._phase(
                    RolloutPhase.MARKING_GOOD,
                    RolloutStatus.RUNNING,
                    f"version {saved.version} stayed healthy: marking it good",
                )
                await self._mark(saved.version, "good")
                self.state.marked_good = saved.version
                await self._finish(RolloutStatus.SUCCEEDED, f"version {saved.version} applied and verified good")
                return
            await self._roll_back(prepared.good_version, saved.version)
        except _Cancelled:
            await self._finish(RolloutStatus.CANCELLED, "cancelled before anything changed")
        except ActivityError as exc:  # e.g. the service was deleted meanwhile
            await self._finish(RolloutStatus.FAILED, f"{self.state.phase.value} failed: {policies.error_text(exc)}")

    def _check_cancel(self) -> None:
        if self.cancel_requested:
            raise _Cancelled

    async def _deploy(
        self, spec: ServiceSpec, version: int, applying: RolloutPhase, verifying: RolloutPhase, slot: str
    ) -> bool:
        """Apply ``spec`` and verify it; the verdict (with evidence) lands in ``self.state.<slot>``."""
        await self._phase(applying, None, f"applying version {version}")
        requested = workflow.now()
        verification = RolloutVerification(version=version, started_at=requested)
        setattr(self.state, slot, verification)
        try:
            await policies.execute_on_host(
                spec,
                RolloutActivities.apply_rollout_config,
                ApplyRolloutInput(spec=spec, requested_at=requested, rollout_id=self.input.rollout_id),
                summary=summaries.cut(
                    f"apply version {version} to {spec.id}{summaries.where(spec)}"
                    + (" (rollback)" if slot != "verification" else "")
                ),
                start_to_close_timeout=policies.CONTROL_TIMEOUT,
                heartbeat_timeout=policies.CONTROL_HEARTBEAT,
                retry_policy=policies.CONTROL_RETRY,
            )
        except ActivityError as exc:
            verification.healthy = False
            verification.message = f"apply failed: {policies.error_text(exc)}"
            verification.finished_at = workflow.now()
            return False
        window = (
            self.input.verify_window if slot == "verification" else min(self.input.verify_window, ROLLBACK_VERIFY_MAX)
        )
        await self._phase(verifying, None, f"verifying version {version} for {window:g}s")
        healthy = await self._verify(spec, verification, window, interruptible=slot == "verification")
        await workflow.execute_activity_method(
            RolloutActivities.set_rollout_service_state,
            MarkVersionInput(service_id=spec.id, version=version, status="healthy" if healthy else "failed"),
            summary=f"record {spec.id} {'healthy' if healthy else 'failed'} on version {version}",
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )
        return healthy

    async def _verify(
        self, spec: ServiceSpec, verification: RolloutVerification, window: float, *, interruptible: bool
    ) -> bool:
        """Watch the applied version: it must come up, then stay healthy for the verify window.

        Probes run on the service's own interval. Until the first healthy verdict (``success_threshold`` passes
        in a row) failed probes are the boot, not a verdict: they are kept as evidence and the service has
        ``max(start_period, window, COME_UP_MIN)`` plus one failure streak to come up. From then on the health spec's
        thresholds apply: ``failure_threshold`` failures in a row fail the version. A process that is gone
        fails it at once, whenever that is seen.
        """
        health = spec.health
        interval = health.interval if health else 0.5
        tracker = HealthTracker(
            failure_threshold=health.failure_threshold if health else 1,
            success_threshold=health.success_threshold if health else 1,
        )
        applied: datetime = verification.started_at
        streak = (health.failure_threshold * interval + health.timeout) if health else 1.0
        come_up = max(health.start_period if health else 0.0, window, COME_UP_MIN)
        come_up_by = applied + timedelta(seconds=come_up + streak)
        healthy_at: datetime | None = None
        probe_timeout = timedelta(seconds=(health.timeout if health else 1.0) + 3.0)

        def done(healthy: bool, message: str) -> bool:
            verification.healthy = healthy
            verification.message = message
            verification.finished_at = workflow.now()
            return healthy

        while True:
            if interruptible and self.cancel_requested:
                return done(False, "cancelled while verifying")
            probe = await self._probe_once(spec, verification, probe_timeout)
            now = workflow.now()
            since = (now - applied).total_seconds()
            ok = probe.healthy and probe.running
            if healthy_at is None and not ok:
                tracker.consecutive_successes = 0  # still coming up: a failure restarts the success streak only
                verdict = tracker.verdict
            else:
                verdict = tracker.observe(ok)
                if healthy_at is None and verdict == HealthVerdict.HEALTHY:
                    healthy_at = now
            probe.verdict = verdict.value
            probe.since_apply = round(since, 3)
            verification.checks += 1
            verification.failures += 0 if probe.healthy else 1
            verification.probes.append(probe)
            del verification.probes[:-MAX_PROBES]
            if not probe.running:
                return done(False, f"the service is {probe.message}")
            if verdict == HealthVerdict.UNHEALTHY:
                return done(False, f"unhealthy after {tracker.consecutive_failures} failed probes: {probe.message}")
            if healthy_at is None and now >= come_up_by:
                return done(False, f"not healthy {since:.1f}s after applying: {probe.message}")
            if healthy_at is not None and (now - healthy_at).total_seconds() >= window:
                came_up = (healthy_at - applied).total_seconds()
                return done(
                    True,
                    f"came up in {came_up:.1f}s, then healthy for the {window:g}s window "
                    f"({verification.checks} probes, {verification.failures} failed)",
                )
            await self._until_next_check(spec, interval, interruptible=interruptible)

    async def _probe_once(
        self, spec: ServiceSpec, verification: RolloutVerification, timeout: timedelta
    ) -> RolloutProbe:
        """One probe of the applied version on its host; a probe that could not run at all counts as failed."""
        try:
            probe: RolloutProbe = await policies.execute_on_host(
                spec,
                RolloutActivities.probe_rollout,
                ProbeRolloutInput(spec=spec),
                summary=summaries.probe(spec, f"verify v{verification.version} (check {verification.checks + 1})"),
                start_to_close_timeout=timeout,
                retry_policy=PROBE_RETRY,
            )
        except ActivityError as exc:
            probe = RolloutProbe(
                at=workflow.now(), healthy=False, running=True, message=f"probe failed: {policies.error_text(exc)}"
            )
        return probe

    async def _until_next_check(self, spec: ServiceSpec, interval: float, *, interruptible: bool) -> None:
        """The service's probe interval, cut short by a cancel when it may interrupt."""
        try:
            await workflow.wait_condition(
                lambda: interruptible and self.cancel_requested,
                timeout=timedelta(seconds=interval),
                timeout_summary=f"next check of {spec.id} in {summaries.seconds(interval)}",
            )
        except TimeoutError:
            pass

    async def _roll_back(self, good_version: int, bad_version: int) -> None:
        why = (self.state.verification.message if self.state.verification else "") or "verification failed"
        if self.cancel_requested:
            why = "cancelled"
        await self._phase(
            RolloutPhase.RESTORING,
            RolloutStatus.ROLLING_BACK,
            f"version {bad_version} failed ({why}): restoring version {good_version}",
        )
        restored = await workflow.execute_activity_method(
            RolloutActivities.restore_good_version,
            RestoreRolloutInput(
                rollout_id=self.input.rollout_id,
                service_id=self.input.service_id,
                good_version=good_version,
                bad_version=bad_version,
                author=self.input.actor,
            ),
            summary=f"restore good version {good_version} of {self.input.service_id} (v{bad_version} failed)",
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )
        self.state.restored_version = restored.version
        if await self._deploy(
            restored.spec, restored.version, RolloutPhase.REAPPLYING, RolloutPhase.REVERIFYING, "rollback_verification"
        ):
            await self._mark(restored.version, "good")
            self.state.marked_good = restored.version
            await self._finish(
                RolloutStatus.ROLLED_BACK,
                f"version {bad_version} rolled back ({why}); version {restored.version} "
                f"(a copy of good version {good_version}) is healthy",
            )
            return
        rb = self.state.rollback_verification
        await self._finish(
            RolloutStatus.FAILED,
            f"version {bad_version} failed ({why}) and the restored version {restored.version} "
            f"did not verify either: {rb.message if rb else 'unknown'}",
        )

    async def _mark(self, version: int, status: str) -> None:
        await workflow.execute_activity_method(
            RolloutActivities.mark_config_version,
            MarkVersionInput(service_id=self.input.service_id, version=version, status=status),
            summary=f"mark version {version} of {self.input.service_id} {status}",
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )

    # ----------------------------------------------------------------- state, events, records

    async def _phase(self, phase: RolloutPhase, status: RolloutStatus | None, message: str) -> None:
        self.state.phase = phase
        if status is not None:
            self.state.status = status
        self.state.progress = (
            max(self.state.progress, PHASE_PROGRESS[phase])
            if self.state.status != RolloutStatus.ROLLING_BACK
            else PHASE_PROGRESS[phase]
        )
        self.state.message = message
        self.state.phases.append(PhaseChange(phase=phase, at=workflow.now(), message=message))
        workflow.upsert_search_attributes(
            [sa.STATUS.value_set(self.state.status.value), sa.STATE.value_set(phase.value)]
        )
        workflow.set_current_details(f"**{phase.value.lower().replace('_', ' ')}**: {message}")
        self._emit()
        await self._record(final=False)

    def _emit(self) -> None:
        version = self.state.restored_version or self.state.new_version
        data = {
            "service_id": self.state.service_id,
            "workflow_id": self.state.workflow_id,
            "rollout_id": self.state.rollout_id,
            "status": self.state.status.value,
            "phase": self.state.phase.value,
            "version": version,
            "message": self.state.message,
        }
        self.pending_events.append((str(workflow.uuid4()), data))

    async def _record(self, *, final: bool) -> None:
        batch, self.pending_events = self.pending_events, []
        await workflow.execute_activity_method(
            RolloutActivities.record_rollout,
            RecordRolloutInput(
                state=self.state,
                final=final,
                events=[d for _, d in batch],
                event_ids=[i for i, _ in batch],
                timestamp=workflow.now(),
            ),
            summary=summaries.cut(
                f"record: {self.state.phase.value.lower().replace('_', ' ')}"
                + (f" ({self.state.status.value.lower()})" if final else "")
            ),
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )

    async def _finish(self, status: RolloutStatus, message: str) -> None:
        """Resume supervision if this rollout paused it (whatever the outcome), then record the end."""
        if self.paused:
            await self._phase(RolloutPhase.RESUMING_SUPERVISION, None, "resuming supervision")
            await workflow.execute_activity_method(
                TemporalActivities.resume_supervisor,
                self.supervisor,
                summary=f"resume supervision of {self.input.service_id}",
                start_to_close_timeout=SUPERVISION_TIMEOUT,
                retry_policy=policies.STORE_RETRY,
            )
            self.state.supervision = "resumed"
            self.paused = False
        self.state.status = status
        self.state.phase = RolloutPhase.DONE
        self.state.progress = 100
        self.state.message = message
        self.state.finished_at = workflow.now()
        self.state.phases.append(PhaseChange(phase=RolloutPhase.DONE, at=self.state.finished_at, message=message))
        workflow.upsert_search_attributes(
            [sa.STATUS.value_set(status.value), sa.STATE.value_set(RolloutPhase.DONE.value)]
        )
        self._emit()
        await self._record(final=True)
