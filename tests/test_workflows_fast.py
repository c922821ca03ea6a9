"""The fast tier: each workflow's logic on Temporal's time-skipping test server, its activities mocked.

The real-server suite proves the parts work together (processes, probes, the store); these prove the
workflow's own decisions (order, failure, retry, cancel and rollback, roll back to the good version), in a
second or two each: the mocks answer at once and timers of hours fire when nothing else can happen. Mocks
register under the real activities' names, as the SDK's samples do; the worker uses the strict sandbox, so a
workflow import left outside its pass-through block fails here too.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import Worker

from tests.conftest import strict_runner
from windflow.domain.contracts import (
    ComponentStatus,
    ControlInput,
    ControlResult,
    InitInput,
    InitOptions,
    InitState,
    InitStatus,
    RecordInitInput,
    ServiceActionInput,
    ServiceActionResult,
    SupervisorControlInput,
    ValidateSystemInput,
    ValidateSystemResult,
    WaitHealthyInput,
    WaitHealthyResult,
)
from windflow.domain.graph import layers
from windflow.domain.models import ServiceSpec
from windflow.domain.results import DriverResult
from windflow.domain.rollout import (
    ApplyRolloutInput,
    ApplyRolloutResult,
    MarkVersionInput,
    PrepareRolloutInput,
    PrepareRolloutResult,
    ProbeRolloutInput,
    RecordRolloutInput,
    RestoreRolloutInput,
    RestoreRolloutResult,
    RolloutInput,
    RolloutPhase,
    RolloutProbe,
    RolloutState,
    RolloutStatus,
    SaveRolloutInput,
    SaveRolloutResult,
)
from windflow.domain.shutdown import (
    RecordShutdownInput,
    ShutdownInput,
    ShutdownPlan,
    ShutdownState,
    ShutdownStatus,
    StopStatus,
)
from windflow.temporal import handles, names
from windflow.workflows.control import ServiceControl
from windflow.workflows.initialization import SystemInitialization
from windflow.workflows.rollout import ConfigRollout
from windflow.workflows.shutdown import SystemShutdown

pytestmark = pytest.mark.asyncio(loop_scope="session")


def spec(name: str, *deps: str) -> ServiceSpec:
    return ServiceSpec(id=name, driver="noop", depends_on=list(deps), monitored=False)


class FakeServices:
    """The service activities, answering at once: a log of what was asked, in order, and chosen failures."""

    def __init__(
        self,
        *specs: ServiceSpec,
        fail_start: dict[str, int] | None = None,
        hang_healthy: set[str] = frozenset(),
        fail_stop: set[str] = frozenset(),
    ) -> None:
        self.specs = {s.id: s for s in specs}
        self.fail_start = dict(fail_start or {})  # service -> how many starts fail before one succeeds
        self.hang_healthy = set(hang_healthy)  # wait_healthy never ends (until cancelled)
        self.fail_stop = set(fail_stop)
        self.log: list[tuple[str, str]] = []
        self.records: list[Any] = []
        self.waiting = asyncio.Event()  # a hanging wait_healthy has begun

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.validate_system,
            self.load_service,
            self.start_service,
            self.wait_healthy,
            self.stop_service,
            self.record_initialization,
            self.record_initialization_changes,
            self.plan_shutdown,
            self.record_shutdown,
            self.pause_supervisor,
            self.resume_supervisor,
            self.load_spec_or_none,
            self.restart_service,
        ]

    @activity.defn(name="validate_system")
    async def validate_system(self, req: ValidateSystemInput) -> ValidateSystemResult:
        wanted = list(self.specs)
        return ValidateSystemResult(
            valid=True,
            specs=[self.specs[n] for n in wanted],
            plan=layers({n: list(self.specs[n].depends_on) for n in wanted}),
        )

    @activity.defn(name="load_service")
    async def load_service(self, name: str) -> ServiceSpec:
        self.log.append(("load", name))
        return self.specs[name]

    @activity.defn(name="start_service")
    async def start_service(self, req: ServiceActionInput) -> ServiceActionResult:
        name = req.spec.id
        self.log.append(("start", name))
        if self.fail_start.get(name, 0) > 0:
            self.fail_start[name] -= 1
            raise ApplicationError(f"{name} would not start", type="DriverError", non_retryable=True)
        return ServiceActionResult(result=DriverResult(ok=True, action="start", pid=1000 + len(self.log)))

    @activity.defn(name="restart_service")
    async def restart_service(self, req: ServiceActionInput) -> ServiceActionResult:
        self.log.append(("restart", req.spec.id))
        return ServiceActionResult(result=DriverResult(ok=True, action="restart", pid=1000 + len(self.log)))

    @activity.defn(name="load_spec_or_none")
    async def load_spec_or_none(self, service_id: str) -> ServiceSpec | None:
        return self.specs.get(service_id)

    @activity.defn(name="wait_healthy")
    async def wait_healthy(self, req: WaitHealthyInput) -> WaitHealthyResult:
        name = req.spec.id
        if name in self.hang_healthy:
            self.waiting.set()
            while True:  # until the workflow cancels this (heartbeats carry the cancellation)
                activity.heartbeat()
                await asyncio.sleep(0.05)
        self.log.append(("healthy", name))
        return WaitHealthyResult(healthy=True, elapsed=0.01, checks=1)

    @activity.defn(name="stop_service")
    async def stop_service(self, req: ServiceActionInput) -> ServiceActionResult:
        name = req.spec.id
        self.log.append(("stop", name))
        if name in self.fail_stop:
            raise ApplicationError(f"{name} would not stop", type="DriverError", non_retryable=True)
        return ServiceActionResult(result=DriverResult(ok=True, action="stop", message="stopped"))

    @activity.defn(name="record_initialization")
    async def record_initialization(self, req: RecordInitInput) -> None:
        self.records.append(req)

    @activity.defn(name="record_initialization_changes")
    async def record_initialization_changes(self, req: RecordInitInput) -> None:
        self.records.append(req)

    @activity.defn(name="plan_shutdown")
    async def plan_shutdown(self, services: list[str]) -> ShutdownPlan:
        graph = {n: list(s.depends_on) for n, s in self.specs.items()}
        return ShutdownPlan(
            layers=[sorted(layer) for layer in reversed(layers(graph))], specs=list(self.specs.values())
        )

    @activity.defn(name="record_shutdown")
    async def record_shutdown(self, req: RecordShutdownInput) -> None:
        self.records.append(req)

    @activity.defn(name="pause_supervisor")
    async def pause_supervisor(self, req: SupervisorControlInput) -> bool:
        self.log.append(("pause", req.service_id))
        return self.supervised

    @activity.defn(name="resume_supervisor")
    async def resume_supervisor(self, req: SupervisorControlInput) -> str:
        self.log.append(("resume", req.service_id))
        return "resumed"

    supervised = False  # whether pause_supervisor finds a supervisor to pause


class FakeRollout(FakeServices):
    """The rollout activities: the service's config versions in memory, and which versions come up healthy."""

    def __init__(self, current: ServiceSpec, *, healthy_versions: set[int]) -> None:
        super().__init__(current)
        self.versions: dict[int, ServiceSpec] = {1: current}
        self.good = 1
        self.marks: list[tuple[int, str]] = []
        self.healthy_versions = healthy_versions
        self.applied: int | None = None
        self.supervised = True

    def activities(self) -> list[Callable[..., Any]]:
        return [
            *super().activities(),
            self.prepare_rollout,
            self.save_rollout_version,
            self.restore_good_version,
            self.mark_config_version,
            self.apply_rollout_config,
            self.probe_rollout,
            self.set_rollout_service_state,
            self.record_rollout,
        ]

    @activity.defn(name="prepare_rollout")
    async def prepare_rollout(self, req: PrepareRolloutInput) -> PrepareRolloutResult:
        current = max(self.versions)
        proposed = self.versions[current].model_copy(update={"description": f"proposed by {req.rollout_id}"})
        return PrepareRolloutResult(valid=True, spec=proposed, current_version=current, good_version=self.good)

    @activity.defn(name="save_rollout_version")
    async def save_rollout_version(self, req: SaveRolloutInput) -> SaveRolloutResult:
        version = max(self.versions) + 1
        self.versions[version] = req.spec
        self.log.append(("save", str(version)))
        return SaveRolloutResult(version=version)

    @activity.defn(name="restore_good_version")
    async def restore_good_version(self, req: RestoreRolloutInput) -> RestoreRolloutResult:
        version = max(self.versions) + 1
        self.versions[version] = self.versions[req.good_version]
        self.marks.append((req.bad_version, "bad"))
        self.log.append(("restore", str(version)))
        return RestoreRolloutResult(version=version, spec=self.versions[version])

    @activity.defn(name="mark_config_version")
    async def mark_config_version(self, req: MarkVersionInput) -> None:
        self.marks.append((req.version, req.status))

    @activity.defn(name="apply_rollout_config")
    async def apply_rollout_config(self, req: ApplyRolloutInput) -> ApplyRolloutResult:
        self.applied = next(v for v in sorted(self.versions, reverse=True) if self.versions[v] == req.spec)
        self.log.append(("apply", str(self.applied)))
        return ApplyRolloutResult(action="restart", pid=4242)

    @activity.defn(name="probe_rollout")
    async def probe_rollout(self, req: ProbeRolloutInput) -> RolloutProbe:
        healthy = self.applied in self.healthy_versions
        return RolloutProbe(
            at=activity.info().current_attempt_scheduled_time,
            healthy=healthy,
            running=True,
            message="ok" if healthy else "503 from /health",
        )

    @activity.defn(name="set_rollout_service_state")
    async def set_rollout_service_state(self, req: MarkVersionInput) -> None:
        self.log.append(("state", f"{req.version}:{req.status}"))

    @activity.defn(name="record_rollout")
    async def record_rollout(self, req: RecordRolloutInput) -> None:
        self.records.append(req)


async def running(env: Any, fake: FakeServices, task_queue: str) -> AsyncIterator[Client]:
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[SystemInitialization, SystemShutdown, ConfigRollout, ServiceControl],
        activities=fake.activities(),
        workflow_runner=strict_runner(),
    ):
        yield env.client


HISTORIES = Path(__file__).parent / "histories"


async def keep_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With WINDFLOW_RECORD_HISTORIES=1: the run's history becomes ``tests/histories/{name}.json``, which
    tests/test_replay.py replays on every change (record again when a workflow changes shape on purpose)."""
    if os.environ.get("WINDFLOW_RECORD_HISTORIES"):
        (HISTORIES / f"{name}.json").write_text((await handle.fetch_history()).to_json())


async def until(
    handle: WorkflowHandle[Any, Any], result_type: type, check: Callable[[Any], bool], timeout: float = 60.0
) -> Any:
    """Query ``status`` until ``check`` holds (wall-clock polling: time only skips while a result is awaited)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        state = await handle.query(names.STATUS, result_type=result_type)
        if check(state):
            return state
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout:g}s: last state {state}")
        await asyncio.sleep(0.025)


async def start_init(client: Client, task_queue: str, **options: Any) -> WorkflowHandle[Any, InitState]:
    return await handles.start_initialization(
        client,
        task_queue=task_queue,
        inp=InitInput(run_id=uuid.uuid4().hex[:12], options=InitOptions(**options), actor="tester"),
    )


# ------------------------------------------------------------------------------------------- initialization


async def test_initialization_starts_each_component_once_its_dependencies_are_healthy(time_skipping_env, task_queue):
    fake = FakeServices(spec("db"), spec("cache"), spec("api", "db", "cache"), spec("web", "api"))
    async for client in running(time_skipping_env, fake, task_queue):
        state = await (await start_init(client, task_queue)).result()
    assert state.status == InitStatus.SUCCEEDED and state.progress == 100
    assert {c.status for c in state.components.values()} == {ComponentStatus.HEALTHY}
    order = fake.log
    for dependant, dependency in (("api", "db"), ("api", "cache"), ("web", "api")):
        assert order.index(("healthy", dependency)) < order.index(("start", dependant)), order
    assert [s for a, s in order if a == "start"].count("db") == 1  # started once
    final = fake.records[-1]
    assert final.final and final.state.status == InitStatus.SUCCEEDED


async def test_a_failed_component_fails_the_run_and_skips_its_dependants(time_skipping_env, task_queue):
    fake = FakeServices(spec("db"), spec("api", "db"), spec("web", "api"), fail_start={"api": 1})
    async for client in running(time_skipping_env, fake, task_queue):
        handle = await start_init(client, task_queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        state = await handle.query(names.STATUS, result_type=InitState)
    assert isinstance(failed.value.cause, ApplicationError) and failed.value.cause.type == "InitializationFailed"
    assert state.status == InitStatus.FAILED
    assert state.components["db"].status == ComponentStatus.HEALTHY
    assert state.components["api"].status == ComponentStatus.FAILED
    assert "would not start" in (state.components["api"].last_error or "")
    assert state.components["web"].status == ComponentStatus.SKIPPED
    assert ("start", "web") not in fake.log


async def test_retry_component_starts_the_failed_one_again_in_the_same_run(time_skipping_env, task_queue):
    fake = FakeServices(spec("db"), spec("api", "db"), spec("web", "api"), fail_start={"api": 1})
    async for client in running(time_skipping_env, fake, task_queue):
        handle = await start_init(client, task_queue, retry_window=3600)
        await until(handle, InitState, lambda s: s.awaiting_retry_until is not None)
        answer = await handles.retry_component(client, handle.id, "api")
        assert answer.accepted
        state = await handle.result()
    assert state.status == InitStatus.SUCCEEDED
    assert state.components["api"].attempts == 2
    assert [a for a in fake.log if a[1] == "api"] == [
        ("start", "api"),
        ("load", "api"),
        ("start", "api"),
        ("healthy", "api"),
    ]
    assert state.components["web"].status == ComponentStatus.HEALTHY  # skipped, then started after the retry


async def test_without_a_retry_the_run_fails_when_the_retry_window_ends(time_skipping_env, task_queue):
    fake = FakeServices(spec("db"), spec("api", "db"), fail_start={"api": 1})
    async for client in running(time_skipping_env, fake, task_queue):
        handle = await start_init(client, task_queue, retry_window=6 * 3600)  # six hours, skipped
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert ("start", "api") in fake.log and fake.log.count(("start", "api")) == 1


async def test_cancel_rolls_back_what_the_run_started_dependants_first(time_skipping_env, task_queue):
    fake = FakeServices(spec("db"), spec("api", "db"), spec("web", "api"), hang_healthy={"web"})
    async for client in running(time_skipping_env, fake, task_queue):
        handle = await start_init(client, task_queue)
        await asyncio.wait_for(fake.waiting.wait(), 60)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        state = await handle.query(names.STATUS, result_type=InitState)
        await keep_history(handle, "initialization_cancel_rollback")
    assert isinstance(failed.value.cause, CancelledError)
    assert state.status == InitStatus.CANCELLED
    stops = [s for a, s in fake.log if a == "stop"]
    assert stops == ["web", "api", "db"]  # reverse dependency order
    assert {c.status for c in state.components.values()} == {ComponentStatus.STOPPED}


async def test_validate_only_plans_and_starts_nothing(time_skipping_env, task_queue):
    fake = FakeServices(spec("db"), spec("api", "db"))
    async for client in running(time_skipping_env, fake, task_queue):
        state = await (await start_init(client, task_queue, validate_only=True)).result()
    assert state.status == InitStatus.SUCCEEDED and "db | api" in state.message
    assert fake.log == []


# ------------------------------------------------------------------------------------------------ shutdown


async def start_down(client: Client, task_queue: str, *services: str) -> WorkflowHandle[Any, ShutdownState]:
    return await handles.start_shutdown(
        client,
        task_queue=task_queue,
        inp=ShutdownInput(run_id=uuid.uuid4().hex[:12], services=list(services), actor="tester", reason="maintenance"),
    )


async def test_shutdown_stops_dependants_first_and_pauses_supervision_before_each_stop(time_skipping_env, task_queue):
    fake = FakeServices(spec("db"), spec("api", "db"), spec("web", "api"), spec("worker", "db"))
    async for client in running(time_skipping_env, fake, task_queue):
        state = await (await start_down(client, task_queue)).result()
    assert state.status == ShutdownStatus.COMPLETED and state.progress == 100
    stops = [s for a, s in fake.log if a == "stop"]
    assert stops.index("web") < stops.index("api") < stops.index("db")
    assert stops.index("worker") < stops.index("db")
    for name in stops:
        assert fake.log.index(("pause", name)) < fake.log.index(("stop", name))
    assert fake.records[-1].final and fake.records[-1].state.status == ShutdownStatus.COMPLETED


async def test_a_service_that_will_not_stop_fails_the_shutdown_and_the_rest_still_stop(time_skipping_env, task_queue):
    fake = FakeServices(spec("db"), spec("api", "db"), spec("web", "api"), fail_stop={"api"})
    async for client in running(time_skipping_env, fake, task_queue):
        handle = await start_down(client, task_queue)
        state = await handle.result()
        await keep_history(handle, "shutdown_failed_stop")
    assert state.status == ShutdownStatus.FAILED and "api" in state.message
    assert state.components["api"].status == StopStatus.FAILED
    assert state.components["web"].status == StopStatus.STOPPED
    assert state.components["db"].status == StopStatus.STOPPED


# ------------------------------------------------------------------------------------------------- rollout


async def start_rollout(client: Client, task_queue: str, *, verify_window: float) -> WorkflowHandle[Any, RolloutState]:
    return await handles.start_rollout(
        client,
        task_queue=task_queue,
        inp=RolloutInput(
            rollout_id=uuid.uuid4().hex[:12],
            service_id="api",
            actor="tester",
            verify_window=verify_window,
            expected_version=1,
        ),
    )


async def test_a_rollout_that_stays_healthy_for_the_window_is_marked_good(time_skipping_env, task_queue):
    fake = FakeRollout(spec("api"), healthy_versions={2})
    async for client in running(time_skipping_env, fake, task_queue):
        state = await (await start_rollout(client, task_queue, verify_window=60)).result()  # a minute, skipped
    assert state.status == RolloutStatus.SUCCEEDED and state.new_version == 2 and state.marked_good == 2
    assert (2, "good") in fake.marks
    assert state.verification is not None and state.verification.healthy
    assert state.verification.checks >= 100  # probed every 0.5 s (and the probe's time) all through the window
    # supervision is paused for the change and resumed after it
    assert fake.log[0] == ("pause", "api") and fake.log[-1] == ("resume", "api")
    assert fake.records[-1].final and fake.records[-1].state.status == RolloutStatus.SUCCEEDED


async def test_a_rollout_that_fails_verification_restores_the_good_version(time_skipping_env, task_queue):
    fake = FakeRollout(spec("api"), healthy_versions={1, 3})  # v2 (proposed) fails; v3 (copy of v1) is healthy
    async for client in running(time_skipping_env, fake, task_queue):
        handle = await start_rollout(client, task_queue, verify_window=5)
        state = await handle.result()
        await keep_history(handle, "rollout_rolled_back")
    assert state.status == RolloutStatus.ROLLED_BACK, state.message
    assert state.new_version == 2 and state.restored_version == 3 and state.marked_good == 3
    assert (2, "bad") in fake.marks and (3, "good") in fake.marks
    assert [e for e in fake.log if e[0] in ("apply", "restore")] == [("apply", "2"), ("restore", "3"), ("apply", "3")]
    assert state.verification is not None and not state.verification.healthy
    assert RolloutPhase.REVERIFYING in [p.phase for p in state.phases]
    assert fake.log[-1] == ("resume", "api")


async def test_a_rollout_whose_good_version_fails_too_ends_failed(time_skipping_env, task_queue):
    fake = FakeRollout(spec("api"), healthy_versions=set())
    async for client in running(time_skipping_env, fake, task_queue):
        state = await (await start_rollout(client, task_queue, verify_window=5)).result()
    assert state.status == RolloutStatus.FAILED and "did not verify either" in state.message
    assert fake.log[-1] == ("resume", "api")  # whatever the outcome


# ------------------------------------------------------------------------------------------------- control


async def control(client: Client, task_queue: str, action: str, service: str) -> ControlResult:
    handle = await handles.start_control(
        client,
        task_queue=task_queue,
        nonce=uuid.uuid4().hex[:8],
        inp=ControlInput(service_id=service, action=action, actor="tester"),
    )
    result = await handle.result()
    if result.ok:
        await keep_history(handle, f"control_{action}")
    return result


async def test_an_operator_restart_pauses_supervision_restarts_waits_healthy_and_resumes(time_skipping_env, task_queue):
    fake = FakeServices(spec("api").model_copy(update={"monitored": True}))
    fake.supervised = True
    async for client in running(time_skipping_env, fake, task_queue):
        result = await control(client, task_queue, "restart", "api")
    assert result.ok and result.supervision == "resumed"
    assert fake.log == [("pause", "api"), ("restart", "api"), ("healthy", "api"), ("resume", "api")]


async def test_an_operator_stop_leaves_supervision_paused(time_skipping_env, task_queue):
    fake = FakeServices(spec("api").model_copy(update={"monitored": True}))
    fake.supervised = True
    async for client in running(time_skipping_env, fake, task_queue):
        result = await control(client, task_queue, "stop", "api")
        gone = await control(client, task_queue, "start", "nope")
    assert result.ok and result.supervision == "paused"
    assert fake.log == [("pause", "api"), ("stop", "api")]
    assert not gone.ok and gone.message == "service not found"


# ------------------------------------------------------------------------------------------- recovery start


async def test_a_second_recovery_start_joins_the_running_one(time_skipping_env, task_queue):
    """One recovery of a service at a time: a second start says it joined, with the running run's id (from the
    server's answer to the start itself), and once that run has ended a start begins a new one."""
    client = time_skipping_env.client
    service = f"svc-{uuid.uuid4().hex[:8]}"

    async def start(request_id: str) -> handles.RecoveryStarted:
        return await handles.start_recovery(
            client,
            task_queue=task_queue,
            service_id=service,
            reason="test",
            actor="tester",
            source="api",
            request_id=request_id,
        )

    first = await start("r1")
    second = await start("r2")
    assert first.workflow_id == second.workflow_id == names.recover_id(service)
    assert not first.attached and first.run_id
    assert second.attached and second.run_id == first.run_id
    await client.get_workflow_handle(first.workflow_id).terminate("test over")
    third = await start("r3")
    assert not third.attached and third.run_id != first.run_id
    await client.get_workflow_handle(third.workflow_id).terminate("test over")
