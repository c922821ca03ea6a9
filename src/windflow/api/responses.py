"""The error envelope and the error responses the OpenAPI schema declares: each one has the envelope as its body.

Routers pass these as ``responses=`` (:mod:`windflow.api.errors` re-exports them beside its handlers). A client
generated from ``/openapi.json`` then knows every status it can get, and that each error body is
``{"error": {"code", "message", "timestamp", "details"}}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(examples=["not_found"])
    message: str
    timestamp: datetime
    details: Any = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


_DESCRIPTIONS = {
    400: "Malformed request (e.g. a body that is not UTF-8, or a malformed header)",
    401: "Authentication required, or the token is invalid, expired or revoked",
    403: "The caller lacks the permission the operation needs",
    404: "No such resource",
    409: "Conflicts with the current state",
    412: "The expected version does not match the current one",
    413: "The request body is larger than the API accepts",
    415: "Unsupported media type",
    422: "The request does not validate",
    428: "The operation needs the expected current version (If-Match or expected_version)",
    429: "Too many attempts; see Retry-After",
    502: "Temporal answered with an error",
    503: "A backing service (database, Temporal, event bus) is unreachable; try again shortly",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for ``statuses``, each with the envelope as its body."""
    return {status: {"model": ErrorEnvelope, "description": _DESCRIPTIONS[status]} for status in statuses}


ERROR_RESPONSES = error_responses(400, 401, 403, 404, 409, 413, 422, 503)
"""What any route behind a bearer token may answer besides its success: pass as the router's ``responses=``."""
