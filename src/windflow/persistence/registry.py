"""Service registry use cases: create, change, revert, delete services and apply whole systems.

Each function runs inside the caller's unit of work (it never commits) and writes its events to the
outbox in the same transaction, so a change and its event cannot diverge.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from windflow.domain.errors import ConfigInvalid, Conflict
from windflow.domain.events import ConfigChanged, EventType, make_event
from windflow.domain.graph import dependants
from windflow.domain.models import ServiceSpec
from windflow.domain.privilege import check_exec
from windflow.domain.redaction import REDACTED, contains_placeholder, restore_secrets
from windflow.domain.system import (
    Problem,
    SystemFile,
    condition_problems,
    graph_problems,
    keep_recorded_cwd,
    problems_from,
)
from windflow.outbound import Outbound, url_problems
from windflow.persistence.models import ConfigVersionRow, ServiceRow
from windflow.persistence.notifications import NotificationChannelRepository
from windflow.persistence.repositories import (
    ConfigVersionRepository,
    OutboxRepository,
    ServiceRepository,
    spec_of,
)

services_repo = ServiceRepository()
versions_repo = ConfigVersionRepository()
outbox_repo = OutboxRepository()
channels_repo = NotificationChannelRepository()


def _invalid(problems: list[Problem], message: str | None = None) -> ConfigInvalid:
    first = problems[0]
    text = message or f"invalid service: {first.path}: {first.msg}"
    if len(problems) > 1 and message is None:
        text += f" (and {len(problems) - 1} more)"
    return ConfigInvalid(text, details=[p.model_dump() for p in problems])


def parse_spec(data: dict[str, Any], *, prefix: list[str | int] | None = None) -> ServiceSpec:
    try:
        return ServiceSpec.model_validate(data)
    except ValidationError as exc:
        raise _invalid(problems_from(exc, prefix or [])) from None


async def emit_config_changed(
    *, session: AsyncSession, service_id: str, version: int, author: str, comment: str, change: str
) -> None:
    event = make_event(
        EventType.CONFIG_CHANGED,
        ConfigChanged(service_id=service_id, version=version, author=author, comment=comment, change=change),
        event_id=str(uuid.uuid4()),
        timestamp=datetime.now(UTC),
    )
    await outbox_repo.add(session=session, event=event)


async def check_graph_with(
    *, session: AsyncSession, specs: list[ServiceSpec], removed: frozenset[str] | set[str] = frozenset()
) -> None:
    graph = {k: v for k, v in (await services_repo.graph(session=session)).items() if k not in removed}
    for spec in specs:
        graph[spec.id] = list(spec.depends_on)
    problems = graph_problems(graph)
    if not problems:
        existing = await services_repo.all(session=session)
        problems = condition_problems(_overlay(existing, specs, removed))
    if problems:
        raise _invalid(problems, message=problems[0].msg)


def _overlay(
    rows: Iterable[ServiceRow], specs: Iterable[ServiceSpec], removed: Iterable[str] = ()
) -> list[ServiceSpec]:
    """The stored specs with ``specs`` in place of theirs (a stored one that no longer validates is left out)."""
    by_id: dict[str, ServiceSpec] = {}
    gone = set(removed)
    for row in rows:
        if row.id in gone:
            continue
        with contextlib.suppress(ValidationError):
            by_id[row.id] = spec_of(row)
    by_id.update({s.id: s for s in specs})
    return list(by_id.values())


def check_outbound(
    spec: ServiceSpec,
    outbound: Outbound | None,
    prefix: list[str | int] | None = None,
) -> list[Problem]:
    """The spec's URLs the outbound policy refuses (metadata hosts, refused literal addresses)."""
    if outbound is None:
        return []
    return [
        Problem(loc=loc, msg=msg, type="outbound_refused")
        for loc, msg in url_problems(spec.content(), outbound.services, prefix)
    ]


def _require_outbound(spec: ServiceSpec, outbound: Outbound | None) -> None:
    problems = check_outbound(spec, outbound)
    if problems:
        raise _invalid(problems)


async def create_service(
    *,
    session: AsyncSession,
    spec: ServiceSpec,
    author: str,
    comment: str = "",
    may_exec: bool = True,
    outbound: Outbound | None = None,
) -> ConfigVersionRow:
    """``may_exec``: the author holds ``services:exec`` (else a spec that runs code on a host is refused)."""
    check_exec(None, spec, may_exec=may_exec)
    if contains_placeholder(spec.content()):
        raise ConfigInvalid(f"{REDACTED!r} is a placeholder, not a value: give the real secret")
    _require_outbound(spec, outbound)
    if await services_repo.get(session=session, service_id=spec.id) is not None:
        raise Conflict(f"service {spec.id!r} already exists", details={"service_id": spec.id})
    await check_graph_with(session=session, specs=[spec])
    version = await services_repo.create(session=session, spec=spec, author=author, comment=comment)
    await emit_config_changed(
        session=session, service_id=spec.id, version=1, author=author, comment=comment, change="create"
    )
    return version


def merge_secrets(
    new: dict[str, Any], old_row: ServiceRow, *, prefix: list[str | int] | None = None
) -> tuple[dict[str, Any], list[Problem]]:
    """A client that read a redacted config and sends it back keeps the stored secrets, as long as each one
    still goes where it went (see :func:`restore_secrets`); the rest are problems."""
    merged, moved = restore_secrets(new, {"id": old_row.id, **old_row.spec})
    return merged, [Problem(loc=[*(prefix or []), *loc], msg=msg, type="secret_destination") for loc, msg in moved]


def merge_and_parse(new: dict[str, Any], old_row: ServiceRow, *, outbound: Outbound | None = None) -> ServiceSpec:
    """:func:`merge_secrets` then :func:`parse_spec`: a secret sent back for a new destination is a 422, and
    so is a URL the outbound policy refuses."""
    merged, moved = merge_secrets(new, old_row)
    if moved:
        raise _invalid(moved)
    spec = parse_spec(merged)
    _require_outbound(spec, outbound)
    return spec


async def update_service(
    *,
    session: AsyncSession,
    service_id: str,
    data: dict[str, Any],
    expected_version: int | None,
    author: str,
    comment: str = "",
    may_exec: bool = True,
    outbound: Outbound | None = None,
) -> tuple[ServiceRow, ConfigVersionRow | None]:
    row = await services_repo.require(session=session, service_id=service_id, for_update=True)
    spec = merge_and_parse({**data, "id": service_id}, row, outbound=outbound)
    check_exec(spec_of(row), spec, may_exec=may_exec)
    if contains_placeholder(spec.content()):
        raise ConfigInvalid(f"{REDACTED!r} is a placeholder, not a value: give the real secret")
    await check_graph_with(session=session, specs=[spec])
    version = await services_repo.update(
        session=session, spec=spec, expected_version=expected_version, author=author, comment=comment
    )
    if version is not None:
        await emit_config_changed(
            session=session,
            service_id=service_id,
            version=version.version,
            author=author,
            comment=comment,
            change="update",
        )
    return row, version


async def revert_service(
    *,
    session: AsyncSession,
    service_id: str,
    to_version: int,
    expected_version: int | None,
    author: str,
    comment: str = "",
    may_exec: bool = True,
) -> ConfigVersionRow:
    row = await services_repo.require(session=session, service_id=service_id, for_update=True)
    old = await versions_repo.get(session=session, service_id=service_id, version=to_version)
    spec = parse_spec({**old.content, "id": service_id})
    check_exec(spec_of(row), spec, may_exec=may_exec)
    await check_graph_with(session=session, specs=[spec])
    version = await services_repo.update(
        session=session,
        spec=spec,
        expected_version=expected_version,
        author=author,
        comment=comment or f"revert to version {to_version}",
        reverted_from=to_version,
    )
    assert version is not None
    await emit_config_changed(
        session=session,
        service_id=service_id,
        version=version.version,
        author=author,
        comment=version.comment,
        change="revert",
    )
    return version


async def check_deletable(*, session: AsyncSession, service_id: str, force: bool) -> list[str]:
    """The direct dependants of ``service_id``; :class:`Conflict` when there are some and not ``force``."""
    graph = await services_repo.graph(session=session)
    direct = sorted(n for n, deps in graph.items() if service_id in deps)
    if direct and not force:
        raise Conflict(
            f"service {service_id!r} is a dependency of {', '.join(direct)}; delete those first or use force",
            details={"dependants": direct, "all_dependants": sorted(dependants(graph, service_id))},
        )
    return direct


async def delete_service(*, session: AsyncSession, service_id: str, force: bool, author: str) -> list[str]:
    """Delete a service. Refused while others depend on it unless ``force`` (which unlinks them)."""
    await services_repo.require(session=session, service_id=service_id, for_update=True)
    direct = await check_deletable(session=session, service_id=service_id, force=force)
    for name in direct:
        row = await services_repo.require(session=session, service_id=name, for_update=True)
        spec = spec_of(row)
        spec = spec.model_copy(update={"depends_on": {d: c for d, c in spec.depends_on.items() if d != service_id}})
        comment = f"dependency {service_id!r} deleted"
        version = await services_repo.update(
            session=session, spec=spec, expected_version=None, author=author, comment=comment
        )
        if version is not None:
            await emit_config_changed(
                session=session,
                service_id=name,
                version=version.version,
                author=author,
                comment=comment,
                change="update",
            )
    await services_repo.delete(session=session, service_id=service_id)
    await emit_config_changed(
        session=session, service_id=service_id, version=0, author=author, comment="deleted", change="delete"
    )
    return direct


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged, "deleted": self.deleted}


async def apply_system(
    *,
    session: AsyncSession,
    system: SystemFile,
    author: str,
    prune: bool = False,
    comment: str = "",
    may_exec: bool = True,
    outbound: Outbound | None = None,
) -> ApplyResult:
    """Make the registry hold ``system``: all-or-nothing (the caller's transaction rolls back on error).

    Without ``may_exec`` a service whose exec surface (command, exec probe, env, user) would be created or
    changed refuses the whole file (403)."""
    existing = {r.id: r for r in await services_repo.all(session=session)}
    wanted = {s.id: s for s in system.services}
    removed = set(existing) - set(wanted) if prune else set()
    merged_specs, problems = _merged_with_stored(system, existing, may_exec=may_exec, outbound=outbound)
    graph = {k: list(r.depends_on or []) for k, r in existing.items() if k not in removed}
    graph.update({s.id: list(s.depends_on) for s in merged_specs})
    problems.extend(graph_problems(graph))
    if not problems:
        problems.extend(condition_problems(_overlay(existing.values(), merged_specs, removed)))
    channels, channel_problems = await channels_repo.plan(session=session, system=system)
    problems.extend(channel_problems)
    if outbound is not None:
        for i, channel in enumerate(channels or []):
            problems.extend(
                Problem(loc=["notifications", "channels", i, *loc], msg=msg, type="outbound_refused")
                for loc, msg in url_problems(channel.model_dump(mode="json"), outbound.notify)
            )
    if problems:
        raise _invalid(problems, message=f"invalid system: {problems[0].path}: {problems[0].msg}")
    result = await _write_services(
        session, merged_specs, existing, removed, author=author, note=comment or "applied from system file"
    )
    if channels is not None:
        await channels_repo.replace(session=session, channels=channels)
    return result


def _merged_with_stored(
    system: SystemFile, existing: dict[str, ServiceRow], *, may_exec: bool, outbound: Outbound | None
) -> tuple[list[ServiceSpec], list[Problem]]:
    """The file's services with the stored secrets and working directories they leave out, and what is wrong
    with them (a moved secret, a placeholder, an exec change the caller may not make, a refused URL)."""
    problems: list[Problem] = []
    merged_specs: list[ServiceSpec] = []
    for spec in system.services:
        if spec.id in existing:
            merged, moved = merge_secrets(spec.model_dump(mode="json"), existing[spec.id], prefix=["services", spec.id])
            if moved:
                problems.extend(moved)
                continue
            try:
                spec = keep_recorded_cwd(ServiceSpec.model_validate(merged), spec_of(existing[spec.id]))
            except ValidationError as exc:
                problems.extend(problems_from(exc, ["services", spec.id]))
                continue
        if contains_placeholder(spec.content()):
            problems.append(Problem(loc=["services", spec.id], msg=f"{REDACTED!r} is a placeholder for a secret"))
        check_exec(spec_of(existing[spec.id]) if spec.id in existing else None, spec, may_exec=may_exec)
        problems.extend(check_outbound(spec, outbound, ["services", spec.id]))
        merged_specs.append(spec)
    return merged_specs, problems


async def _write_services(
    session: AsyncSession,
    merged_specs: list[ServiceSpec],
    existing: dict[str, ServiceRow],
    removed: set[str],
    *,
    author: str,
    note: str,
) -> ApplyResult:
    """Create, update (a new version only when the content changed) and delete, each with its event."""
    result = ApplyResult()
    # creates first in dependency order is not needed: the graph was checked as a whole
    for spec in merged_specs:
        if spec.id not in existing:
            await services_repo.create(session=session, spec=spec, author=author, comment=note)
            await emit_config_changed(
                session=session, service_id=spec.id, version=1, author=author, comment=note, change="create"
            )
            result.created.append(spec.id)
            continue
        version = await services_repo.update(
            session=session, spec=spec, expected_version=None, author=author, comment=note
        )
        if version is None:
            result.unchanged.append(spec.id)
        else:
            await emit_config_changed(
                session=session,
                service_id=spec.id,
                version=version.version,
                author=author,
                comment=note,
                change="update",
            )
            result.updated.append(spec.id)
    for sid in sorted(removed):
        await services_repo.delete(session=session, service_id=sid)
        await emit_config_changed(
            session=session, service_id=sid, version=0, author=author, comment=note, change="delete"
        )
        result.deleted.append(sid)
    return result
