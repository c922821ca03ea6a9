"""Hostile input through the real API (SQLite and PostgreSQL, a real Temporal dev server) and real processes.

Oversized, deeply nested and non-UTF-8 bodies, path traversal and NUL bytes in every id-bearing route, shell
metacharacters in ids and arguments: each gets a clean 4xx with the error envelope, nothing is stored, no file is
touched, and commands are argv lists that no shell ever re-reads.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from tests.auth_helpers import create_user
from windflow.domain.errors import ConfigInvalid
from windflow.domain.models import ServiceSpec
from windflow.drivers.command import CommandDriver
from windflow.drivers.process import ProcessDriver

pytestmark = pytest.mark.asyncio(loop_scope="session")

DEEP = 100_000
SHELL_IDS = ["a;rm -rf x", "$(touch pwned)", "`touch pwned`", "a|touch pwned", "a&&b", "a b", "a\nb", "../x", "A"]
SHELL_ARGS = [
    "a;touch pwned-1",
    "$(touch pwned-2)",
    "`touch pwned-3`",
    "&& touch pwned-4",
    "| touch pwned-5",
    "> pwned-6",
    "'; touch pwned-7; '",
    '"$(touch pwned-8)"',
    "*",
    "~",
    "$HOME",
    "\\",
]


@pytest.fixture
def settings(temporal_settings):
    """Routes that start, signal or query workflows answer for real: a dev server, no worker."""
    return temporal_settings


def assert_envelope(resp: httpx2.Response, *statuses: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code in statuses, (resp.request.method, resp.request.url, resp.status_code, resp.text[:500])
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"code", "message", "timestamp", "details"} <= set(err), err
    if code:
        assert err["code"] == code, err
    return err


def client_error(resp: httpx2.Response) -> dict[str, Any]:
    return assert_envelope(resp, *range(400, 500))


async def registered(api: httpx2.AsyncClient) -> list[str]:
    r = await api.get("/api/v1/services")
    assert r.status_code == 200, r.text
    return [s["id"] for s in r.json()["items"]]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def noop(sid: str = "web", **extra: Any) -> dict[str, Any]:
    return {"id": sid, "driver": "noop", **extra}


# --------------------------------------------------------------------------- oversized bodies


async def test_oversized_bodies_are_refused_with_413(api, anon, settings):
    limit = settings.max_body_bytes
    big = b'{"id": "web", "driver": "noop", "description": "' + b"x" * limit + b'"}'
    err = assert_envelope(
        await api.post("/api/v1/services", content=big, headers={"Content-Type": "application/json"}),
        413,
        code="payload_too_large",
    )
    assert err["details"] == {"max_bytes": limit}

    async def chunks() -> AsyncIterator[bytes]:  # streamed: no Content-Length to refuse up front
        yield b'{"id": "web", "driver": "noop", "description": "'
        for _ in range(limit // 65_536 + 2):
            yield b"x" * 65_536
        yield b'"}'

    assert_envelope(
        await api.post("/api/v1/services", content=chunks(), headers={"Content-Type": "application/json"}),
        413,
        code="payload_too_large",
    )
    yaml_doc = b"services:\n  web: {driver: noop, description: '" + b"y" * limit + b"'}\n"
    assert_envelope(
        await api.put("/api/v1/system", content=yaml_doc, headers={"Content-Type": "application/yaml"}),
        413,
        code="payload_too_large",
    )
    # before authentication too: a stranger cannot make the API read a large body
    assert_envelope(
        await anon.post(
            "/api/v1/auth/login", content=b"{" + b" " * (limit + 1) + b"}", headers={"Content-Type": "application/json"}
        ),
        413,
        code="payload_too_large",
    )
    assert await registered(api) == []


# --------------------------------------------------------------------------- deeply nested JSON / YAML


async def test_deeply_nested_documents_get_a_clean_4xx(api, anon):
    deep_json = "[" * DEEP + "]" * DEEP
    deep_object = '{"a":' * DEEP + "1" + "}" * DEEP
    json_headers = {"Content-Type": "application/json"}
    for method, path in [
        ("POST", "/api/v1/services"),
        ("POST", "/api/v1/services/validate"),
        ("PUT", "/api/v1/system"),
        ("POST", "/api/v1/system/validate"),
        ("POST", "/api/v1/codec/decode"),
        ("POST", "/api/v1/users"),
    ]:
        for doc in (deep_json, deep_object):
            client_error(await api.request(method, path, content=doc, headers=json_headers))
    client_error(await anon.post("/api/v1/auth/login", content=deep_object, headers=json_headers))
    yaml_headers = {"Content-Type": "application/yaml"}
    for doc in ("[" * DEEP + "]" * DEEP, "services: " + "{a: " * 20_000 + "1" + "}" * 20_000):
        assert_envelope(await api.put("/api/v1/system", content=doc, headers=yaml_headers), 422, code="config_invalid")
    assert await registered(api) == []


async def test_nesting_the_api_cannot_store_is_refused_before_it_is_stored(api):
    body: Any = "leaf"
    for _ in range(500):  # decodes fine, but deeper than any answer could be serialized
        body = [body]
    service = {
        "id": "ctl",
        "driver": "http",
        "config": {
            "start": {"url": "http://127.0.0.1:9/start", "body": body},
            "stop": {"url": "http://127.0.0.1:9/stop"},
        },
    }
    err = assert_envelope(await api.post("/api/v1/services", json=service), 422, code="validation_error")
    assert "nested deeper" in err["message"]
    err = assert_envelope(
        await api.put("/api/v1/system", json={"services": {"ctl": {k: v for k, v in service.items() if k != "id"}}}),
        422,
        code="config_invalid",
    )
    assert "nested deeper" in err["message"]
    assert await registered(api) == []


async def test_yaml_alias_bomb_is_refused_without_expanding_it(api):
    lines = ["services:", "  web: {driver: noop}", 'x-a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"x-{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")  # 9**9 strings once expanded
    err = assert_envelope(
        await api.put("/api/v1/system", content="\n".join(lines), headers={"Content-Type": "application/yaml"}),
        422,
        code="config_invalid",
    )
    assert "expands to more than" in err["message"]
    assert await registered(api) == []


async def test_deeply_nested_alert_payloads_get_400(api, anon):
    await create_user(api, "tester", ["operator"])  # a hook works while its creator holds recovery:trigger
    r = await api.post("/api/v1/hooks", json={"name": "am", "kind": "alertmanager"})
    assert r.status_code == 201, r.text
    hook = r.json()
    headers = {"Authorization": f"Bearer {hook['token']}", "Content-Type": "application/json"}
    for path in ("/api/v1/hooks/alertmanager", f"/api/v1/hooks/{hook['id']}"):
        assert_envelope(
            await anon.post(path, content="[" * DEEP + "]" * DEEP, headers=headers), 400, code="bad_request"
        )
        assert_envelope(await anon.post(path, content=b"\xff\xfe{\x00", headers=headers), 400, code="bad_request")


# --------------------------------------------------------------------------- non-UTF-8 bodies


async def test_non_utf8_bodies_get_a_4xx_envelope(api, anon):
    latin1 = 'services:\n  caf\xe9: {driver: noop, description: "\xe9t\xe9"}\n'.encode("latin-1")
    junk = b'{"id": "web", "driver": "noop", "description": "\xff\xfe\xfd"}'
    for ctype in ("application/yaml", "application/json"):
        assert_envelope(
            await api.put("/api/v1/system", content=latin1, headers={"Content-Type": ctype}), 400, code="bad_request"
        )
        assert_envelope(
            await api.post("/api/v1/system/validate", content=latin1, headers={"Content-Type": ctype}),
            400,
            code="bad_request",
        )
    json_headers = {"Content-Type": "application/json"}
    for method, path in [
        ("POST", "/api/v1/services"),
        ("POST", "/api/v1/services/validate"),
        ("POST", "/api/v1/users"),
        ("POST", "/api/v1/roles"),
        ("POST", "/api/v1/hooks"),
        ("POST", "/api/v1/codec/encode"),
        ("POST", "/api/v1/auth/tokens"),
    ]:
        client_error(await api.request(method, path, content=junk, headers=json_headers))
    client_error(
        await anon.post("/api/v1/auth/login", content=b'{"username": "\xff", "password": "\xfe"}', headers=json_headers)
    )
    client_error(
        await anon.post(
            "/api/v1/auth/login",
            content=b"username=\xff\xfe&password=\xfd&grant_type=password",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    )
    assert await registered(api) == []


# --------------------------------------------------------------------------- ids: traversal, NUL, metacharacters

TRAVERSAL = [
    "%2e%2e",
    "%2e%2e%2fetc%2fpasswd",
    "..%2f..%2f..%2fetc%2fpasswd",
    "..%5c..%5cetc%5cpasswd",
    "%252e%252e%252f",
    "a%00b",
    "%00",
    "a%0ab",
]
"""Already percent-encoded: sent as is, decoded by the server (a client would resolve a literal '../')."""

BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/services/{service_id}/recoveries"): {"reason": "traversal"},
    ("POST", "/api/v1/services/{service_id}/actions"): {"action": "restart", "wait": False},
    ("POST", "/api/v1/services/{service_id}/recoveries/decision"): {"decision": "approve"},
    ("PUT", "/api/v1/services/{service_id}/config"): {"content": {"driver": "noop"}, "expected_version": 1},
    ("POST", "/api/v1/services/{service_id}/config/revert"): {"version": 1, "expected_version": 1},
    ("POST", "/api/v1/services/{service_id}/config/validate"): {"driver": "noop"},
    ("POST", "/api/v1/config-templates/{name}/instantiate"): {"service_id": "web"},
}
"""Bodies that pass validation, so the hostile id reaches the store, Temporal or a driver."""


def id_routes(app) -> list[tuple[str, str]]:
    out = []
    for rc in iter_route_contexts(app.routes):
        if isinstance(rc.original_route, APIRoute) and "{" in (rc.path_format or ""):
            out += [(m, rc.path_format) for m in sorted((rc.methods or set()) - {"HEAD", "OPTIONS"})]
    return out


async def test_path_traversal_and_nul_bytes_in_every_id_bearing_route_get_4xx(app, api, settings, tmp_path):
    await api.post("/api/v1/services", json=noop())  # one real service: ids next to it must not reach it
    routes = id_routes(app)
    assert len(routes) > 25, routes
    before = files_under(settings.data_dir)
    seen: dict[int, int] = {}
    for method, template in routes:
        for value in TRAVERSAL:
            names = re.findall(r"\{([^}:]+)(?::[^}]*)?\}", template)
            for hostile in names:  # one parameter at a time: the others keep plausible values
                path = template
                for name in names:
                    plausible = "1" if name in ("version",) else "web"
                    path = re.sub(r"\{" + name + r"(?::[^}]*)?\}", value if name == hostile else plausible, path)
                body = BODIES.get((method, template), {})
                kwargs: dict[str, Any] = {"json": body} if method in ("POST", "PUT", "PATCH") else {}
                r = await api.request(method, path, **kwargs)
                seen[r.status_code] = seen.get(r.status_code, 0) + 1
                assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text[:300])
                client_error(r)
    assert files_under(settings.data_dir) == before
    assert not [p for p in files_under(tmp_path.parent) if "passwd" in p or "pwned" in p]
    assert await registered(api) == ["web"]
    assert set(seen) <= {400, 401, 403, 404, 405, 409, 422, 428}, seen  # 401: hook receivers want their token


async def test_nul_bytes_in_query_and_body_strings_are_refused_not_a_500(api):
    for params in ({"q": "a\x00b"}, {"label": "tier=\x00"}, {"driver": "\x00"}, {"cursor": "\x00"}):
        r = await api.get("/api/v1/services", params=params)
        assert r.status_code == 200 or 400 <= r.status_code < 500, (params, r.text)
    r = await api.get("/api/v1/audit", params={"actor": "a\x00", "target": "\x00"})
    assert r.status_code == 200 or 400 <= r.status_code < 500, r.text
    for body in (
        noop(description="nul \x00 inside"),
        noop(labels={"tier": "\x00"}),
        noop(secret_keys=["pass\x00word"]),
    ):
        r = await api.post("/api/v1/services", json=body)
        if r.status_code == 201:  # SQLite keeps the character; read back exactly what was sent
            got = (await api.get("/api/v1/services/web")).json()
            assert got["description"] == body.get("description", ""), got
            assert (await api.delete("/api/v1/services/web")).status_code == 204
        else:
            client_error(r)
    r = await api.post(
        "/api/v1/users", json={"username": "nul\x00user", "password": "long-enough-pass", "roles": ["viewer"]}
    )
    client_error(r)


@pytest.mark.parametrize("sid", SHELL_IDS)
async def test_shell_metacharacters_in_service_ids_fail_id_validation(api, sid):
    err = assert_envelope(await api.post("/api/v1/services", json=noop(sid)), 422, code="validation_error")
    assert any("id" in d["loc"] for d in err["details"]), err
    err = assert_envelope(
        await api.put("/api/v1/system", json={"services": {sid: {"driver": "noop"}}}), 422, code="config_invalid"
    )
    assert err["details"][0]["loc"] == ["services", sid], err
    report = await api.post("/api/v1/system/validate", json={"services": {sid: {"driver": "noop"}}})
    assert report.status_code == 200 and report.json()["valid"] is False, report.text
    assert_envelope(await api.post("/api/v1/services", json=noop(depends_on=[sid])), 422, code="validation_error")
    assert_envelope(
        await api.post("/api/v1/config-templates/process/instantiate", json={"service_id": sid}),
        422,
        code="validation_error",
    )
    assert await registered(api) == []


# --------------------------------------------------------------------------- commands are argv, never a string

ECHO_ARGV = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text(chr(0).join(sys.argv[2:]))"


async def test_the_process_driver_passes_metacharacters_as_literal_arguments(tmp_path):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    out = tmp_path / "argv.out"
    spec = ServiceSpec.model_validate(
        {
            "id": "echo",
            "driver": "process",
            "config": {
                "command": [sys.executable, "-c", ECHO_ARGV, str(out), *SHELL_ARGS],
                "cwd": str(workdir),
                "env": {"WF_HOSTILE": "$(touch pwned-env)"},
            },
        }
    )
    driver = ProcessDriver(data_dir=tmp_path / "data")
    try:
        started = await driver.start(spec)
        assert started.ok and started.pid
        exit_info = await asyncio.wait_for(driver.wait_exit(spec), timeout=30)
        assert exit_info is not None
    finally:
        driver.close()
    assert out.read_text().split("\x00") == SHELL_ARGS  # each argument arrived as one literal string
    assert not list(tmp_path.rglob("pwned*")), list(tmp_path.rglob("*"))


async def test_the_command_driver_runs_argv_lists_literally_and_never_interpolates_into_a_shell_string(tmp_path):
    out = tmp_path / "argv.out"
    argv_form = ServiceSpec.model_validate(
        {
            "id": "cmd",
            "driver": "command",
            "config": {
                "start": {"run": [sys.executable, "-c", ECHO_ARGV, str(out), *SHELL_ARGS], "cwd": str(tmp_path)},
                "stop": {"run": ["true"]},
            },
        }
    )
    result = await CommandDriver().start(argv_form)
    assert result.ok and result.exit_code == 0, result
    assert out.read_text().split("\x00") == SHELL_ARGS
    # a shell string is the operator's own command; values reach it only through the environment, and a shell
    # does not re-read the result of an expansion as code
    env_out = tmp_path / "env.out"
    shell_form = ServiceSpec.model_validate(
        {
            "id": "cmd",
            "driver": "command",
            "config": {
                "start": {
                    "run": f'printf "%s" "$WF_HOSTILE" > {env_out}',
                    "cwd": str(tmp_path),
                    "env": {"WF_HOSTILE": "$(touch pwned-env); `touch pwned-tick`"},
                },
                "stop": {"run": "true"},
            },
        }
    )
    result = await CommandDriver().start(shell_form)
    assert result.ok, result
    assert env_out.read_text() == "$(touch pwned-env); `touch pwned-tick`"
    assert not list(tmp_path.rglob("pwned*")), list(tmp_path.rglob("*"))


@pytest.mark.parametrize("sid", ["../escape", "..", "a/b", "a\x00b", "$(touch pwned)"])
async def test_the_process_driver_refuses_an_id_that_would_leave_its_directories(tmp_path, sid):
    # a spec that skipped validation (model_construct) still cannot name a state or log file outside the data dir
    valid = ServiceSpec.model_validate({"id": "ok", "driver": "process", "config": {"command": ["true"]}})
    spec = ServiceSpec.model_construct(**{**dict(valid), "id": sid})
    data_dir = tmp_path / "data"
    driver = ProcessDriver(data_dir=data_dir)
    try:
        for call in (driver.start, driver.stop, driver.status, driver.wait_exit):
            with pytest.raises(ConfigInvalid, match="invalid service id"):
                await call(spec)
    finally:
        driver.close()
    assert files_under(tmp_path) <= {"data", "data/run", "data/logs"}, files_under(tmp_path)
