"""The web dashboard: the built single-page app served at ``/``, and the few reads it needs besides the API.

``mount_dashboard(app, settings)`` goes last, after every router: client routes (``/services/api``) fall back to
``index.html``, while ``/api``, ``/docs``, ``/openapi.json``, ``/metrics`` and the probes keep their own answers
(an unknown ``/api/...`` path still gets the JSON error envelope). Without a build the API works as before and
``/`` says how to build the dashboard.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

import windflow
from windflow import __version__
from windflow.api.deps import ReadSessionDep, ResourcesDep
from windflow.api.errors import ERROR_RESPONSES, allowed_methods, error_response
from windflow.api.security import AuthenticatedDep, require
from windflow.auth.permissions import Permission, Principal
from windflow.persistence.repositories import ProbeResultRepository, ServiceRepository
from windflow.settings import Settings

router = APIRouter(tags=["dashboard"], responses=ERROR_RESPONSES)
services = ServiceRepository()
probes = ProbeResultRepository()

RESERVED = ("api", "docs", "redoc", "openapi.json", "metrics", "healthz", "readyz", "health")
"""First path segments the dashboard never answers for (prefix match: ``/health*`` too)."""

BUILD_HINT = "cd web && npm ci && npm run build"


class UiConfig(BaseModel):
    version: str
    temporal_ui_url: str | None = Field(description="Base URL of the Temporal Web UI; null when there is none")
    temporal_namespace: str
    access_token_ttl: int = Field(description="Seconds an access token lives")


class HealthCheckPublic(BaseModel):
    healthy: bool
    latency_ms: float
    message: str
    checked_at: datetime


@router.get("/ui-config", response_model=UiConfig, summary="What the dashboard needs to know (Temporal Web UI)")
async def ui_config(resources: ResourcesDep, _: AuthenticatedDep) -> UiConfig:
    s = resources.settings
    return UiConfig(
        version=__version__,
        temporal_ui_url=s.temporal_ui_base_url,
        temporal_namespace=s.temporal_namespace,
        access_token_ttl=s.access_token_ttl,
    )


@router.get(
    "/services/{service_id}/health-checks",
    response_model=list[HealthCheckPublic],
    summary="Recent probe results, newest first",
)
async def health_checks(
    service_id: str,
    session: ReadSessionDep,
    _: Annotated[Principal, Depends(require(Permission.SERVICES_READ))],
    limit: int = Query(100, ge=1, le=1000),
) -> list[HealthCheckPublic]:
    await services.require(session=session, service_id=service_id)
    rows = await probes.recent(session=session, service_id=service_id, limit=limit)
    return [
        HealthCheckPublic(healthy=r.healthy, latency_ms=r.latency_ms, message=r.message, checked_at=r.checked_at)
        for r in rows
    ]


PACKAGED_DIR = Path(windflow.__file__).resolve().parent / "dashboard_dist"
"""Where a wheel (and the image) carries the built dashboard: package data, copied in before the build."""


def dashboard_dir(settings: Settings) -> Path:
    """``settings.dashboard_dir``; else ``web/dist`` of the source checkout this package runs from, when built;
    else the build shipped inside the installed package (``windflow/dashboard_dist``)."""
    if settings.dashboard_dir:
        return settings.dashboard_dir.expanduser().resolve()
    checkout = Path(windflow.__file__).resolve().parents[2] / "web" / "dist"
    if (checkout / "index.html").is_file() or not (PACKAGED_DIR / "index.html").is_file():
        return checkout
    return PACKAGED_DIR


def _reserved(path: str) -> bool:
    first = path.lstrip("/").split("/", 1)[0]
    return any(first == r or (r == "health" and first.startswith("health")) for r in RESERVED)


def _not_built(dist: Path) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><meta charset=utf-8><title>windflow</title>"
        "<h1>windflow API</h1>"
        f"<p>The web dashboard is not built (no {dist / 'index.html'}). Build it with "
        f"<code>{BUILD_HINT}</code> (needs Node.js 20+), or run <code>scripts/up</code>, which builds it "
        "when npm is installed.</p>"
        '<p>The API works without it: <a href="/docs">/docs</a>.</p>'
    )


def _not_found(path: str) -> Response:
    return error_response(404, "not_found", f"no route {path}")


def mount_dashboard(app: FastAPI, settings: Settings) -> None:
    """Serve the built dashboard at ``/`` (call after every router is included)."""
    dist = dashboard_dir(settings)

    async def serve(request: Request) -> Response:
        path = request.url.path
        if _reserved(path):
            allow = allowed_methods(request)  # an API path that takes other methods: 405, as without the dashboard
            if allow:
                return error_response(405, "method_not_allowed", "Method Not Allowed", headers={"Allow": allow})
            return _not_found(path)
        index = dist / "index.html"
        if not index.is_file():
            if path == "/":
                return _not_built(dist)
            return _not_found(path)
        relative = path.lstrip("/")
        if relative:
            candidate = (dist / relative).resolve()
            if candidate.is_relative_to(dist) and candidate.is_file():  # dist is resolved already
                immutable = relative.startswith("assets/")  # content-hashed file names
                return FileResponse(
                    candidate,
                    headers={"Cache-Control": "public, max-age=31536000, immutable" if immutable else "no-cache"},
                )
            if relative.startswith("assets/") or "." in relative.rsplit("/", 1)[-1]:
                return _not_found(path)  # a missing file, not a client route
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    app.router.routes.append(Route("/{path:path}", serve, methods=["GET", "HEAD"], include_in_schema=False))
