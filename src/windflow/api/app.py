"""The API's composition root: ``create_app(settings)`` builds store, Temporal client and bus."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from windflow import __version__
from windflow.api.errors import install_error_handlers
from windflow.api.middleware import BodySizeLimitMiddleware, RequestIdMiddleware
from windflow.api.resources import Resources
from windflow.api.routers import health, services, system, templates
from windflow.events.memory import MemoryBus
from windflow.events.relay import OutboxRelay
from windflow.persistence.db import Database
from windflow.persistence.migrate import upgrade
from windflow.persistence.seed import seed_templates
from windflow.settings import Mode, Settings
from windflow.temporal_client import LazyClient

log = logging.getLogger("windflow.api")
API_PREFIX = "/api/v1"


async def build_resources(settings: Settings, *, migrate: bool | None = None) -> Resources:
    settings.ensure_data_dir()
    db = Database.from_url(settings.sqlalchemy_url)
    if migrate if migrate is not None else settings.mode == Mode.EMBEDDED:
        await upgrade(db.engine)
    async with db.write() as session:
        await seed_templates(session=session)
    bus = MemoryBus()
    resources = Resources(settings=settings, db=db, temporal=LazyClient(settings), bus=bus,
                          jwt_key=settings.jwt_key())
    resources.relay = OutboxRelay(db, bus)
    return resources


def create_app(settings: Settings, *, resources: Resources | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        res = resources or await build_resources(settings)
        app.state.resources = res
        relay_task = asyncio.create_task(res.relay.run()) if res.relay else None
        try:
            yield
        finally:
            if relay_task:
                relay_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay_task
            if resources is None:
                await res.bus.close()
                await res.db.dispose()

    app = FastAPI(
        title="windflow",
        version=__version__,
        description="Brings a system of services up in the right order and keeps it up.",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    v1 = APIRouter(prefix=API_PREFIX)
    for module in (services, system, templates):
        v1.include_router(module.router)
    app.include_router(v1)
    return app
