"""Liveness and readiness probes of windflow itself."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from windflow import __version__
from windflow.api.deps import ResourcesDep
from windflow.api.errors import error_response
from windflow.api.ratelimit import FallbackRateLimiter
from windflow.api.resources import Resources
from windflow.api.responses import ErrorEnvelope
from windflow.api.routers.auth import login_limiter

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


async def _redis_check(resources: Resources) -> str:
    limiter = login_limiter(resources)
    try:
        if isinstance(limiter, FallbackRateLimiter):
            return await asyncio.wait_for(limiter.check(), timeout=3)
        return "ok"
    except Exception as exc:  # the check itself must never fail the probe
        return f"degraded: {type(exc).__name__}: {exc}"[:300]


@router.get(
    "/readyz",
    summary="Database and Temporal reachable (503 otherwise); Redis reported as degraded",
    responses={503: {"model": ErrorEnvelope, "description": "not ready: details name what is unreachable"}},
)
async def readyz(resources: ResourcesDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(resources.db.ping(), timeout=3)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}: {exc}"[:300]
    try:
        client = await asyncio.wait_for(resources.temporal.get(), timeout=3)
        await asyncio.wait_for(client.service_client.check_health(), timeout=3)
        checks["temporal"] = "ok"
    except Exception as exc:
        checks["temporal"] = f"unreachable: {type(exc).__name__}: {exc}"[:300]
    failing = ", ".join(k for k, v in checks.items() if v != "ok")
    if resources.settings.redis_url:
        # Redis carries events, caches and shared rate limits; without it the API still answers (the limits
        # count in the process, events wait in the outbox): reported, but not a reason to take this one out
        checks["redis"] = await _redis_check(resources)
    if not failing:
        status = "ready" if checks.get("redis", "ok") == "ok" else "degraded"
        return JSONResponse({"status": status, "checks": checks})
    return error_response(503, "not_ready", f"not ready: {failing} unreachable", checks)
