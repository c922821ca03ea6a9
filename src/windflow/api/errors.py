"""One error envelope for every error: ``{"error": {"code", "message", "timestamp", "details"}}``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from windflow.api.responses import ERROR_RESPONSES, ErrorBody, ErrorEnvelope  # noqa: F401 (routers import them here)
from windflow.domain.errors import WindflowError

log = logging.getLogger("windflow.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    428: "precondition_required",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorEnvelope(error=ErrorBody(code=code, message=message, timestamp=datetime.now(UTC), details=details))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


class ApiError(Exception):
    """Raised by routes for HTTP-level refusals that have no domain meaning (e.g. precondition missing)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _HTTP_CODES.get(status, "error")
        self.message = message
        self.details = details
        self.headers = headers


def _jsonable_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        out.append(
            {
                "loc": [p if isinstance(p, int | str) else str(p) for p in err.get("loc", ())],
                "msg": str(err.get("msg", "")).removeprefix("Value error, "),
                "type": str(err.get("type", "")),
            }
        )
    return out


def allowed_methods(request: Request) -> str | None:
    """The ``Allow`` value for a 405: every method the API routes accept at this path. Routing answers 405 from the
    first route whose path matches, naming that route's methods only, while GET and DELETE of one path are often
    two routes. Routes of another path template that also match (``/services/validate`` and
    ``/services/{service_id}``) are separate resources and are left out."""
    path = request.scope.get("path", "")
    template: str | None = None
    methods: set[str] = set()
    for rc in iter_route_contexts(request.app.routes):
        regex = getattr(rc, "path_regex", None) if isinstance(rc.original_route, APIRoute) else None
        if regex is None or not regex.match(path):
            continue
        template = template or rc.path_format
        if rc.path_format == template:
            methods |= set(rc.methods or ())
    return ", ".join(sorted(methods)) or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(WindflowError)
    async def _domain(_: Request, exc: WindflowError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.message, exc.details)

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        raw = [dict(e) for e in exc.errors()]
        for e in raw:  # windflow.domain.strict checks a whole body at once: point at the field it names
            field = (e.get("ctx") or {}).get("field")
            if e.get("type") in ("number_type", "bool_type") and isinstance(field, str) and field not in e["loc"]:
                e["loc"] = (*e["loc"], field)
        errors = _jsonable_errors(raw)
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return error_response(422, "validation_error", f"{where}: {first['msg']}{more}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else _HTTP_CODES.get(exc.status_code, "error")
        details = None if isinstance(exc.detail, str) else exc.detail
        headers = dict(exc.headers or {})
        allow = allowed_methods(request) if exc.status_code == 405 else None
        if allow:
            headers = {k: v for k, v in headers.items() if k.lower() != "allow"} | {"Allow": allow}
        return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "error"), message, details, headers)

    @app.exception_handler(WorkflowAlreadyStartedError)
    async def _already(_: Request, exc: WorkflowAlreadyStartedError) -> JSONResponse:
        return error_response(
            409, "already_running", f"workflow {exc.workflow_id} is already running", {"workflow_id": exc.workflow_id}
        )

    @app.exception_handler(WorkflowFailureError)
    async def _wf_failed(_: Request, exc: WorkflowFailureError) -> JSONResponse:
        cause = exc.cause
        return error_response(502, "workflow_failed", str(cause) if cause else "workflow failed")

    @app.exception_handler(RPCError)
    async def _rpc(_: Request, exc: RPCError) -> JSONResponse:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return error_response(404, "not_found", exc.message)
        if exc.status == RPCStatusCode.ALREADY_EXISTS:
            return error_response(409, "conflict", exc.message)
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return error_response(503, "temporal_unavailable", f"Temporal is unreachable: {exc.message}")
        log.warning("temporal rpc error %s: %s", exc.status, exc.message)
        return error_response(502, "temporal_error", exc.message)

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database error: %s", exc)
        return error_response(
            503, "store_unavailable", "the database is unreachable; try again shortly", headers={"Retry-After": "2"}
        )

    @app.exception_handler(DataError)
    async def _db_refused_value(_: Request, exc: DataError) -> JSONResponse:
        # the store refuses a value the request carries (PostgreSQL: a NUL character in text, a number out of range)
        log.warning("the database refused a value: %s", exc.orig)
        return error_response(
            422, "invalid_value", "the request holds a value the store cannot keep (e.g. a NUL character)"
        )

    @app.exception_handler(DBAPIError)
    async def _db_error(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return error_response(
                503, "store_unavailable", "the database connection was lost; try again", headers={"Retry-After": "2"}
            )
        log.exception("database error", exc_info=exc)
        return error_response(500, "internal_error", "internal database error")

    @app.exception_handler(Exception)
    async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal error; see the server log")
