"""The web dashboard at ``/``: built files, SPA fallback for client routes, never shadowing the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
import pytest_asyncio

from windflow.api.app import create_app
from windflow.api.dashboard import dashboard_dir
from windflow.settings import Settings

INDEX = "<!doctype html><div id=app></div>"


def _settings(tmp_path: Path, dist: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", jwt_secret="x" * 48, dashboard_dir=dist, _env_file=None)


async def _client(settings: Settings) -> AsyncIterator[httpx2.AsyncClient]:
    app = create_app(settings)  # no lifespan: these routes need no store or Temporal
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://windflow.test") as client:
        yield client


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    path = tmp_path / "dist"
    (path / "assets").mkdir(parents=True)
    (path / "index.html").write_text(INDEX)
    (path / "assets" / "index-abc123.js").write_text("console.log(1)")
    (path / "favicon.svg").write_text("<svg/>")
    return path


@pytest_asyncio.fixture(loop_scope="session")
async def built(tmp_path: Path, dist: Path) -> AsyncIterator[httpx2.AsyncClient]:
    async for client in _client(_settings(tmp_path, dist)):
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def unbuilt(tmp_path: Path) -> AsyncIterator[httpx2.AsyncClient]:
    async for client in _client(_settings(tmp_path, tmp_path / "missing")):
        yield client


async def test_index_and_client_routes(built: httpx2.AsyncClient) -> None:
    for path in ("/", "/services/api", "/configs/database", "/initialization"):
        response = await built.get(path)
        assert response.status_code == 200, path
        assert response.text == INDEX
        assert response.headers["cache-control"] == "no-cache"


async def test_static_files(built: httpx2.AsyncClient) -> None:
    response = await built.get("/assets/index-abc123.js")
    assert response.status_code == 200 and response.text == "console.log(1)"
    assert "immutable" in response.headers["cache-control"]
    assert (await built.get("/favicon.svg")).text == "<svg/>"
    assert (await built.get("/assets/missing.js")).status_code == 404
    assert (await built.get("/robots.txt")).status_code == 404  # a missing file, not a client route


async def test_no_path_escape(built: httpx2.AsyncClient, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("nope")
    for path in (
        "/%2E%2E/secret.txt",
        "/..%2Fsecret.txt",
        "/assets/..%2F..%2Fsecret.txt",
        "/assets/%2E%2E/%2E%2E/secret.txt",
    ):
        response = await built.get(path)
        assert response.status_code == 404, (path, response.text)  # neither the file nor the SPA's index
        assert response.json()["error"]["code"] == "not_found", path


async def test_api_paths_are_never_shadowed(built: httpx2.AsyncClient) -> None:
    assert (await built.get("/openapi.json")).json()["info"]["title"] == "windflow"
    assert "swagger" in (await built.get("/docs")).text.lower()
    assert (await built.get("/healthz")).json()["status"] == "ok"
    for path in ("/api/v1/nope", "/api/v2", "/api", "/docs/nope", "/healthcheck", "/metrics/x", "/readyz/x"):
        response = await built.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found", path
    response = await built.get("/api/v1/auth/login")  # a POST-only API path: 405, as without the dashboard
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    response = await built.get("/api/v1/services")
    assert response.status_code == 401  # the real route answered
    assert response.json()["error"]["code"] == "unauthorized"


async def test_without_a_build_the_api_still_works(unbuilt: httpx2.AsyncClient) -> None:
    response = await unbuilt.get("/")
    assert response.status_code == 200
    assert "npm ci && npm run build" in response.text
    assert (await unbuilt.get("/services/api")).status_code == 404
    assert (await unbuilt.get("/healthz")).status_code == 200
    assert (await unbuilt.get("/openapi.json")).status_code == 200


def test_default_dashboard_dir_is_the_checkout_web_dist(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None)
    assert dashboard_dir(settings).parts[-2:] == ("web", "dist")


async def test_ui_config_and_health_checks(
    api: httpx2.AsyncClient, anon: httpx2.AsyncClient, settings: Settings
) -> None:
    response = await api.get("/api/v1/ui-config")
    assert response.status_code == 200
    body = response.json()
    assert body["temporal_ui_url"] == settings.temporal_ui_base_url
    assert body["temporal_namespace"] == settings.temporal_namespace
    assert (await anon.get("/api/v1/ui-config")).status_code == 401
    assert (await api.get("/api/v1/services/nope/health-checks")).status_code == 404
    created = await api.post("/api/v1/services", json={"id": "probe-me", "driver": "noop", "config": {}})
    assert created.status_code == 201, created.text
    checks = await api.get("/api/v1/services/probe-me/health-checks", params={"limit": 5})
    assert checks.status_code == 200
    assert checks.json() == []


async def test_docs_pages_load_nothing_from_another_origin(built: httpx2.AsyncClient) -> None:
    """/docs and /redoc work offline: every script, style and icon they name is served here, under a CSP."""
    import re

    for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        response = await built.get(page)
        assert response.status_code == 200, page
        html = response.text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert all(u.startswith("/") and not u.startswith("//") for u in urls), (page, urls)
        assert "cdn" not in html.lower() and "fonts.googleapis" not in html, page
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "http" not in csp, csp
        for url in urls:
            asset = await built.get(url)
            assert asset.status_code == 200 and len(asset.content) > 10, url
    swagger = (await built.get("/docs")).text
    assert "/docs/assets/swagger-ui-bundle.js" in swagger and "/openapi.json" in swagger
    assert "/docs/assets/redoc.standalone.js" in (await built.get("/redoc")).text
    assert "SwaggerUIBundle" in (await built.get("/docs/assets/swagger-ui-bundle.js")).text
    # the inline start-up script is allowed by its hash, not by 'unsafe-inline'
    csp = (await built.get("/docs")).headers["content-security-policy"]
    script_src = next(part for part in csp.split(";") if part.strip().startswith("script-src"))
    assert "'sha256-" in script_src and "unsafe-inline" not in script_src
    missing = await built.get("/docs/assets/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
