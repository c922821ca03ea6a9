"""Repositories: async, keyword-only ``session``, never commit (the unit of work owns the transaction)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import Select, and_, bindparam, case, delete, func, insert, literal_column, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from windflow.domain.errors import ConfigInvalid, NotFound, VersionConflict
from windflow.domain.events import Event
from windflow.domain.models import ServiceSpec
from windflow.domain.results import ProbeResult
from windflow.persistence.db import affected_rows
from windflow.persistence.models import (
    AuditRow,
    ConfigTemplateRow,
    ConfigVersionRow,
    OutboxRow,
    ProbeResultRow,
    RunSummaryRow,
    ServiceRow,
    StatusHistoryRow,
    utcnow,
)

if TYPE_CHECKING:
    from windflow.persistence.db import Database

T = TypeVar("T")
MAX_LIMIT = 500


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


#: a cursor's numbers are row ids, version numbers and offsets: what a 64-bit signed column holds
CURSOR_INT_MAX = 2**63 - 1


def _cursor_value_ok(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return 0 <= value <= CURSOR_INT_MAX
    if isinstance(value, str):
        return len(value) <= 256 and "\x00" not in value
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    return False


def decode_cursor(cursor: str | None) -> dict[str, Any]:
    """The position a cursor names; 422 for anything this API did not hand out (not base64 JSON, a number beyond
    a 64-bit column, a NUL, a nested value, an unreadable timestamp)."""
    if not cursor:
        return {}
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        if not isinstance(data, dict) or not all(_cursor_value_ok(v) for v in data.values()):
            raise ValueError
        for key in ("started_at", "at"):
            if key in data:
                datetime.fromisoformat(str(data[key]))
        return data
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ConfigInvalid("invalid cursor", details=[{"loc": ["query", "cursor"], "msg": "not a cursor"}]) from None


def content_hash(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _search_text(spec: ServiceSpec) -> str:
    labels = " ".join(f"{k} {v} {k}={v}" for k, v in sorted(spec.labels.items()))
    return f"{spec.id} {spec.id.replace('-', ' ').replace('_', ' ')} {spec.description} {labels}".strip()


def spec_of(row: ServiceRow) -> ServiceSpec:
    """The latest saved config (what an initialization applies)."""
    return ServiceSpec.model_validate({"id": row.id, **row.spec})


#: the parts of a config that decide what runs; a change elsewhere (probes, restart policy, labels,
#: dependencies) is applied as it is saved, since nothing has to be restarted for it
RUN_KEYS = ("driver", "config", "host")


def run_part(content: dict[str, Any]) -> dict[str, Any]:
    return {k: content.get(k) for k in RUN_KEYS}


async def applied_spec_of(*, session: AsyncSession, row: ServiceRow) -> ServiceSpec:
    """What runs: the applied version's command with the saved version's observation settings.

    A service never applied (no initialization, start or rollout yet) runs its latest version. A saved version
    whose run part differs from the applied one is pending: recoveries and restarts keep running the applied one.
    """
    if row.applied_version is None or row.applied_version == row.current_version:
        return spec_of(row)
    applied = (
        await session.execute(
            select(ConfigVersionRow.content).where(
                ConfigVersionRow.service_id == row.id, ConfigVersionRow.version == row.applied_version
            )
        )
    ).scalar_one_or_none()
    if applied is None:
        return spec_of(row)
    return ServiceSpec.model_validate({"id": row.id, **row.spec, **run_part(applied)})


async def version_of_content(*, session: AsyncSession, service_id: str, content: dict[str, Any]) -> int | None:
    """The newest version whose run part is ``content``'s (the version a started spec came from)."""
    wanted = run_part(content)
    stmt = (
        select(ConfigVersionRow.version, ConfigVersionRow.content)
        .where(ConfigVersionRow.service_id == service_id)
        .order_by(ConfigVersionRow.version.desc())
    )
    for version, stored in (await session.execute(stmt)).all():
        if run_part(stored) == wanted:
            return int(version)
    return None


# --------------------------------------------------------------------------- services


_STAMP: dict[str, Select[Any]] = {}
_INSERT_AUDIT = insert(AuditRow)  # built once, run per request (synchronous units of work)
_INSERT_OUTBOX = insert(OutboxRow)
#: services as users declared them: not the replicas windflow derives from a replicated one
_SERVICES = ServiceRow.replica_of.is_(None)
_EXISTS = select(ServiceRow.id).where(ServiceRow.id == bindparam("service_id"))  # built once, run per request


class ServiceRepository:
    async def get(self, *, session: AsyncSession, service_id: str, for_update: bool = False) -> ServiceRow | None:
        if for_update and session.bind is not None and session.bind.dialect.name == "postgresql":
            stmt = select(ServiceRow).where(ServiceRow.id == service_id).with_for_update()
            return (await session.execute(stmt)).scalar_one_or_none()
        return await session.get(ServiceRow, service_id)  # a row this session already loaded costs no query

    async def require(self, *, session: AsyncSession, service_id: str, for_update: bool = False) -> ServiceRow:
        row = await self.get(session=session, service_id=service_id, for_update=for_update)
        if row is None:
            raise NotFound(f"service {service_id!r} not found", details={"service_id": service_id})
        return row

    async def require_exists(self, *, db: Database, service_id: str) -> None:
        """:meth:`require` without loading the row, outside any session (:meth:`Database.rows`)."""
        if not await db.rows(_EXISTS, {"service_id": service_id}):
            raise NotFound(f"service {service_id!r} not found", details={"service_id": service_id})

    async def ids(self, *, session: AsyncSession) -> list[str]:
        return list((await session.execute(select(ServiceRow.id).where(_SERVICES).order_by(ServiceRow.id))).scalars())

    async def graph(self, *, session: AsyncSession) -> dict[str, list[str]]:
        rows = await session.execute(select(ServiceRow.id, ServiceRow.depends_on).where(_SERVICES))
        return {sid: list(deps or []) for sid, deps in rows}

    async def states(self, *, session: AsyncSession) -> list[tuple[str, str, int]]:
        """``(id, state, restarts_total)`` of every service: no ORM objects, no spec (the metrics feed's read)."""
        rows = await session.execute(
            select(ServiceRow.id, ServiceRow.state, ServiceRow.restarts_total).order_by(ServiceRow.id)
        )
        return [(sid, state, int(restarts or 0)) for sid, state, restarts in rows]

    async def all(self, *, session: AsyncSession) -> list[ServiceRow]:
        """Every service as users declared it (a replicated service once, without its replicas)."""
        return list((await session.execute(select(ServiceRow).where(_SERVICES).order_by(ServiceRow.id))).scalars())

    async def units(self, *, session: AsyncSession) -> list[ServiceRow]:
        """Every service that runs a process of its own: the plain services and the replicas of replicated ones
        (what watchers and sweeps look after), not the replicated services' own rows."""
        rows = (await session.execute(select(ServiceRow).order_by(ServiceRow.id))).scalars()
        return [r for r in rows if not r.replicated]

    async def replicas_of(self, *, session: AsyncSession, service_id: str) -> list[ServiceRow]:
        """The replica rows of a replicated service, by index (those a scale-down is still removing included)."""
        stmt = select(ServiceRow).where(ServiceRow.replica_of == service_id).order_by(ServiceRow.replica_index)
        return list((await session.execute(stmt)).scalars())

    async def sync_replicas(self, *, session: AsyncSession, spec: ServiceSpec) -> list[str]:
        """Make replicas ``0 … replicas-1`` of ``spec`` exist with its current config (``{replica}`` replaced);
        returns their ids. Replicas beyond the count stay until a scale-down has stopped them
        (:meth:`remove_replica`)."""
        if not spec.replicated:
            return []
        parent = await self.require(session=session, service_id=spec.id)
        existing = {r.replica_index: r for r in await self.replicas_of(session=session, service_id=spec.id)}
        ids = []
        for k in range(spec.replicas or 0):
            unit = spec.replica_spec(k)
            ids.append(unit.id)
            content = unit.content()
            row = existing.get(k)
            if row is None:
                session.add(
                    ServiceRow(
                        id=unit.id,
                        description=unit.description,
                        labels=unit.labels,
                        driver=unit.driver.value,
                        monitored=unit.monitored,
                        depends_on=list(unit.depends_on),
                        host=unit.host,
                        current_version=parent.current_version,
                        spec=content,
                        search_text=_search_text(unit),
                        state="unknown",
                        state_detail={},
                        replica_of=spec.id,
                        replica_index=k,
                        desired=None,
                    )
                )
            elif row.spec != content or row.current_version != parent.current_version:
                row.spec = content
                row.monitored = unit.monitored
                row.depends_on = list(unit.depends_on)
                row.host = unit.host
                row.current_version = parent.current_version
                row.applied_version = None
        await session.flush()
        return ids

    async def remove_replica(self, *, session: AsyncSession, replica_id: str) -> bool:
        """Forget a replica a scale-down has stopped (its probe results too); False when it was gone."""
        row = await self.get(session=session, service_id=replica_id)
        if row is None or row.replica_of is None:
            return False
        await session.execute(delete(ProbeResultRow).where(ProbeResultRow.service_id == replica_id))
        await session.delete(row)
        await session.flush()
        return True

    async def specs(self, *, session: AsyncSession, ids: Sequence[str] | None = None) -> list[ServiceSpec]:
        stmt = select(ServiceRow).where(_SERVICES).order_by(ServiceRow.id)
        if ids is not None:
            stmt = stmt.where(ServiceRow.id.in_(list(ids)))
        return [spec_of(r) for r in (await session.execute(stmt)).scalars()]

    async def get_all(
        self,
        *,
        session: AsyncSession,
        limit: int = 50,
        cursor: str | None = None,
        labels: dict[str, str] | None = None,
        driver: str | None = None,
        monitored: bool | None = None,
        state: str | None = None,
        q: str | None = None,
    ) -> Page[ServiceRow]:
        limit = max(1, min(limit, MAX_LIMIT))
        position = decode_cursor(cursor)
        stmt: Select[Any] = select(ServiceRow).where(_SERVICES)
        if driver:
            stmt = stmt.where(ServiceRow.driver == driver)
        if monitored is not None:
            stmt = stmt.where(ServiceRow.monitored == monitored)
        if state:
            stmt = stmt.where(ServiceRow.state == state)
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        for key, value in (labels or {}).items():
            stmt = stmt.where(ServiceRow.labels[key].as_string() == value)
        if q and q.strip():
            return await self._search(
                session=session, stmt=stmt, q=q.strip(), limit=limit, position=position, dialect=dialect
            )
        after = position.get("after")
        if after is not None:
            stmt = stmt.where(ServiceRow.id > str(after))
        rows = list((await session.execute(stmt.order_by(ServiceRow.id).limit(limit + 1))).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor({"after": rows[-1].id}) if more and rows else None)

    async def _search(
        self, *, session: AsyncSession, stmt: Select[Any], q: str, limit: int, position: dict[str, Any], dialect: str
    ) -> Page[ServiceRow]:
        offset = int(position.get("offset", 0)) if str(position.get("offset", 0)).isdigit() else 0
        if dialect == "postgresql":
            vector = func.to_tsvector(literal_column("'simple'"), ServiceRow.search_text)
            query = func.websearch_to_tsquery(literal_column("'simple'"), q)
            prefix = or_(*(ServiceRow.search_text.ilike(f"%{_escape_like(t)}%", escape="\\") for t in q.split()))
            rank = func.ts_rank(vector, query)
            stmt = stmt.where(or_(vector.op("@@")(query), prefix)).order_by(rank.desc(), ServiceRow.id)
        else:
            terms = [t for t in q.split() if t]
            stmt = stmt.where(and_(*(ServiceRow.search_text.ilike(f"%{_escape_like(t)}%", escape="\\") for t in terms)))
            # rank: an exact id match first, then id prefix matches, then the rest by id
            stmt = stmt.order_by((ServiceRow.id != q), ~ServiceRow.id.startswith(q), ServiceRow.id)
        rows = list((await session.execute(stmt.offset(offset).limit(limit + 1))).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor({"offset": offset + limit}) if more else None)

    async def create(
        self, *, session: AsyncSession, spec: ServiceSpec, author: str, comment: str = ""
    ) -> ConfigVersionRow:
        content = spec.content()
        row = ServiceRow(
            id=spec.id,
            description=spec.description,
            labels=spec.labels,
            driver=spec.driver.value,
            monitored=spec.monitored,
            depends_on=list(spec.depends_on),
            host=spec.host,
            current_version=1,
            spec=content,
            search_text=_search_text(spec),
            state="unknown",
            state_detail={},
        )
        session.add(row)
        await session.flush()  # the parent row first: versions reference it
        version = ConfigVersionRow(
            service_id=spec.id,
            version=1,
            content=content,
            content_hash=content_hash(content),
            author=author,
            comment=comment,
        )
        session.add(version)
        await session.flush()
        await self.sync_replicas(session=session, spec=spec)
        return version

    async def update(
        self,
        *,
        session: AsyncSession,
        spec: ServiceSpec,
        expected_version: int | None,
        author: str,
        comment: str = "",
        reverted_from: int | None = None,
    ) -> ConfigVersionRow | None:
        """Save ``spec`` as the next version. Returns ``None`` when the content did not change.

        The compare-and-set on ``current_version`` makes concurrent writers with the same expected
        version produce exactly one new version; the others get :class:`VersionConflict`.
        """
        row = await self.require(session=session, service_id=spec.id, for_update=True)
        if row.replica_of is not None:
            raise ConfigInvalid(f"{spec.id} is a replica of {row.replica_of}: change {row.replica_of} instead")
        if row.replicated != spec.replicated:
            raise ConfigInvalid(
                f"replicas: {spec.id} is {'' if row.replicated else 'not '}replicated; a service cannot turn "
                "from one process into replicas or back (scale a replicated service to 1, or delete and re-create "
                "it)",
                details=[
                    {"loc": ["replicas"], "msg": "cannot be added to or removed from a service", "type": "value_error"}
                ],
            )
        if expected_version is not None and row.current_version != expected_version:
            raise VersionConflict(
                f"service {spec.id!r} is at version {row.current_version}, not {expected_version}",
                details={"current_version": row.current_version, "expected_version": expected_version},
            )
        content = spec.content()
        if content == row.spec and reverted_from is None:
            return None
        current = row.current_version
        applied = row.applied_version
        if applied is not None:
            applied_content = (
                row.spec
                if applied == current
                else (
                    await session.execute(
                        select(ConfigVersionRow.content).where(
                            ConfigVersionRow.service_id == spec.id, ConfigVersionRow.version == applied
                        )
                    )
                ).scalar_one_or_none()
            )
            if applied_content is not None and run_part(applied_content) == run_part(content):
                applied = current + 1  # nothing to restart for it: applied as saved
        result = await session.execute(
            update(ServiceRow)
            .where(ServiceRow.id == spec.id, ServiceRow.current_version == current)
            .values(
                current_version=current + 1,
                spec=content,
                description=spec.description,
                labels=spec.labels,
                driver=spec.driver.value,
                monitored=spec.monitored,
                depends_on=list(spec.depends_on),
                host=spec.host,
                search_text=_search_text(spec),
                applied_version=applied,
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        if affected_rows(result) != 1:
            raise VersionConflict(f"service {spec.id!r} was changed meanwhile", details={"expected_version": current})
        version = ConfigVersionRow(
            service_id=spec.id,
            version=current + 1,
            content=content,
            content_hash=content_hash(content),
            author=author,
            comment=comment,
            reverted_from=reverted_from,
        )
        session.add(version)
        await session.flush()
        await session.refresh(row)
        await self.sync_replicas(session=session, spec=spec)
        return version

    async def delete(self, *, session: AsyncSession, service_id: str) -> None:
        for replica in await self.replicas_of(session=session, service_id=service_id):
            await self.remove_replica(session=session, replica_id=replica.id)
        await session.execute(delete(ProbeResultRow).where(ProbeResultRow.service_id == service_id))
        await session.execute(delete(StatusHistoryRow).where(StatusHistoryRow.service_id == service_id))
        await session.execute(delete(ConfigVersionRow).where(ConfigVersionRow.service_id == service_id))
        await session.execute(delete(ServiceRow).where(ServiceRow.id == service_id))

    async def change_stamp(self, *, db: Database) -> str:
        """A value that changes whenever any service row is created, changed or deleted, by any process.

        Every write of a row sets its ``updated_at`` (state writes through the ORM's ``onupdate``, config writes
        explicitly), so the row count and the newest ``updated_at`` move with each commit. On SQLite writers run
        one at a time and stamp inside their transaction, so the newest stamp is the last commit's. On PostgreSQL
        transactions commit concurrently, in any order: one that stamped earlier may commit after a later one and
        leave the maximum unchanged, so the stamp also sums every row's ``updated_at`` (exact ``numeric``), which
        moves whichever row changed. Read on every cached read, so outside a session (:meth:`Database.rows`).
        Read caches key their entries by it (``windflow.api.cache``).
        """
        stmt = _STAMP.get(db.dialect)
        if stmt is None:  # built once per dialect: constructing a statement costs more than running this one
            columns: list[Any] = [func.count(), func.max(ServiceRow.updated_at)]
            if db.dialect == "postgresql":
                columns.append(func.sum(func.extract("epoch", ServiceRow.updated_at)))
            stmt = _STAMP[db.dialect] = select(*columns)
        (row,) = await db.rows(stmt)  # one statement: one snapshot, no session needed
        return ":".join("" if v is None else (v.isoformat() if isinstance(v, datetime) else str(v)) for v in row)

    async def set_state(
        self, *, session: AsyncSession, service_id: str, state: str, detail: dict[str, Any] | None = None
    ) -> str | None:
        """Record the state; returns the previous one (``None`` if the service is unknown)."""
        row = await self.get(session=session, service_id=service_id)
        if row is None:
            return None
        previous = row.state
        row.state = state
        row.state_detail = detail or {}
        if previous != state:
            row.state_changed_at = utcnow()
        await session.flush()
        return previous


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# --------------------------------------------------------------------------- config versions


class ConfigVersionRepository:
    async def get_all(
        self, *, session: AsyncSession, service_id: str, limit: int = 50, cursor: str | None = None
    ) -> Page[ConfigVersionRow]:
        limit = max(1, min(limit, MAX_LIMIT))
        before = decode_cursor(cursor).get("before")
        stmt = select(ConfigVersionRow).where(ConfigVersionRow.service_id == service_id)
        if isinstance(before, int):
            stmt = stmt.where(ConfigVersionRow.version < before)
        rows = list((await session.execute(stmt.order_by(ConfigVersionRow.version.desc()).limit(limit + 1))).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor({"before": rows[-1].version}) if more and rows else None)

    async def get(self, *, session: AsyncSession, service_id: str, version: int) -> ConfigVersionRow:
        row = (
            await session.execute(
                select(ConfigVersionRow).where(
                    ConfigVersionRow.service_id == service_id, ConfigVersionRow.version == version
                )
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound(
                f"service {service_id!r} has no version {version}",
                details={"service_id": service_id, "version": version},
            )
        return row

    async def holds(self, *, session: AsyncSession, service_id: str, content: dict[str, Any], recent: int = 20) -> bool:
        """Whether ``content`` is a stored version of the service: by hash, else (a version stored before a field
        gained a default) by comparing the ``recent`` latest versions as the model reads them today."""
        hit = await session.execute(
            select(ConfigVersionRow.version)
            .where(ConfigVersionRow.service_id == service_id, ConfigVersionRow.content_hash == content_hash(content))
            .limit(1)
        )
        if hit.first() is not None:
            return True
        stmt = (
            select(ConfigVersionRow.content)
            .where(ConfigVersionRow.service_id == service_id)
            .order_by(ConfigVersionRow.version.desc())
            .limit(recent)
        )
        for stored in (await session.execute(stmt)).scalars():
            try:
                if ServiceSpec.model_validate({**stored, "id": service_id}).content() == content:
                    return True
            except ValueError:
                continue
        return False

    async def mark(self, *, session: AsyncSession, service_id: str, version: int, status: str) -> None:
        row = await self.get(session=session, service_id=service_id, version=version)
        row.status = status
        await session.flush()

    async def last_good(self, *, session: AsyncSession, service_id: str) -> ConfigVersionRow | None:
        stmt = (
            select(ConfigVersionRow)
            .where(ConfigVersionRow.service_id == service_id, ConfigVersionRow.status == "good")
            .order_by(ConfigVersionRow.version.desc())
            .limit(1)
        )
        return (await session.execute(stmt)).scalar_one_or_none()


# --------------------------------------------------------------------------- templates


class TemplateRepository:
    async def get_all(self, *, session: AsyncSession) -> list[ConfigTemplateRow]:
        return list((await session.execute(select(ConfigTemplateRow).order_by(ConfigTemplateRow.name))).scalars())

    async def get(self, *, session: AsyncSession, name: str) -> ConfigTemplateRow:
        row = await session.get(ConfigTemplateRow, name)
        if row is None:
            raise NotFound(f"template {name!r} not found", details={"template": name})
        return row

    async def upsert(
        self,
        *,
        session: AsyncSession,
        name: str,
        description: str,
        parameters: list[dict[str, Any]],
        content: dict[str, Any],
        builtin: bool = False,
    ) -> ConfigTemplateRow:
        row = await session.get(ConfigTemplateRow, name)
        if row is None:
            row = ConfigTemplateRow(name=name)
            session.add(row)
        row.description = description
        row.parameters = parameters
        row.content = content
        row.builtin = builtin
        await session.flush()
        return row

    async def delete(self, *, session: AsyncSession, name: str) -> None:
        row = await self.get(session=session, name=name)
        await session.delete(row)


# --------------------------------------------------------------------------- audit


def _audit_values(
    *, actor: str, action: str, target: str, outcome: str, request_id: str | None, details: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "actor": actor,
        "action": action,
        "target": target,
        "outcome": outcome,
        "request_id": request_id,
        "details": details or {},
        "at": utcnow(),
    }


class AuditRepository:
    @staticmethod
    def add_sync(*, session: Session, **fields: Any) -> None:
        """A new record (:func:`_audit_values`' fields) in a synchronous unit of work (:meth:`Database.write_sync`):
        one ``INSERT``, no ORM object and no flush (the unit of work cost more than the write itself)."""
        session.execute(_INSERT_AUDIT, _audit_values(**fields))

    async def add(
        self,
        *,
        session: AsyncSession,
        actor: str,
        action: str,
        target: str = "",
        outcome: str = "success",
        request_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditRow:
        row = AuditRow(
            **_audit_values(
                actor=actor, action=action, target=target, outcome=outcome, request_id=request_id, details=details
            )
        )
        session.add(row)
        await session.flush()
        return row

    async def get_all(
        self,
        *,
        session: AsyncSession,
        limit: int = 50,
        cursor: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Page[AuditRow]:
        limit = max(1, min(limit, MAX_LIMIT))
        before = decode_cursor(cursor).get("before")
        stmt = select(AuditRow)
        for column, value in (
            (AuditRow.actor, actor),
            (AuditRow.action, action),
            (AuditRow.target, target),
            (AuditRow.outcome, outcome),
        ):
            if value:
                stmt = stmt.where(column == value)
        if since:
            stmt = stmt.where(AuditRow.at >= since)
        if until:
            stmt = stmt.where(AuditRow.at < until)
        if isinstance(before, int):
            stmt = stmt.where(AuditRow.id < before)
        rows = list((await session.execute(stmt.order_by(AuditRow.id.desc()).limit(limit + 1))).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor({"before": rows[-1].id}) if more and rows else None)


# --------------------------------------------------------------------------- run summaries


class RunSummaryRepository:
    async def upsert(
        self,
        *,
        session: AsyncSession,
        run_id: str,
        kind: str,
        workflow_id: str,
        status: str,
        actor: str = "system",
        service_id: str | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        summary: dict[str, Any] | None = None,
    ) -> RunSummaryRow:
        row = await session.get(RunSummaryRow, run_id)
        if row is None:
            row = RunSummaryRow(run_id=run_id, kind=kind, workflow_id=workflow_id, started_at=started_at or utcnow())
            session.add(row)
        row.status = status
        row.actor = actor
        row.service_id = service_id
        if started_at is not None:
            row.started_at = started_at
        row.finished_at = finished_at
        if summary is not None:
            row.summary = summary
        await session.flush()
        return row

    async def get(self, *, session: AsyncSession, run_id: str) -> RunSummaryRow | None:
        return await session.get(RunSummaryRow, run_id)

    async def last_of(self, *, session: AsyncSession, kind: str, service_id: str) -> RunSummaryRow | None:
        """The newest run of ``kind`` for ``service_id`` (by start, then finish)."""
        stmt = (
            select(RunSummaryRow)
            .where(RunSummaryRow.kind == kind, RunSummaryRow.service_id == service_id)
            .order_by(RunSummaryRow.started_at.desc(), RunSummaryRow.finished_at.desc())
            .limit(1)
        )
        return (await session.execute(stmt)).scalars().first()

    async def get_all(
        self,
        *,
        session: AsyncSession,
        kind: str,
        limit: int = 50,
        cursor: str | None = None,
        status: str | None = None,
        service_id: str | None = None,
    ) -> Page[RunSummaryRow]:
        limit = max(1, min(limit, MAX_LIMIT))
        pos = decode_cursor(cursor)
        stmt = select(RunSummaryRow).where(RunSummaryRow.kind == kind)
        if status:
            stmt = stmt.where(RunSummaryRow.status == status)
        if service_id:
            stmt = stmt.where(RunSummaryRow.service_id == service_id)
        if "started_at" in pos and "run_id" in pos:
            at = datetime.fromisoformat(str(pos["started_at"]))
            stmt = stmt.where(
                or_(
                    RunSummaryRow.started_at < at,
                    and_(RunSummaryRow.started_at == at, RunSummaryRow.run_id < str(pos["run_id"])),
                )
            )
        stmt = stmt.order_by(RunSummaryRow.started_at.desc(), RunSummaryRow.run_id.desc()).limit(limit + 1)
        rows = list((await session.execute(stmt)).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows else None
        nxt = None
        if more and last is not None:
            nxt = encode_cursor({"started_at": last.started_at.isoformat(), "run_id": last.run_id})
        return Page(rows, nxt)

    async def delete(self, *, session: AsyncSession, run_id: str) -> None:
        """Forget a run (one whose workflow never started)."""
        await session.execute(delete(RunSummaryRow).where(RunSummaryRow.run_id == run_id))

    async def running(self, *, session: AsyncSession, kind: str) -> list[RunSummaryRow]:
        stmt = select(RunSummaryRow).where(RunSummaryRow.kind == kind, RunSummaryRow.finished_at.is_(None))
        return list((await session.execute(stmt)).scalars())


# --------------------------------------------------------------------------- probe results


@dataclass
class Timeline:
    """A service's status over ``[since, until)``: the status it had at ``since`` (``None``: before its first
    recorded status) and the changes inside the range, oldest first."""

    initial: StatusHistoryRow | None
    changes: list[StatusHistoryRow]
    truncated: bool


class StatusHistoryRepository:
    """The status timeline (rows written by the ``services`` row's flush: see ``models._record_status_change``)."""

    async def timeline(
        self, *, session: AsyncSession, service_id: str, since: datetime, until: datetime, limit: int = 5000
    ) -> Timeline:
        before = (
            await session.execute(
                select(StatusHistoryRow)
                .where(StatusHistoryRow.service_id == service_id, StatusHistoryRow.at < since)
                .order_by(StatusHistoryRow.at.desc(), StatusHistoryRow.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        rows = list(
            (
                await session.execute(
                    select(StatusHistoryRow)
                    .where(
                        StatusHistoryRow.service_id == service_id,
                        StatusHistoryRow.at >= since,
                        StatusHistoryRow.at < until,
                    )
                    .order_by(StatusHistoryRow.at, StatusHistoryRow.id)
                    .limit(limit + 1)
                )
            ).scalars()
        )
        return Timeline(before, rows[:limit], len(rows) > limit)

    async def prune(self, *, session: AsyncSession, older_than: timedelta, now: datetime | None = None) -> int:
        """Delete changes older than ``older_than``, except each service's newest (its status since then)."""
        cutoff = (now or utcnow()) - older_than
        newest = select(func.max(StatusHistoryRow.id)).group_by(StatusHistoryRow.service_id)
        result = await session.execute(
            delete(StatusHistoryRow).where(StatusHistoryRow.at < cutoff, StatusHistoryRow.id.not_in(newest))
        )
        return affected_rows(result)


class ProbeResultRepository:
    async def add(
        self, *, session: AsyncSession, service_id: str, results: Sequence[ProbeResult], keep: int = 1000
    ) -> None:
        if not results:
            return
        # one executemany, not an ORM insert per row (these land on every health verdict, in bursts)
        await session.execute(
            insert(ProbeResultRow),
            [
                {
                    "service_id": service_id,
                    "healthy": r.healthy,
                    "latency_ms": r.latency_ms,
                    "message": r.message[:2000],
                    "checked_at": r.checked_at,
                }
                for r in results
            ],
        )
        # keep a bounded history: delete everything older than the newest `keep`, in one statement
        boundary = (
            select(ProbeResultRow.id)
            .where(ProbeResultRow.service_id == service_id)
            .order_by(ProbeResultRow.id.desc())
            .offset(keep)
            .limit(1)
            .scalar_subquery()
        )
        await session.execute(
            delete(ProbeResultRow)
            .where(ProbeResultRow.service_id == service_id, ProbeResultRow.id <= boundary)
            .execution_options(synchronize_session=False)
        )

    async def add_many(
        self, *, session: AsyncSession, results: dict[str, Sequence[ProbeResult]], keep: int | None = 1000
    ) -> None:
        """The results of many services in one executemany (a watcher's batch); with ``keep``, each service's
        history is then cut to its newest ``keep`` (without: the caller prunes later, see :meth:`prune`)."""
        rows = [
            {
                "service_id": sid,
                "healthy": r.healthy,
                "latency_ms": r.latency_ms,
                "message": r.message[:2000],
                "checked_at": r.checked_at,
            }
            for sid, batch in results.items()
            for r in batch
        ]
        if not rows:
            return
        await session.execute(insert(ProbeResultRow), rows)
        if keep is not None:
            for sid in results:
                await self.prune(session=session, service_id=sid, keep=keep)

    async def prune(self, *, session: AsyncSession, service_id: str, keep: int = 1000) -> None:
        """Delete all but the newest ``keep`` results of ``service_id``, in one statement."""
        boundary = (
            select(ProbeResultRow.id)
            .where(ProbeResultRow.service_id == service_id)
            .order_by(ProbeResultRow.id.desc())
            .offset(keep)
            .limit(1)
            .scalar_subquery()
        )
        await session.execute(
            delete(ProbeResultRow)
            .where(ProbeResultRow.service_id == service_id, ProbeResultRow.id <= boundary)
            .execution_options(synchronize_session=False)
        )

    async def recent(self, *, session: AsyncSession, service_id: str, limit: int = 100) -> list[ProbeResultRow]:
        stmt = (
            select(ProbeResultRow)
            .where(ProbeResultRow.service_id == service_id)
            .order_by(ProbeResultRow.id.desc())
            .limit(max(1, min(limit, 1000)))
        )
        return list((await session.execute(stmt)).scalars())

    async def availability(self, *, session: AsyncSession, service_id: str, window: timedelta) -> float | None:
        since = utcnow() - window
        stmt = select(func.count(), func.sum(case((ProbeResultRow.healthy, 1), else_=0))).where(
            ProbeResultRow.service_id == service_id, ProbeResultRow.checked_at >= since
        )
        total, healthy = (await session.execute(stmt)).one()
        return (float(healthy or 0) / total) if total else None

    async def latest_latency_by_service(self, *, session: AsyncSession) -> dict[str, float]:
        """The latest probe's latency of every service that has one, in one query (not one per service)."""
        newest = select(func.max(ProbeResultRow.id)).group_by(ProbeResultRow.service_id).scalar_subquery()
        stmt = select(ProbeResultRow.service_id, ProbeResultRow.latency_ms).where(ProbeResultRow.id.in_(newest))
        return {sid: float(latency) for sid, latency in (await session.execute(stmt)).all()}

    async def availability_by_service(self, *, session: AsyncSession, window: timedelta) -> dict[str, float]:
        """:meth:`availability` of every service with probes in ``window``, in one grouped query."""
        since = utcnow() - window
        stmt = (
            select(ProbeResultRow.service_id, func.count(), func.sum(case((ProbeResultRow.healthy, 1), else_=0)))
            .where(ProbeResultRow.checked_at >= since)
            .group_by(ProbeResultRow.service_id)
        )
        return {
            sid: float(healthy or 0) / total for sid, total, healthy in (await session.execute(stmt)).all() if total
        }


# --------------------------------------------------------------------------- outbox


OUTBOX_CHANNEL = "windflow_outbox"
RELAY_LOCK_KEY = 0x77696E64  # pg advisory lock held by the one relay publishing at a time ("wind")
#: delivered at COMMIT (never for a rollback) to every relay LISTENing, in any process
_NOTIFY_OUTBOX = select(func.pg_notify(OUTBOX_CHANNEL, ""))


def _is_postgres(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


def _outbox_values(event: Event) -> dict[str, Any]:
    """An event's outbox row, as column values (one statement for several, or one ORM row)."""
    return {
        "event_id": event.event_id,
        "event_type": event.event_type.value,
        "payload": event.model_dump(mode="json"),
        "created_at": event.timestamp,
    }


class OutboxRepository:
    async def add_many(self, *, session: AsyncSession, events: Sequence[Event]) -> None:
        """Several events in one statement, in order (after anything this session added before)."""
        if not events:
            return
        await session.flush()  # earlier pending rows first: the outbox's order is the events' order
        await session.execute(_INSERT_OUTBOX, [_outbox_values(e) for e in events])
        if _is_postgres(session):
            await session.execute(_NOTIFY_OUTBOX)

    async def add(self, *, session: AsyncSession, event: Event) -> None:
        session.add(OutboxRow(**_outbox_values(event)))
        await session.flush()
        if _is_postgres(session):
            await session.execute(_NOTIFY_OUTBOX)

    def add_sync(self, *, session: Session, event: Event) -> None:
        """:meth:`add` in a synchronous unit of work (:meth:`Database.write_sync`): one ``INSERT``, no flush."""
        session.execute(_INSERT_OUTBOX, _outbox_values(event))
        if session.get_bind().dialect.name == "postgresql":
            session.execute(_NOTIFY_OUTBOX)

    async def try_lock_relay(self, *, session: AsyncSession) -> bool:
        """PostgreSQL: take the transaction-scoped relay lock, so replicas publish one after another and the
        stream keeps commit order. False when another relay holds it. Other databases: always True."""
        if not _is_postgres(session):
            return True
        return bool((await session.execute(select(func.pg_try_advisory_xact_lock(RELAY_LOCK_KEY)))).scalar_one())

    async def pending(self, *, session: AsyncSession, limit: int = 500) -> list[OutboxRow]:
        stmt = select(OutboxRow).where(OutboxRow.published_at.is_(None)).order_by(OutboxRow.id).limit(limit)
        if _is_postgres(session):
            stmt = stmt.with_for_update(skip_locked=True)
        return list((await session.execute(stmt)).scalars())

    async def mark_published(self, *, session: AsyncSession, ids: Sequence[int]) -> None:
        if ids:
            await session.execute(update(OutboxRow).where(OutboxRow.id.in_(list(ids))).values(published_at=utcnow()))

    async def purge_published(self, *, session: AsyncSession, older_than: timedelta) -> int:
        result = await session.execute(
            delete(OutboxRow).where(OutboxRow.published_at.is_not(None), OutboxRow.published_at < utcnow() - older_than)
        )
        return affected_rows(result)

    async def lag(self, *, session: AsyncSession) -> int:
        stmt = select(func.count()).select_from(OutboxRow).where(OutboxRow.published_at.is_(None))
        return int((await session.execute(stmt)).scalar_one())
