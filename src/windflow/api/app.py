"""The API's composition root: ``create_app(settings)`` builds store, Temporal client and bus."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TypedDict

from fastapi import APIRouter, Depends, FastAPI
from starlette.routing import Route
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from windflow import __version__
from windflow.api.accounts import bootstrap_auth
from windflow.api.audit import AuditFailuresMiddleware
from windflow.api.cache import close_read_cache
from windflow.api.dashboard import mount_dashboard
from windflow.api.dashboard import router as dashboard_router
from windflow.api.docs import install_docs
from windflow.api.errors import error_response, install_error_handlers
from windflow.api.event_hub import EventHub
from windflow.api.metrics_feed import MetricsFeed
from windflow.api.middleware import (
    BodySizeLimitMiddleware,
    NulInQueryMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
)
from windflow.api.resources import Resources
from windflow.api.routers import (
    alerts_in,
    audit,
    auth,
    channels,
    codec,
    events,
    health,
    initializations,
    logs,
    recoveries,
    rollouts,
    schedules,
    services,
    shutdowns,
    system,
    templates,
    users,
    webhooks_out,
    ws,
)
from windflow.api.security import authorize_first
from windflow.events.base import EventBus
from windflow.events.memory import MemoryBus
from windflow.events.redis_streams import RedisStreamsBus
from windflow.events.relay import OutboxRelay
from windflow.metrics import MetricsEndpoint
from windflow.persistence import sealing
from windflow.persistence.db import Database
from windflow.persistence.migrate import upgrade
from windflow.persistence.seed import seed_templates
from windflow.settings import Mode, Settings
from windflow.temporal.client import LazyClient
from windflow.tracing import instrument_app
from windflow.webhooks_out.dispatcher import CONSUMER_GROUP, DeliveryPolicy, WebhookDispatcher, consumer_name

log = logging.getLogger("windflow.api")
API_PREFIX = "/api/v1"
MEMORY_BUS_MAXLEN = 10_000  # the in-process bus holds events as objects in this process's memory


async def build_resources(settings: Settings, *, migrate: bool | None = None) -> Resources:
    settings.ensure_data_dir()
    sealing.configure_from(settings)  # webhook and channel secrets sealed in the store with the codec keys
    db = Database.from_url(settings.sqlalchemy_url)
    if migrate if migrate is not None else settings.mode == Mode.EMBEDDED:
        await upgrade(db.engine)
    async with db.write() as session:
        await seed_templates(session=session)
    await bootstrap_auth(settings, db)
    bus = build_bus(settings)
    resources = Resources(settings=settings, db=db, temporal=LazyClient(settings), bus=bus, jwt_key=settings.jwt_key())
    resources.relay = OutboxRelay(
        db,
        bus,
        interval=settings.events_relay_interval,
        status_history_retention=timedelta(days=settings.status_history_retention_days),
    )
    return resources


def build_bus(settings: Settings) -> EventBus:
    """Redis Streams when ``redis_url`` is set (connects lazily: Redis may be down now and come back later;
    the outbox keeps events meanwhile), else the in-process bus."""
    if settings.redis_url:
        return RedisStreamsBus(
            settings.redis_url,
            stream=settings.events_stream,
            maxlen=settings.events_maxlen,
            claim_idle=settings.events_claim_idle,
            max_deliveries=settings.events_max_deliveries,
        )
    return MemoryBus(maxlen=min(settings.events_maxlen, MEMORY_BUS_MAXLEN))


def start_event_tasks(app: FastAPI, res: Resources) -> list[asyncio.Task[None]]:
    """The API process's event machinery: outbox relay, the WebSocket fan-out hub, the metrics feed."""
    settings = res.settings
    hub = EventHub(res.bus, queue_size=settings.ws_queue_size)
    app.state.event_hub = hub
    lease = res.bus.acquire_lease if isinstance(res.bus, RedisStreamsBus) else None
    feed = MetricsFeed(res.db, res.bus, interval=settings.events_metrics_interval, lease=lease)
    app.state.metrics_feed = feed
    tasks = [asyncio.create_task(hub.run(), name="event-hub"), asyncio.create_task(feed.run(), name="metrics")]
    if res.relay:
        tasks.append(asyncio.create_task(res.relay.run(), name="outbox-relay"))
    app.state.webhook_dispatcher = None
    if settings.webhooks_dispatch:
        # its own consumer group on Redis (the hub reads the stream without one), so no event is taken from anyone
        consumer = (
            res.bus.consumer(CONSUMER_GROUP, consumer_name(), start="$")
            if isinstance(res.bus, RedisStreamsBus)
            else None
        )
        dispatcher = WebhookDispatcher(
            res.db,
            res.bus,
            policy=DeliveryPolicy.from_settings(settings),
            consumer=consumer,
            outbound=res.outbound.notify,
        )
        app.state.webhook_dispatcher = dispatcher
        tasks.append(asyncio.create_task(dispatcher.run(), name="webhook-dispatcher"))
    return tasks


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel until the task has ended: on Python 3.11 ``asyncio.wait_for`` swallows a cancellation that lands
    in the same loop iteration as its awaited future completing (CPython gh-86296), so one cancel may be lost."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.cancelled() and task.exception() is not None:
        log.warning("background task %s ended with %r", task.get_name(), task.exception())


#: how every uvicorn that serves the app is configured: uvicorn's own proxy-header handling is off (it would
#: believe X-Forwarded-For from 127.0.0.1, or whatever FORWARDED_ALLOW_IPS says); the app applies
#: ``forwarded_allow_ips`` itself, so tests through ASGI and the real server behave alike
class ServerOptions(TypedDict):
    proxy_headers: bool
    ws_per_message_deflate: bool


SERVER_OPTIONS: ServerOptions = {"proxy_headers": False, "ws_per_message_deflate": False}


def create_app(settings: Settings, *, resources: Resources | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        res = resources or await build_resources(settings)
        app.state.resources = res
        tasks = start_event_tasks(app, res)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                await stop_task(task)
            await close_read_cache(res)
            limiter = res.extras.pop("login_limiter", None)
            if hasattr(limiter, "aclose"):
                await limiter.aclose()
            if resources is None:
                await res.bus.close()
                await res.db.dispose()

    app = FastAPI(
        title="windflow",
        version=__version__,
        description="Brings a system of services up in the right order and keeps it up.",
        lifespan=lifespan,
        docs_url=None,  # served by windflow.api.docs from local assets (no CDN)
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    install_docs(app)
    install_error_handlers(app)
    app.add_middleware(AuditFailuresMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(NulInQueryMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    if settings.forwarded_allow_ips:  # only listed proxies may say who the client is (X-Forwarded-For / -Proto)
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.forwarded_allow_ips))
    codec.hide_codec_token_in_access_log()
    # outermost: answers the Temporal UI's preflight on the codec paths before anything else runs
    app.add_middleware(codec.CodecCORSMiddleware, prefix=f"{API_PREFIX}/codec/", origins=settings.codec_origins)
    # public unless WINDFLOW_METRICS_TOKEN is set; aggregate figures and service ids only
    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    # a Route of the ASGI app itself (add_route's typing expects a request handler)
    app.router.routes.append(
        Route(
            "/metrics",
            MetricsEndpoint(
                token=metrics_token,
                unauthorized=lambda: error_response(
                    401, "unauthorized", "send Authorization: Bearer <WINDFLOW_METRICS_TOKEN>"
                ),
            ),
            methods=["GET"],
            include_in_schema=False,
        )
    )
    app.include_router(health.router)
    v1 = APIRouter(prefix=API_PREFIX, dependencies=[Depends(authorize_first)])  # 401/403 before any work
    for module in (
        services,
        recoveries,
        system,
        templates,
        initializations,
        schedules,
        auth,
        users,
        audit,
        events,
        ws,
        codec,
        alerts_in,
        webhooks_out,
        rollouts,
        logs,
        shutdowns,
        channels,
    ):
        v1.include_router(module.router)
    v1.include_router(users.roles_router)
    v1.include_router(dashboard_router)
    app.include_router(v1)
    instrument_app(app)  # HTTP server spans when OTEL_* configures an exporter (windflow.tracing)
    mount_dashboard(app, settings)  # last: the SPA's fallback route must not shadow any other route
    return app
