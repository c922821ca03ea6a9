"""Liveness and readiness probes of windflow itself."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from windflow import __version__
from windflow.api.deps import ResourcesDep
from windflow.api.errors import error_response
from windflow.api.responses import ErrorEnvelope

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", summary="Database and Temporal reachable (503 otherwise)",
            responses={503: {"model": ErrorEnvelope, "description": "not ready: details name what is unreachable"}})
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
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    failing = ", ".join(k for k, v in checks.items() if v != "ok")
    return error_response(503, "not_ready", f"not ready: {failing} unreachable", checks)
