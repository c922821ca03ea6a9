"""The fast tier of ``ServiceRecovery``: backoff, give-up and the operator's decision, on Temporal's
time-skipping server with mocked activities (see tests/test_workflows_fast.py for the pattern).

Backoffs of minutes and an hour's wait for a decision pass at once; what is checked is the recovery's own
logic: how many attempts, how long between them, what it tells (notifications, recorded states), and what it
leaves behind (a service left stopped after it gave up).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from tests.conftest import strict_runner
from windflow.domain.contracts import (
    AlertsIgnoredInput,
    DecisionInput,
    DependencyCheckInput,
    DependencyCheckResult,
    NotifyInput,
    NotifyResult,
    RecordSupervisionInput,
    RecoverStepInput,
    RecoverStepResult,
    RecoveryResult,
    RecoveryTarget,
    ServiceActionInput,
    ServiceActionResult,
    StartRecoveriesInput,
    SupervisionState,
    SupervisorStatus,
)
from windflow.domain.models import ServiceSpec
from windflow.domain.results import DriverResult
from windflow.temporal import handles, names
from windflow.workflows.supervision import ServiceRecovery

pytestmark = pytest.mark.asyncio(loop_scope="session")


def service(**restart: Any) -> ServiceSpec:
    return ServiceSpec(
        id="api",
        driver="noop",
        restart={"backoff": "30s", "multiplier": 2, "backoff_max": "10m", "jitter": 0, **restart},
    )


class FakeRecovery:
    """The activities a recovery calls: restarts that fail a chosen number of times, then recover."""

    def __init__(self, spec: ServiceSpec, *, failures: int) -> None:
        self.spec = spec
        self.failures = failures
        self.steps: list[RecoverStepInput] = []
        self.notified: list[str] = []
        self.stopped: list[str] = []
        self.states: list[SupervisionState] = []

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.begin_recovery,
            self.recover_step,
            self.record_supervision,
            self.notify,
            self.stop_service,
            self.check_dependencies,
            self.dependants_of,
            self.start_recoveries,
            self.note_alerts_ignored,
        ]

    @activity.defn(name="begin_recovery")
    async def begin_recovery(self, service_id: str) -> RecoveryTarget:
        return RecoveryTarget(spec=self.spec, desired="running", state="unhealthy")

    @activity.defn(name="recover_step")
    async def recover_step(self, req: RecoverStepInput) -> RecoverStepResult:
        self.steps.append(req)
        if len(self.steps) <= self.failures:
            return RecoverStepResult(outcome="failed", message=f"attempt {req.attempt}: still down", restarted=True)
        return RecoverStepResult(outcome="recovered", message="healthy", restarted=True, pid=4242)

    @activity.defn(name="record_supervision")
    async def record_supervision(self, req: RecordSupervisionInput) -> None:
        self.states.append(req.status.state)

    @activity.defn(name=names.NOTIFY)
    async def notify(self, req: NotifyInput) -> NotifyResult:
        self.notified.append(req.notification.kind)
        return NotifyResult()

    @activity.defn(name="stop_service")
    async def stop_service(self, req: ServiceActionInput) -> ServiceActionResult:
        self.stopped.append(req.spec.id)
        return ServiceActionResult(result=DriverResult(ok=True, action="stop"))

    @activity.defn(name="check_dependencies")
    async def check_dependencies(self, req: DependencyCheckInput) -> DependencyCheckResult:
        return DependencyCheckResult()

    @activity.defn(name="dependants_of")
    async def dependants_of(self, service_id: str) -> list[str]:
        return []

    @activity.defn(name="start_recoveries")
    async def start_recoveries(self, req: StartRecoveriesInput) -> list[str]:
        return []

    @activity.defn(name="note_alerts_ignored")
    async def note_alerts_ignored(self, req: AlertsIgnoredInput) -> None:
        return None


async def running(env: Any, fake: FakeRecovery, task_queue: str) -> AsyncIterator[Client]:
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[ServiceRecovery],
        activities=fake.activities(),
        workflow_runner=strict_runner(),
    ):
        yield env.client


async def recover(client: Client, task_queue: str) -> WorkflowHandle[Any, RecoveryResult]:
    started = await handles.start_recovery(
        client,
        task_queue=task_queue,
        service_id="api",
        reason="probe failed",
        actor="tester",
        source="api",
        request_id=uuid.uuid4().hex,
    )
    assert not started.attached
    return started.handle


def gaps(fake: FakeRecovery) -> list[float]:
    """Seconds between one restart attempt and the next (workflow time: the backoff)."""
    at = [step.requested_at for step in fake.steps]
    return [(b - a).total_seconds() for a, b in zip(at, at[1:], strict=False)]


async def test_restarts_back_off_exponentially_until_the_service_recovers(time_skipping_env, task_queue):
    fake = FakeRecovery(service(max_attempts=5), failures=3)
    async for client in running(time_skipping_env, fake, task_queue):
        result = await (await recover(client, task_queue)).result()
    assert result.outcome == "recovered" and result.attempts == 4
    assert [s.attempt for s in fake.steps] == [1, 2, 3, 4]
    # 30 s before the second attempt, then doubled: 60 s, 120 s (minutes of workflow time, skipped)
    assert [round(g) for g in gaps(fake)] == [30, 60, 120]
    assert SupervisionState.BACKING_OFF in fake.states and fake.states[-1] == SupervisionState.WATCHING
    assert fake.stopped == [] and "recovered" in fake.notified


async def test_after_the_start_limit_it_gives_up_tells_and_leaves_the_service_stopped(time_skipping_env, task_queue):
    fake = FakeRecovery(service(max_attempts=3), failures=100)
    async for client in running(time_skipping_env, fake, task_queue):
        result = await (await recover(client, task_queue)).result()
    assert result.outcome == "gave_up" and len(fake.steps) == 3
    assert "gave_up" in fake.notified
    assert fake.stopped == ["api"]
    assert fake.states[-1] == SupervisionState.GAVE_UP


async def test_on_give_up_ask_waits_for_an_operator_who_approves_another_round(time_skipping_env, task_queue):
    # no backoff: until the test awaits the result, time runs at the wall clock's pace
    fake = FakeRecovery(service(max_attempts=2, on_give_up="ask", ask_timeout="2h", backoff="0s"), failures=2)
    async for client in running(time_skipping_env, fake, task_queue):
        handle = await recover(client, task_queue)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while (
            await handle.query(names.STATUS, result_type=SupervisorStatus)
        ).state != SupervisionState.WAITING_DECISION:
            assert loop.time() < deadline, "never asked for a decision"
            await asyncio.sleep(0.05)
        answer = await handle.execute_update(
            names.DECIDE, DecisionInput(decision="approve", actor="oncall"), result_type=SupervisorStatus
        )
        assert answer.state == SupervisionState.WAITING_DECISION
        result = await handle.result()
    assert result.outcome == "recovered"
    assert "needs_decision" in fake.notified and fake.stopped == []
    assert len(fake.steps) == 3 and fake.steps[-1].attempt == 1  # the approved round counts from one again


async def test_on_give_up_ask_without_an_answer_keeps_it_stopped(time_skipping_env, task_queue):
    fake = FakeRecovery(service(max_attempts=1, on_give_up="ask", ask_timeout="1h"), failures=100)
    async for client in running(time_skipping_env, fake, task_queue):
        handle = await recover(client, task_queue)
        result = await handle.result()  # the hour passes at once
    assert result.outcome == "gave_up" and fake.stopped == ["api"]
    assert "needs_decision" in fake.notified
    assert timedelta(hours=1) <= result.finished_at - result.started_at < timedelta(hours=2)
