"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) served from this process, with no CDN.

The Swagger UI and ReDoc bundles come from the pinned ``fastapi-offline`` package, which ships them as package
data; they are served under ``/docs/assets/`` (only those files). Each page carries a Content-Security-Policy
that allows scripts and styles from this origin only, plus the hashes of the page's own inline script, so the
pages work on an air-gapped network and load nothing from elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from windflow.api.errors import error_response

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def assets_dir() -> Path:
    """Where the installed ``fastapi-offline`` keeps the Swagger UI and ReDoc files."""
    return Path(str(files("fastapi_offline") / "static"))


def content_security_policy(html: str) -> str:
    """Same-origin only; the page's inline scripts are allowed by their SHA-256 hashes, nothing else inline."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode("ascii") + "'"
        for body in _INLINE_SCRIPT.findall(html)
    )
    return (
        "default-src 'self'; "
        f"script-src 'self'{(' ' + hashes) if hashes else ''}; "
        "style-src 'self' 'unsafe-inline'; "  # both UIs set element styles at run time
        "img-src 'self' data:; font-src 'self' data:; "
        "worker-src 'self' blob:; "  # ReDoc's search index runs in a blob: worker
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )


def _page(response: HTMLResponse) -> HTMLResponse:
    html = bytes(response.body).decode("utf-8")
    response.headers["Content-Security-Policy"] = content_security_policy(html)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-cache"
    return response


def install_docs(app: FastAPI) -> None:
    """Add the docs pages and their assets (the app is built with ``docs_url=None, redoc_url=None``)."""
    assert app.openapi_url is not None
    openapi_url = app.openapi_url
    folder = assets_dir()

    async def swagger(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        return _page(
            get_swagger_ui_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
                swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                swagger_ui_parameters=app.swagger_ui_parameters,
            )
        )

    async def oauth2_redirect(_: Request) -> Response:
        return _page(get_swagger_ui_oauth2_redirect_html())

    async def redoc(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        return _page(
            get_redoc_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            )
        )

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return error_response(404, "not_found", f"no route {request.url.path}")
        return FileResponse(
            folder / name,
            media_type=ASSETS[name],
            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )

    for path, endpoint in (
        (DOCS_URL, swagger),
        (OAUTH2_REDIRECT_URL, oauth2_redirect),
        (REDOC_URL, redoc),
        (f"{ASSETS_URL}/{{name}}", asset),
    ):
        app.router.routes.append(Route(path, endpoint, methods=["GET", "HEAD"], include_in_schema=False))
