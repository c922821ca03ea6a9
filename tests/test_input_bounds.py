"""Inputs at and past the edges of what the API keeps: each is a clean 4xx with the error envelope, never a 500.

Cursors that decode to numbers beyond a 64-bit column, version numbers of 20 digits, instants with no UTC
equivalent, durations of 1 followed by 400 zeros, NUL characters in filters, ``true`` where a number is expected,
keys a body does not have; the security headers on every answer; no token or bound value in a log line.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from typing import Any

import httpx2
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.auth_helpers import assert_envelope
from windflow.api.bodies import RequestBody
from windflow.api.routers.initializations import InitializationCreate
from windflow.api.routers.recoveries import ActionCreate
from windflow.api.routers.rollouts import RolloutCreate
from windflow.domain.durations import parse_duration
from windflow.domain.errors import ConfigInvalid
from windflow.persistence.repositories import decode_cursor

# asyncio_mode = "auto" with a session loop (pyproject): no module mark, so the sync tests here stay sync

HUGE = 10**30
TWENTY_DIGITS = "12345678901234567890"


def cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def _service(api: httpx2.AsyncClient, sid: str = "web") -> None:
    r = await api.post("/api/v1/services", json={"id": sid, "driver": "noop", "labels": {"tier": "front"}})
    assert r.status_code == 201, r.text


BAD_POSITIONS = [
    {"offset": HUGE},
    {"before": HUGE},
    {"before": -1},
    {"after": "a\x00b"},
    {"before": [1]},
    {"started_at": "not a time", "run_id": "x"},
]


async def test_cursors_beyond_what_a_column_holds_are_422(api):
    await _service(api)
    for c in map(cursor, BAD_POSITIONS):
        for url in (
            f"/api/v1/services?q=web&cursor={c}",
            f"/api/v1/services?cursor={c}",
            f"/api/v1/audit?cursor={c}",
            f"/api/v1/services/web/config/versions?cursor={c}",
            f"/api/v1/initializations?cursor={c}",
            f"/api/v1/users?cursor={c}",
        ):
            err = assert_envelope(await api.get(url), 422)
            assert err["details"] == [{"loc": ["query", "cursor"], "msg": "not a cursor"}], (url, err)


async def test_version_numbers_of_twenty_digits_are_422(api):
    await _service(api)
    for url in (
        f"/api/v1/services/web/config/versions/{TWENTY_DIGITS}",
        f"/api/v1/services/web/config/diff?from={TWENTY_DIGITS}&to=1",
        f"/api/v1/services/web/config/diff?from=1&to={TWENTY_DIGITS}",
    ):
        assert_envelope(await api.get(url), 422, code="validation_error")
    r = await api.post("/api/v1/services/web/config/revert", json={"version": int(TWENTY_DIGITS)})
    assert_envelope(r, 422, code="validation_error")
    r = await api.put(
        "/api/v1/services/web/config", json={"content": {"driver": "noop"}}, headers={"If-Match": f'"{TWENTY_DIGITS}"'}
    )
    assert_envelope(r, 400)
    for query in ("until=9999-12-31T23:59:59-14:00", "since=0001-01-01T00:00:00%2B14:00"):
        assert_envelope(await api.get(f"/api/v1/audit?{query}"), 422, code="validation_error")
    assert (await api.get("/api/v1/audit?until=9999-12-31T00:00:00Z")).status_code == 200


async def test_huge_durations_are_refused_not_a_crash(api):
    huge = "1" + "0" * 400
    body = '{"id": "big", "driver": "noop", "health": {"kind": "tcp", "port": 80, "timeout": ' + huge + "}}"
    r = await api.post("/api/v1/services/validate", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["valid"] is False and "out of range" in json.dumps(report["problems"])
    r = await api.post("/api/v1/services", content=body, headers={"Content-Type": "application/json"})
    assert_envelope(r, 422)
    assert (await api.get("/api/v1/services/big")).status_code == 404


@given(
    st.one_of(
        st.integers(min_value=366 * 86400 + 1),
        st.integers(max_value=-1),
        st.floats(min_value=366 * 86400 + 1),
        st.floats(max_value=-1e-9),
        st.just(float("inf")),
        st.just(float("nan")),
        st.integers(min_value=2, max_value=400).map(lambda n: 10**n * 10**400),
    )
)
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_out_of_range_durations_raise_a_value_error(value):
    with pytest.raises(ValueError, match="out of range"):
        parse_duration(value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)


@given(
    st.dictionaries(
        st.sampled_from(["before", "after", "offset", "started_at", "run_id", "id", "x"]), json_values, max_size=4
    )
    | json_values,
    st.booleans(),
)
@hsettings(max_examples=200, deadline=None)
def test_property_any_cursor_decodes_to_a_bounded_position_or_a_422(data, raw):
    """Whatever a client puts in a cursor: a position whose numbers fit a 64-bit column and whose strings hold no
    NUL, or ConfigInvalid (422); never another exception."""
    if raw:
        text_ = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    else:
        text_ = json.dumps(data)[:40] or "x"  # not base64 of JSON at all, mostly
    try:
        position = decode_cursor(text_)
    except ConfigInvalid:
        return
    assert isinstance(position, dict)
    for value in position.values():
        assert not isinstance(value, dict | list)
        if isinstance(value, int) and not isinstance(value, bool):
            assert 0 <= value <= 2**63 - 1
        if isinstance(value, str):
            assert "\x00" not in value


async def test_nul_in_a_filter_is_422(api):
    await _service(api)
    for url in (
        "/api/v1/services?label=tier%3Dfr%00ont",
        "/api/v1/services?q=we%00b",
        "/api/v1/audit?actor=a%00b",
        "/api/v1/services?driver=%00",
    ):
        assert_envelope(await api.get(url), 422, code="validation_error")
    r = await api.get("/api/v1/services?label=tier%3Dfront")
    assert r.status_code == 200 and [s["id"] for s in r.json()["items"]] == ["web"]


async def test_probe_interval_floor_and_regex_bound(api):
    r = await api.post(
        "/api/v1/services",
        json={"id": "fast", "driver": "noop", "health": {"kind": "tcp", "port": 80, "interval": "0.0000001ms"}},
    )
    assert_envelope(r, 422)
    r = await api.post(
        "/api/v1/services",
        json={"id": "fast", "driver": "noop", "health": {"kind": "tcp", "port": 80, "interval": "100ms"}},
    )
    assert r.status_code == 201, r.text
    r = await api.post(
        "/api/v1/services",
        json={
            "id": "re",
            "driver": "noop",
            "health": {"kind": "http", "url": "http://127.0.0.1:1/", "body_regex": "a" * 1001},
        },
    )
    assert_envelope(r, 422)


# --------------------------------------------------------------------------- strict bodies


async def test_strict_bodies_typed_scalars_and_no_unknown_keys(api):
    await _service(api)
    r = await api.post(
        "/api/v1/services",
        json={"id": "t", "driver": "noop", "health": {"kind": "tcp", "port": 80, "failure_threshold": True}},
    )
    assert_envelope(r, 422)
    r = await api.post("/api/v1/services", json={"id": "t", "driver": "noop", "monitored": "yes"})
    assert_envelope(r, 422)
    r = await api.post("/api/v1/auth/tokens", json={"name": "ci", "expires_in_days": True})
    assert_envelope(r, 422)
    for model, body, key in (
        (ActionCreate, {"action": "restart", "timeout": True}, "timeout"),
        (RolloutCreate, {"config": {"driver": "noop"}, "timeout": True}, "timeout"),
        (InitializationCreate, {"overall_timeout": True}, "overall_timeout"),
        (InitializationCreate, {"validate_only": 1}, "validate_only"),
    ):
        with pytest.raises(ValidationError, match=f"{key}: (a number|true or false) is expected"):
            model.model_validate(body)
    assert ActionCreate.model_validate({"action": "restart", "timeout": 2}).timeout == 2.0
    assert RolloutCreate.model_validate({"config": {"driver": "noop"}, "timeout": 5}).timeout == 5.0
    # unknown keys
    r = await api.post("/api/v1/auth/tokens", json={"name": "ci", "expires_days": 3})
    assert_envelope(r, 422)
    r = await api.post("/api/v1/services/web/config/revert", json={"version": 1, "force": True})
    assert_envelope(r, 422)
    with pytest.raises(ValidationError, match="services"):
        InitializationCreate.model_validate({"services": ["web"]})


def _models(annotation: Any, found: set[type[BaseModel]]) -> None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation not in found:
        found.add(annotation)
        for field in annotation.model_fields.values():
            _models(field.annotation, found)
    for arg in typing.get_args(annotation):
        _models(arg, found)


def test_every_request_body_refuses_unknown_keys(app):
    lax: list[str] = []
    for rc in iter_route_contexts(app.routes):
        route = rc.original_route
        if not isinstance(route, APIRoute) or "/codec/" in (rc.path_format or ""):
            continue  # the codec's payloads are Temporal's (its UI sends them), read as Temporal defines them
        found: set[type[BaseModel]] = set()
        for param in route.dependant.body_params:
            _models(param.field_info.annotation, found)
        lax += [
            f"{rc.path_format}: {m.__name__}"
            for m in found
            if m.__module__.startswith("windflow.") and m.model_config.get("extra") != "forbid"
        ]
    assert not lax, lax
    assert issubclass(InitializationCreate, RequestBody)


# --------------------------------------------------------------------------- headers and logs


async def test_security_headers_on_the_dashboard_the_api_and_the_docs(anon):
    for path in ("/", "/api/v1/services", "/healthz", "/docs"):
        r = await anon.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["x-frame-options"] == "DENY", path
        assert r.headers["referrer-policy"] == "no-referrer", path
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, path
    app_csp = (await anon.get("/")).headers["content-security-policy"]
    assert "script-src 'self';" in app_csp and "unsafe-inline" not in app_csp.split("style-src")[0]


async def test_database_errors_carry_no_bound_values(db):
    secret = "s3cret-bound-value"
    with pytest.raises(DBAPIError) as caught:
        async with db.engine.connect() as conn:
            await conn.execute(text("SELECT * FROM no_such_table WHERE x = :p"), {"p": secret})
    assert secret not in str(caught.value)
    assert "hidden" in str(caught.value)


async def test_a_websocket_token_in_the_url_is_not_logged(app, settings):
    from websockets.asyncio.client import connect

    from tests.conftest import mint_token
    from tests.live_server import LiveServer
    from windflow.logs import configure_logging

    out = io.StringIO()
    configure_logging(level="INFO", fmt="json", stream=out)
    token = mint_token(settings)
    try:
        async with LiveServer(app, log_level="info") as server:
            async with connect(f"{server.ws_url}?token={token}&types=AUDIT") as ws:
                await ws.recv()
            async with httpx2.AsyncClient() as client:
                await client.get(f"{server.http_url}/healthz?token={token}")
    finally:
        configure_logging(level="WARNING", fmt="console", stream=io.StringIO())
        logging.getLogger().setLevel(logging.WARNING)
    logged = out.getvalue()
    assert "/api/v1/ws?token=**redacted**" in logged, logged[-2000:]
    assert "/healthz?token=**redacted**" in logged, logged[-2000:]
    assert token not in logged and token.split(".")[2] not in logged
