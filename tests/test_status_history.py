"""The per-service status history (the dashboard's state timeline): one row per change of status, whoever
writes it, in the same transaction; pruned after its retention (each service keeps its newest); read through
``GET /services/{id}/status-history?since=&until=`` with the status at ``since``. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import pytest
from sqlalchemy import select, text

from tests.auth_helpers import assert_envelope
from tests.conftest import mint_token
from tests.test_registry_api import svc
from windflow.activities._support import StateWriter
from windflow.events.memory import MemoryBus
from windflow.events.relay import OutboxRelay
from windflow.persistence.db import Database
from windflow.persistence.migrate import current_revision, upgrade
from windflow.persistence.models import OutboxRow, ServiceRow, StatusHistoryRow
from windflow.persistence.repositories import ServiceRepository, StatusHistoryRepository

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def history(db: Database, service_id: str) -> list[tuple[str | None, str]]:
    async with db.read() as session:
        rows = (
            await session.execute(
                select(StatusHistoryRow).where(StatusHistoryRow.service_id == service_id).order_by(StatusHistoryRow.id)
            )
        ).scalars()
        return [(r.previous_state, r.state) for r in rows]


async def test_every_change_of_status_is_recorded_once(db, api):
    assert (await api.post("/api/v1/services", json=svc("web"))).status_code == 201
    assert await history(db, "web") == [(None, "unknown")]  # its first status, from its creation
    writer = StateWriter(db)
    await writer.set_state("web", "starting", source="initialization", desired="running")
    await writer.set_state("web", "healthy", source="watcher", message="probe passed")
    await writer.set_state("web", "healthy", source="watcher", message="still fine")  # not a change
    await writer.set_state("web", "unhealthy", source="watcher", message="tcp 9000 refused")
    # a write that bypasses the writer (another repository, a plain ORM change) is recorded as well
    async with db.write() as session:
        await ServiceRepository().set_state(
            session=session, service_id="web", state="recovering", detail={"source": "recovery"}
        )
    async with db.write() as session:
        row = await session.get(ServiceRow, "web")
        row.description = "touched"  # no status change: no row
    assert await history(db, "web") == [
        (None, "unknown"),
        ("unknown", "starting"),
        ("starting", "healthy"),
        ("healthy", "unhealthy"),
        ("unhealthy", "recovering"),
    ]
    async with db.read() as session:
        rows = list(
            (
                await session.execute(
                    select(StatusHistoryRow).where(StatusHistoryRow.service_id == "web").order_by(StatusHistoryRow.id)
                )
            ).scalars()
        )
        svc_row = await session.get(ServiceRow, "web")
        events = [
            r.payload["data"]
            for r in (await session.execute(select(OutboxRow).order_by(OutboxRow.id))).scalars()
            if r.payload["event_type"] == "SERVICE_STATUS_UPDATE"
        ]
    assert (rows[3].source, rows[3].message) == ("watcher", "tcp 9000 refused")
    assert rows[-1].at == svc_row.state_changed_at  # the row's time is the read model's "since"
    # each recorded change is one the SERVICE_STATUS_UPDATE events announced (they also carry same-status messages)
    announced = [(e["previous_state"], e["state"]) for e in events if e["previous_state"] != e["state"]]
    assert announced == (await history(db, "web"))[1:4]

    # deleting the service deletes its history
    async with db.write() as session:
        await ServiceRepository().delete(session=session, service_id="web")
    assert await history(db, "web") == []


async def _at(db: Database, service_id: str, changes: list[tuple[datetime, str]]) -> None:
    async with db.write() as session:
        await session.execute(StatusHistoryRow.__table__.delete().where(StatusHistoryRow.service_id == service_id))
        previous = None
        for at, state in changes:
            session.add(
                StatusHistoryRow(service_id=service_id, at=at, state=state, previous_state=previous, source="test")
            )
            previous = state


async def test_status_history_api_reads_a_range_with_the_status_at_its_start(db, api, anon, settings):
    assert (await api.post("/api/v1/services", json=svc("db"))).status_code == 201
    now = datetime.now(UTC).replace(microsecond=0)
    t = lambda minutes: now - timedelta(minutes=minutes)  # noqa: E731
    await _at(
        db,
        "db",
        [(t(300), "starting"), (t(290), "healthy"), (t(50), "unhealthy"), (t(45), "recovering"), (t(40), "healthy")],
    )

    # the default range: the last hour, starting from the status it had an hour ago
    r = await api.get("/api/v1/services/db/status-history")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["initial"]["state"] == "healthy" and body["initial"]["at"].startswith(t(290).isoformat()[:19])
    assert [c["state"] for c in body["changes"]] == ["unhealthy", "recovering", "healthy"]
    assert body["truncated"] is False and body["current_state"] == "unknown" and body["retention_days"] == 30
    span = datetime.fromisoformat(body["until"]) - datetime.fromisoformat(body["since"])
    assert span == timedelta(hours=1)

    # an explicit range (no zone: UTC), and a limit that truncates
    since = t(48).replace(tzinfo=None).isoformat()
    until = t(42).replace(tzinfo=None).isoformat()
    body = (await api.get("/api/v1/services/db/status-history", params={"since": since, "until": until})).json()
    assert body["initial"]["state"] == "unhealthy" and [c["state"] for c in body["changes"]] == ["recovering"]
    body = (
        await api.get("/api/v1/services/db/status-history", params={"since": t(400).isoformat(), "limit": 2})
    ).json()
    assert body["initial"] is None and [c["state"] for c in body["changes"]] == ["starting", "healthy"]
    assert body["truncated"] is True

    # bad ranges and values: the error envelope, never a 500
    err = assert_envelope(
        await api.get("/api/v1/services/db/status-history", params={"since": until, "until": since}),
        422,
        "validation_error",
    )
    assert err["details"][0]["loc"] == ["query", "since"]
    assert_envelope(
        await api.get("/api/v1/services/db/status-history", params={"since": since, "until": since}),
        422,
        "validation_error",
    )
    assert_envelope(
        await api.get("/api/v1/services/db/status-history", params={"since": "yesterday"}), 422, "validation_error"
    )
    assert_envelope(
        await api.get("/api/v1/services/db/status-history", params={"until": "0001-01-01T00:30:00"}),
        422,
        "validation_error",
    )
    assert_envelope(await api.get("/api/v1/services/db/status-history", params={"limit": 0}), 422, "validation_error")
    assert_envelope(await api.get("/api/v1/services/nope/status-history"), 404)

    # a viewer (services:read) may read it; a token without it may not
    viewer = {"Authorization": f"Bearer {mint_token(settings, ['services:read'], roles=('viewer',))}"}
    assert (await anon.get("/api/v1/services/db/status-history", headers=viewer)).status_code == 200
    nobody = {"Authorization": f"Bearer {mint_token(settings, ['audit:read'], roles=('auditor',))}"}
    assert_envelope(await anon.get("/api/v1/services/db/status-history", headers=nobody), 403)
    assert_envelope(await anon.get("/api/v1/services/db/status-history"), 401)

    # documented in OpenAPI with its parameters
    doc = (await api.get("/openapi.json")).json()
    op = doc["paths"]["/api/v1/services/{service_id}/status-history"]["get"]
    assert {p["name"] for p in op["parameters"]} >= {"service_id", "since", "until", "limit"}
    assert "422" in op["responses"]


async def test_old_changes_are_pruned_but_each_service_keeps_its_newest(db, api):
    for name in ("a", "b"):
        assert (await api.post("/api/v1/services", json=svc(name))).status_code == 201
    now = datetime.now(UTC)
    await _at(
        db,
        "a",
        [
            (now - timedelta(days=40), "starting"),
            (now - timedelta(days=39), "healthy"),
            (now - timedelta(days=1), "unhealthy"),
        ],
    )
    await _at(db, "b", [(now - timedelta(days=50), "starting"), (now - timedelta(days=45), "healthy")])
    relay = OutboxRelay(db, MemoryBus(), status_history_retention=timedelta(days=30))
    await relay.purge()
    assert await history(db, "a") == [("healthy", "unhealthy")]
    assert await history(db, "b") == [("starting", "healthy")]  # steady for 45 days: its status since then stays
    # and the timeline still knows b's status a day ago
    async with db.read() as session:
        tl = await StatusHistoryRepository().timeline(
            session=session, service_id="b", since=now - timedelta(days=1), until=now
        )
    assert tl.initial is not None and tl.initial.state == "healthy" and tl.changes == []


async def test_the_api_relay_prunes_with_the_configured_retention(settings, db):
    from windflow.api.app import build_resources

    res = await build_resources(settings.model_copy(update={"status_history_retention_days": 7.0}), migrate=False)
    try:
        assert res.relay is not None and res.relay._history_retention == timedelta(days=7)
    finally:
        await res.bus.close()
        await res.db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migration_0012_starts_each_existing_service_timeline(backend, tmp_path, request):
    from tests.conftest import _pg_admin_exec

    drop = None
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'mig.db'}"
    else:
        base = request.getfixturevalue("postgres_url")
        name = f"wf_mig_{uuid.uuid4().hex[:10]}"
        _pg_admin_exec(base, f'CREATE DATABASE "{name}"')
        url = urlparse(base)._replace(path=f"/{name}").geturl().replace("postgresql://", "postgresql+psycopg://", 1)
        drop = (base, name)
    database = Database.from_url(url)
    try:
        await upgrade(database.engine, "0011")
        changed = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        async with database.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO services (id, description, labels, driver, monitored, depends_on, current_version, "
                    "spec, search_text, state, state_detail, state_changed_at, restarts_total, created_at, updated_at) "
                    "VALUES "
                    "('old', '', '{}', 'process', true, '[]', 1, '{}', '', 'healthy', '{}', :at, 0, :at, :at)"
                ),
                {"at": changed},
            )
        await upgrade(database.engine, "0012")
        assert await current_revision(database.engine) == "0012"
        async with database.read() as session:
            rows = list((await session.execute(select(StatusHistoryRow))).scalars())
        assert [(r.service_id, r.state, r.source, r.at) for r in rows] == [("old", "healthy", "migration", changed)]
    finally:
        await database.dispose()
        if drop:
            _pg_admin_exec(drop[0], f'DROP DATABASE IF EXISTS "{drop[1]}" WITH (FORCE)')
