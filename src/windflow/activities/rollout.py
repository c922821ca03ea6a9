"""Config rollout activities: validate, save a version, apply it, probe it, restore the last good one, record.

Each is idempotent, so a retry after a worker died is harmless:

* ``save_rollout_version`` finds the version an earlier try of the same rollout saved (same content, saved on
  top of the expected version by the same rollout) instead of saving a second one;
* ``apply_rollout_config`` does not restart again when the process running now was started after this apply
  was requested (an earlier try restarted it, then the worker died);
* ``restore_good_version`` finds the copy of the good version an earlier try saved (the comment names the
  rollout);
* ``record_rollout`` skips events whose ids are already in the outbox.

Config changes and their ``CONFIG_CHANGED`` events commit in one transaction, like every registry write.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from temporalio import activity

from windflow.activities._support import (
    StateWriter,
    add_new_events,
    heartbeating,
    new_event,
    outbox,
    to_application_error,
)
from windflow.domain.errors import ConfigNotStored, DriverFailed, NotFound, WindflowError
from windflow.domain.events import ConfigChanged, EventType, RolloutUpdate, make_event
from windflow.domain.models import ServiceSpec
from windflow.domain.redaction import REDACTED, contains_placeholder, restore_secrets
from windflow.domain.results import RunStatus
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
    RolloutProbe,
    SaveRolloutInput,
    SaveRolloutResult,
)
from windflow.domain.system import Problem, condition_problems, graph_problems, problems_from
from windflow.drivers.base import DriverRegistry
from windflow.metrics import count_restart
from windflow.persistence.repositories import ConfigVersionRepository, ServiceRepository, content_hash, spec_of
from windflow.persistence.rollout_models import ConfigRolloutRow, RolloutRepository
from windflow.probes.base import ProbeRegistry

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from windflow.persistence.db import Database

services = ServiceRepository()
versions = ConfigVersionRepository()
rollouts = RolloutRepository()
SOURCE = "rollout"


def _now() -> datetime:
    return datetime.now(UTC)


#: how long validation waits for the API to commit the rollout it has just started
PROPOSAL_WAIT = 10.0


def _same_config(spec: ServiceSpec, proposal: dict[str, Any]) -> bool:
    try:
        return ServiceSpec.model_validate({**proposal, "id": spec.id}).content() == spec.content()
    except ValidationError:
        return False


def restore_comment(rollout_id: str, bad_version: int, good_version: int) -> str:
    return f"rollback of version {bad_version} to version {good_version} (rollout {rollout_id})"


class RolloutActivities:
    def __init__(
        self,
        *,
        db: Database,
        drivers: DriverRegistry,
        probes: ProbeRegistry,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.drivers = drivers
        self.probes = probes
        self.on_commit = on_commit
        self.state = StateWriter(db, on_commit)

    def _committed(self) -> None:
        if self.on_commit:
            self.on_commit()

    # ----------------------------------------------------------------- the stored proposal

    async def _stored_row(self, rollout_id: str, service_id: str, *, wait: float = 0.0) -> ConfigRolloutRow:
        """The rollout the API stored (waiting up to ``wait`` seconds: the API commits it right after the start)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            async with self.db.read() as session:
                row = await rollouts.get(session=session, rollout_id=rollout_id) if rollout_id else None
            if row is not None and row.proposal is not None or loop.time() >= deadline:
                break
            activity.heartbeat("waiting for the stored rollout")
            await asyncio.sleep(0.1)
        if row is None or row.proposal is None or row.service_id != service_id:
            raise to_application_error(
                ConfigNotStored(
                    f"config not stored: no rollout {rollout_id!r} of service {service_id!r} was accepted by the API; "
                    "nothing is saved or run (start rollouts through the API)",
                    details={"rollout_id": rollout_id, "service_id": service_id},
                )
            )
        info = activity.info()
        if row.workflow_id != info.workflow_id:
            raise to_application_error(
                ConfigNotStored(
                    f"config not stored: rollout {rollout_id!r} belongs to workflow {row.workflow_id!r}, "
                    f"not {info.workflow_id!r}",
                    details={"rollout_id": rollout_id},
                )
            )
        return row

    async def _stored_proposal(self, rollout_id: str, service_id: str) -> dict[str, Any]:
        row = await self._stored_row(rollout_id, service_id, wait=PROPOSAL_WAIT)
        if row.finished_at is not None:
            raise to_application_error(
                ConfigNotStored(
                    f"config not stored: rollout {rollout_id!r} has ended ({row.status}); "
                    "its proposal is not run again",
                    details={"rollout_id": rollout_id},
                )
            )
        return dict(row.proposal or {})

    # ----------------------------------------------------------------- validate

    @activity.defn(name="prepare_rollout")
    async def prepare_rollout(self, req: PrepareRolloutInput) -> PrepareRolloutResult:
        """Validate the proposed config against the stored service and the graph; find the last good version.

        The config is the proposal the API stored with the rollout (``req.rollout_id``), never one carried by the
        workflow input: a rollout nobody started through the API fails here with ``ConfigNotStored`` and nothing
        is saved or run. Saves nothing. Secrets sent back as the redaction placeholder keep their stored values."""
        proposal = await self._stored_proposal(req.rollout_id, req.service_id)
        if req.config and req.config != proposal:
            raise to_application_error(
                ConfigNotStored(
                    f"config not stored: rollout {req.rollout_id!r} was given a config that is not the one stored "
                    "with it (start rollouts through the API)",
                    details={"rollout_id": req.rollout_id},
                )
            )
        async with self.db.read() as session:
            row = await services.get(session=session, service_id=req.service_id)
            if row is None:
                raise to_application_error(NotFound(f"service {req.service_id!r} not found"))
            merged, moved = restore_secrets({**proposal, "id": req.service_id}, {"id": row.id, **row.spec})
            problems: list[Problem] = [Problem(loc=loc, msg=msg, type="secret_destination") for loc, msg in moved]
            spec: ServiceSpec | None = None
            try:
                spec = None if problems else ServiceSpec.model_validate(merged)
            except ValidationError as exc:
                problems.extend(problems_from(exc))
            if spec is not None:
                if contains_placeholder(spec.content()):
                    problems.append(Problem(loc=["config"], msg=f"{REDACTED!r} is a placeholder for a secret"))
                graph = await services.graph(session=session)
                graph[spec.id] = list(spec.depends_on)
                problems.extend(graph_problems(graph))
                if not problems:
                    rows = await services.all(session=session)
                    others = []
                    for other in rows:
                        if other.id != spec.id:
                            with contextlib.suppress(ValidationError):  # one that no longer validates
                                others.append(spec_of(other))
                    problems.extend(condition_problems([*others, spec]))
            if problems or spec is None:
                return PrepareRolloutResult(valid=False, problems=[p.model_dump() for p in problems])
            good = await versions.last_good(session=session, service_id=req.service_id)
            # what runs is the applied version: the one to fall back to when none was marked good, and a
            # proposal equal to a saved but pending version still has something to do (apply it)
            running = row.applied_version or row.current_version
            return PrepareRolloutResult(
                valid=True,
                spec=spec,
                current_version=row.current_version,
                good_version=good.version if good is not None else running,
                good_is_implicit=good is None,
                unchanged=spec.content() == row.spec and running == row.current_version,
            )

    # ----------------------------------------------------------------- save / restore

    @activity.defn(name="save_rollout_version")
    async def save_rollout_version(self, req: SaveRolloutInput) -> SaveRolloutResult:
        """Save the proposed config as the next version (compare-and-set on ``expected_version``)."""
        spec = req.spec
        content = spec.content()
        stored = await self._stored_row(req.rollout_id, spec.id)
        # what is saved is what the API accepted, by whom it accepted it: the spec must be the stored proposal
        # (secrets restored, validated) and the author and comment are the stored rollout's, not the input's
        author, comment = stored.actor, stored.comment
        if not _same_config(spec, stored.proposal or {}):
            raise to_application_error(
                ConfigNotStored(
                    f"config not stored: the config to save is not the one stored with rollout {req.rollout_id!r}",
                    details={"rollout_id": req.rollout_id},
                )
            )
        try:
            async with self.db.write() as session:
                row = await services.require(session=session, service_id=spec.id, for_update=True)
                if req.mark_good_first:
                    await self._mark_if_unmarked(session, spec.id, req.good_version)
                if row.current_version == req.expected_version + 1:
                    latest = await versions.get(session=session, service_id=spec.id, version=row.current_version)
                    if (
                        latest.content_hash == content_hash(content)
                        and latest.author == author
                        and latest.comment == comment
                    ):
                        return SaveRolloutResult(version=latest.version)  # an earlier try saved it
                version = await services.update(
                    session=session, spec=spec, expected_version=req.expected_version, author=author, comment=comment
                )
                if version is None:
                    # saved before but not applied (pending): this rollout applies that very version
                    pending = row.applied_version is not None and row.applied_version != row.current_version
                    return SaveRolloutResult(version=row.current_version, changed=pending)
                await self._config_changed(session, spec.id, version.version, author, comment, "update")
        except WindflowError as exc:
            raise to_application_error(exc) from None
        self._committed()
        return SaveRolloutResult(version=version.version)

    @activity.defn(name="restore_good_version")
    async def restore_good_version(self, req: RestoreRolloutInput) -> RestoreRolloutResult:
        """Save a copy of the last good version as the current one and mark the failed version bad."""
        comment = restore_comment(req.rollout_id, req.bad_version, req.good_version)
        author = (await self._stored_row(req.rollout_id, req.service_id)).actor  # the API's caller, not the input's
        try:
            async with self.db.write() as session:
                row = await services.require(session=session, service_id=req.service_id, for_update=True)
                good = await versions.get(session=session, service_id=req.service_id, version=req.good_version)
                spec = ServiceSpec.model_validate({**good.content, "id": req.service_id})
                bad = await versions.get(session=session, service_id=req.service_id, version=req.bad_version)
                if bad.status != "good":
                    bad.status = "bad"
                latest = await versions.get(session=session, service_id=req.service_id, version=row.current_version)
                if latest.reverted_from == req.good_version and latest.comment == comment:
                    return RestoreRolloutResult(version=latest.version, spec=spec)  # an earlier try restored it
                version = await services.update(
                    session=session,
                    spec=spec,
                    expected_version=None,
                    author=author,
                    comment=comment,
                    reverted_from=req.good_version,
                )
                assert version is not None  # reverted_from: always a new version
                await self._config_changed(session, req.service_id, version.version, author, comment, "rollback")
        except WindflowError as exc:
            raise to_application_error(exc) from None
        self._committed()
        return RestoreRolloutResult(version=version.version, spec=spec)

    @activity.defn(name="mark_config_version")
    async def mark_config_version(self, req: MarkVersionInput) -> None:
        try:
            async with self.db.write() as session:
                await versions.mark(session=session, service_id=req.service_id, version=req.version, status=req.status)
        except WindflowError as exc:
            raise to_application_error(exc) from None

    async def _mark_if_unmarked(self, session: AsyncSession, service_id: str, version: int) -> None:
        """The version applied when none was ever marked good counts as good: record it so."""
        if await versions.last_good(session=session, service_id=service_id) is None:
            await versions.mark(session=session, service_id=service_id, version=version, status="good")

    async def _config_changed(
        self, session: AsyncSession, service_id: str, version: int, author: str, comment: str, change: str
    ) -> None:
        event = new_event(
            EventType.CONFIG_CHANGED,
            ConfigChanged(service_id=service_id, version=version, author=author, comment=comment, change=change),
        )
        await outbox.add(session=session, event=event)

    # ----------------------------------------------------------------- apply and probe

    async def _require_stored_version(self, spec: ServiceSpec) -> None:
        """Refuse to run a config the store does not hold as a version of the service (``ConfigNotStored``)."""
        async with self.db.read() as session:
            if await versions.holds(session=session, service_id=spec.id, content=spec.content()):
                return
        raise to_application_error(
            ConfigNotStored(
                f"config not stored: service {spec.id!r} has no stored version with this config; nothing is run",
                details={"service_id": spec.id},
            )
        )

    @activity.defn(name="apply_rollout_config")
    async def apply_rollout_config(self, req: ApplyRolloutInput) -> ApplyRolloutResult:
        """Apply the config: the driver's ``reload`` when it has one, else a restart. Heartbeats meanwhile."""
        spec = req.spec
        await self._require_stored_version(spec)
        driver = self.drivers.for_service(spec)
        activity.heartbeat("applying")
        reload = getattr(driver, "reload", None)
        try:
            if callable(reload):
                result = await heartbeating(reload(spec), "reloading")
                action = "reload"
            else:
                status = await driver.status(spec)
                if (
                    status.status == RunStatus.RUNNING
                    and status.started_at is not None
                    and status.started_at >= req.requested_at
                ):
                    return ApplyRolloutResult(
                        action="none", pid=status.pid, message=f"already restarted with this config (pid {status.pid})"
                    )
                await self.state.set_state(
                    spec.id, "starting", source=SOURCE, message=f"applying config (rollout {req.rollout_id})"
                )
                result = await heartbeating(driver.restart(spec), "restarting")  # a stop may take its grace
                action = "restart"
        except WindflowError as exc:
            await self.state.set_state(spec.id, "failed", source=SOURCE, message=f"apply: {exc.message}")
            raise to_application_error(exc) from None
        activity.heartbeat(action)
        if not result.ok:
            await self.state.set_state(spec.id, "failed", source=SOURCE, message=f"{action}: {result.message}")
            raise to_application_error(
                DriverFailed(f"{action} {spec.id}: {result.message}", details={"output": result.output[-2000:]})
            )
        if action == "restart":
            count_restart(spec.id, source="rollout")
        await self.state.set_state(
            spec.id,
            "starting",
            source=SOURCE,
            pid=result.pid,
            message=f"config applied ({action})",
            applied_content=spec.content(),
        )
        return ApplyRolloutResult(action=action, pid=result.pid, message=result.message)

    @activity.defn(name="probe_rollout")
    async def probe_rollout(self, req: ProbeRolloutInput) -> RolloutProbe:
        """One observation: is the process running, and does the health probe pass?"""
        spec = req.spec
        status = await self.drivers.for_service(spec).status(spec)
        running = status.status != RunStatus.STOPPED
        if not running:
            return RolloutProbe(
                at=_now(),
                healthy=False,
                running=False,
                message=f"not running: {status.message}" if status.message else "not running",
            )
        probe = spec.readiness_spec()
        if probe is None:
            return RolloutProbe(at=_now(), healthy=True, running=True, message="no health check; running")
        begin = time.monotonic()
        result = await self.probes.check(probe, service=spec.id)
        return RolloutProbe(
            at=result.checked_at,
            healthy=result.healthy,
            running=True,
            latency_ms=result.latency_ms or (time.monotonic() - begin) * 1000,
            message=result.message,
        )

    @activity.defn(name="set_rollout_service_state")
    async def set_rollout_service_state(self, req: MarkVersionInput) -> None:
        """The service's state column after a verification (``req.status``: healthy | failed)."""
        verdict = "verified" if req.status == "healthy" else "failed verification"
        await self.state.set_state(
            req.service_id, req.status, source=SOURCE, message=f"config version {req.version} {verdict}"
        )

    # ----------------------------------------------------------------- record

    @activity.defn(name="record_rollout")
    async def record_rollout(self, req: RecordRolloutInput) -> None:
        """Upsert the rollout row and publish its ROLLOUT_UPDATE events (ids come from the workflow)."""
        st = req.state
        async with self.db.write() as session:
            if await services.get(session=session, service_id=st.service_id) is None:
                return  # the service was deleted meanwhile (its history went with it)
            existing = await rollouts.get(session=session, rollout_id=st.rollout_id)
            if existing is not None and (
                existing.service_id != st.service_id or existing.workflow_id != activity.info().workflow_id
            ):
                return  # another workflow's rollout: a record never rewrites someone else's history
            if existing is not None and existing.finished_at is not None and existing.started_at != st.started_at:
                return  # a later run reusing an ended rollout's id does not rewrite its outcome
            # the row is the API's (it stores the rollout before it starts the workflow): a record never creates
            # one, so a rollout started on Temporal directly leaves no history row in the name of its input's actor
            # (its failure is in the workflow's result and its events); a record that runs before the API's
            # commit is only a progress note, written again by the next one
            if existing is not None:
                await rollouts.upsert(
                    session=session,
                    rollout_id=st.rollout_id,
                    service_id=st.service_id,
                    workflow_id=st.workflow_id,
                    status=st.status.value,
                    phase=st.phase.value,
                    actor=existing.actor,
                    verify_window=st.verify_window,
                    comment=existing.comment,
                    message=st.message,
                    previous_version=st.previous_version,
                    good_version=st.good_version,
                    new_version=st.new_version,
                    restored_version=st.restored_version,
                    state=st.model_dump(mode="json"),
                    started_at=st.started_at,
                    finished_at=st.finished_at if req.final else None,
                )
            await add_new_events(
                session,
                [
                    make_event(
                        EventType.ROLLOUT_UPDATE,
                        RolloutUpdate.model_validate(data),
                        event_id=event_id,
                        timestamp=req.timestamp,
                    )
                    for event_id, data in zip(req.event_ids, req.events, strict=True)
                ],
            )
        self._committed()
