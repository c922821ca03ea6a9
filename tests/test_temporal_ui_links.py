"""Temporal UI links come from one builder and follow the instance's UI address (WINDFLOW_TEMPORAL_UI_PORT under
`windflow up`, WINDFLOW_TEMPORAL_UI_URL in production); the codec endpoint's CORS follows the same UI."""

from __future__ import annotations

from contextlib import asynccontextmanager

import httpx2
import pytest

from tests.conftest import mint_token
from windflow.settings import Mode, Settings
from windflow.temporal import names
from windflow.temporal.links import schedule_link, workflow_link

pytestmark = pytest.mark.asyncio(loop_scope="session")


@asynccontextmanager
async def client_for(settings: Settings, db):
    from windflow.api.app import build_resources, create_app

    resources = await build_resources(settings, migrate=False)
    await resources.db.dispose()
    resources.db = db
    app = create_app(settings, resources=resources)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx2.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {mint_token(settings)}"}
            async with httpx2.AsyncClient(
                transport=transport, base_url="http://windflow.test", headers=headers
            ) as http:
                yield http, resources
    finally:
        await resources.bus.close()


async def test_links_follow_the_ui_port(settings, db):
    from windflow.api.routers import initializations, rollouts, shutdowns

    moved = settings.model_copy(update={"temporal_ui_port": 9411, "temporal_namespace": "ops"})
    async with client_for(moved, db) as (http, resources):
        ui = (await http.get("/api/v1/ui-config")).json()
        assert ui["temporal_ui_url"] == "http://127.0.0.1:9411"
        assert (
            initializations.links(resources, "r1").temporal_ui
            == "http://127.0.0.1:9411/namespaces/ops/workflows/init%2Fr1"
        )
        assert (
            workflow_link(resources.settings, names.recover_id("db"))
            == "http://127.0.0.1:9411/namespaces/ops/workflows/recover%2Fdb"
        )
        assert (
            rollouts._links(resources, "db", "r9").temporal_ui
            == "http://127.0.0.1:9411/namespaces/ops/workflows/rollout%2Fdb"
        )
        assert (
            shutdowns.links(resources, "r2").temporal_ui == "http://127.0.0.1:9411/namespaces/ops/workflows/down%2Fr2"
        )

        # the Temporal UI on that port may call the codec endpoint from the browser; the one on 8233 (another
        # instance's) may not
        preflight = {"Origin": "http://127.0.0.1:9411", "Access-Control-Request-Method": "POST"}
        r = await http.options("/api/v1/codec/decode", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://127.0.0.1:9411"
        r = await http.options("/api/v1/codec/decode", headers={**preflight, "Origin": "http://127.0.0.1:8233"})
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers


async def test_one_link_builder():
    s = Settings(jwt_secret="x" * 48, temporal_ui_port=9411, temporal_namespace="default", _env_file=None)
    assert workflow_link(s) == "http://127.0.0.1:9411/namespaces/default/workflows"
    assert (
        workflow_link(s, "control/db/a b") == "http://127.0.0.1:9411/namespaces/default/workflows/control%2Fdb%2Fa%20b"
    )
    assert (
        workflow_link(s, "init/r1", "0190-run")
        == "http://127.0.0.1:9411/namespaces/default/workflows/init%2Fr1/0190-run/history"
    )
    assert (
        schedule_link(s, names.SWEEP_SCHEDULE_ID)
        == "http://127.0.0.1:9411/namespaces/default/schedules/windflow-recovery-sweep"
    )
    prod = Settings(
        mode=Mode.PRODUCTION,
        jwt_secret="x" * 48,
        database_url="postgresql://u@h/db",
        temporal_ui_url="https://temporal.example.com/",
        temporal_namespace="windflow",
        _env_file=None,
    )
    assert workflow_link(prod, "init/r1") == "https://temporal.example.com/namespaces/windflow/workflows/init%2Fr1"
    assert prod.codec_origins == ["https://temporal.example.com"]
    no_ui = Settings(mode=Mode.PRODUCTION, jwt_secret="x" * 48, database_url="postgresql://u@h/db", _env_file=None)
    assert workflow_link(no_ui, "init/r1") is None and schedule_link(no_ui, "s") is None  # no UI known: no link
    assert workflow_link(Settings(jwt_secret="x" * 48, temporal_ui_port=0, _env_file=None)) is None
