"""The whole OpenAPI schema under Schemathesis, in-process (ASGI), with an admin token and without one.

For every operation the app publishes: no 5xx, every status and body is the one the schema declares, and every
error body is the envelope ``{"error": {"code", "message", "timestamp", "details"}}``. New routers are covered as
soon as they are mounted: the operations come from ``/openapi.json`` of ``create_app``.

The app runs on its own SQLite store in Schemathesis's event-loop thread (its lifespan builds the resources
there). Temporal is deliberately unreachable: operations that start, signal, update or query workflows cannot do
their work in-process, so the admin run leaves out every route that depends on the Temporal client
(``TemporalDep``): starting, cancelling and retrying initializations, recoveries and their decision, supervision,
service actions, schedules and rollouts. They run against a real dev server and worker in
tests/test_api_workflows.py, tests/test_hooks.py and tests/test_rollout.py, and their hostile ids in
tests/test_hostile_input.py. The anonymous run keeps them all: the route guard answers 401 before any Temporal call.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, not_a_server_error, positive_data_acceptance
from schemathesis.python import asgi as schemathesis_asgi

from tests.conftest import mint_token
from windflow.api.app import create_app
from windflow.api.deps import get_temporal
from windflow.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")  # inside Schemathesis

MAX_EXAMPLES = 5
READINESS = ("GET", "/readyz")
"""Answers 503 ``not_ready`` by design while Temporal is unreachable (its declared contract), never 500."""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _needs_temporal(dependant: Dependant) -> bool:
    return any(dep.call is get_temporal or _needs_temporal(dep) for dep in dependant.dependencies)


def temporal_routes(app: FastAPI) -> set[tuple[str, str]]:
    """``(METHOD, path)`` of every route whose dependencies include the Temporal client."""
    out: set[tuple[str, str]] = set()
    for rc in iter_route_contexts(app.routes):
        if isinstance(rc.original_route, APIRoute) and _needs_temporal(rc.dependant):
            out |= {(method, rc.path_format) for method in rc.methods or ()}
    return out


def _settings() -> Settings:
    # the data dir is created by the app's lifespan on the first request, not at import
    data_dir = Path(tempfile.gettempdir()) / f"windflow-fuzz-{uuid.uuid4().hex[:12]}"
    return Settings(
        data_dir=data_dir,
        database_url=f"sqlite+aiosqlite:///{data_dir / 'windflow.db'}",
        jwt_secret="f" * 48,
        temporal_address=f"127.0.0.1:{_closed_port()}",
        bootstrap_admin_password="fuzz-admin-password",
        webhooks_dispatch=False,  # generated webhook subscriptions must not send anything anywhere
        _env_file=None,
    )


SETTINGS = _settings()
APP = create_app(SETTINGS)
# POST /initializations and PATCH /services/{id} (a scale) check the request against the registry before they contact
# Temporal (get_temporal is called in the route, not declared): Temporal-bound all the same
TEMPORAL_ROUTES = temporal_routes(APP) | {
    ("POST", "/api/v1/initializations"),
    ("PATCH", "/api/v1/services/{service_id}"),
}
# the schema is the app's own document; requests go to APP in-process (Schemathesis starts its lifespan)
# The coverage phase (boundary values, missing parts, undeclared methods) runs on every operation but one: for
# POST /services it would send some 1,300 combinations of the driver and probe unions. Its body is fuzzed like the
# others' and its boundaries are tested in tests/test_registry_api.py.
ADMIN_CONFIG = {
    "operations": [
        {"include-path": "/api/v1/services", "include-method": "POST", "phases": {"coverage": {"enabled": False}}}
    ]
}
admin_schema = schemathesis.openapi.from_dict(APP.openapi(), config=schemathesis.Config.from_dict(ADMIN_CONFIG))
admin_schema = admin_schema.exclude(
    func=lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in TEMPORAL_ROUTES
)
admin_schema.app = APP
# without a token every operation ends at the route guard: a few valid requests each (no coverage phase, no
# invalid data: malformed requests are the admin run's business) show that it answers 401 with the envelope
ANONYMOUS_CONFIG = {"phases": {"coverage": {"enabled": False}}, "generation": {"mode": "positive"}}
anonymous_schema = schemathesis.openapi.from_dict(APP.openapi(), config=schemathesis.Config.from_dict(ANONYMOUS_CONFIG))
anonymous_schema.app = APP


@pytest.fixture(scope="module", autouse=True)
def _app_lifespan() -> Iterator[None]:
    yield
    schemathesis_asgi.shutdown_lifespans()  # closes the store and the bus the lifespan opened
    shutil.rmtree(SETTINGS.data_dir, ignore_errors=True)


def test_temporal_exclusion_is_current() -> None:
    assert TEMPORAL_ROUTES, "no Temporal-bound routes found: the admin run's exclusion is stale"
    assert ("POST", "/api/v1/shutdowns") in TEMPORAL_ROUTES


def error_envelope(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """Every 4xx/5xx body is the error envelope, whatever the schema says."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{response.status_code} without a JSON body: {response.text[:300]!r}") from None
    assert isinstance(body, dict) and set(body) == {"error"}, f"not the error envelope: {body!r}"
    err = body["error"]
    assert isinstance(err, dict) and {"code", "message", "timestamp", "details"} <= set(err), err
    assert isinstance(err["code"], str) and err["code"], err
    assert isinstance(err["message"], str), err
    return True


HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
ANONYMOUS_HYPOTHESIS = settings(HYPOTHESIS, max_examples=3)


# Left out: these two demand that the server validates exactly what the schema says, no more and no less.
# windflow validates more (cursors, stream positions, If-Match, backoff_max >= backoff, known permissions: 422/400
# for schema-valid input) and pydantic's lax mode reads 0 as false for a boolean. Every such answer is still held
# to the declared statuses, the response schemas and the error envelope.
SEMANTIC_CHECKS = [positive_data_acceptance, negative_data_rejection]


def _check(case: schemathesis.Case, headers: dict[str, str]) -> schemathesis.Response:
    readiness = (case.method.upper(), case.path) == READINESS
    excluded = [*SEMANTIC_CHECKS, *([not_a_server_error] if readiness else [])]
    response = case.call_and_validate(headers=headers, additional_checks=[error_envelope], excluded_checks=excluded)
    if readiness:
        assert response.status_code in (200, 503), response.text
    return response


@admin_schema.parametrize()
@HYPOTHESIS
def test_contract_with_admin_token(case: schemathesis.Case) -> None:
    # a fresh token per call: a generated POST /auth/logout revokes the token it was sent with
    _check(case, {"Authorization": f"Bearer {mint_token(SETTINGS)}"})


@anonymous_schema.parametrize()
@ANONYMOUS_HYPOTHESIS
def test_contract_without_token(case: schemathesis.Case) -> None:
    response = _check(case, {})
    if case.path.startswith("/api/v1/"):
        assert response.status_code >= 400, f"{case.method} {case.path} answered {response.status_code} without a token"
