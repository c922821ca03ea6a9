"""Who may make a host run code: ``services:exec`` (admin only by default), apart from ``configs:write``.

An operator holds ``configs:write``: it may change every field of a service that does not decide what a host
runs (labels, restart policy, probe timing, http probes), but not a process command, a command-driver script,
an exec probe, their environment, directory or user. Each refusal is a 403 envelope naming the permission, and
nothing is saved.
"""

from __future__ import annotations

import pytest

from tests.auth_helpers import assert_envelope, bearer, create_user, login
from windflow.auth.permissions import BUILTIN_ROLES, Permission

PROCESS = {"id": "app", "driver": "process", "config": {"command": ["sleep", "60"]}}
COMMAND = {
    "id": "unit",
    "driver": "command",
    "config": {"start": {"run": "systemctl start x"}, "stop": {"run": "systemctl stop x"}},
}
EXEC_PROBE = {"id": "probed", "driver": "noop", "health": {"kind": "exec", "command": ["id"]}}


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"login_attempts_per_address": 10_000, "login_attempts_per_user": 10_000})


@pytest.fixture
async def operator(api, anon):
    await create_user(api, "olga", ["operator"])
    return bearer((await login(anon, "olga"))["access_token"])


def refused(resp) -> dict:
    err = assert_envelope(resp, 403, "forbidden")
    assert err["details"]["required"] == "services:exec", err
    assert "services:exec" in err["message"]
    return err


def test_only_admin_holds_exec_by_default():
    assert Permission.SERVICES_EXEC in BUILTIN_ROLES["admin"]
    assert Permission.SERVICES_EXEC not in BUILTIN_ROLES["operator"]
    assert Permission.SERVICES_EXEC not in BUILTIN_ROLES["viewer"]


@pytest.mark.parametrize("body", [PROCESS, COMMAND, EXEC_PROBE], ids=["process", "command", "exec-probe"])
async def test_operator_cannot_create_a_service_that_runs_code(anon, api, operator, body):
    refused(await anon.post("/api/v1/services", json=body, headers=operator))
    assert_envelope(await api.get(f"/api/v1/services/{body['id']}"), 404)
    # the same through a whole system file: refused, nothing saved
    doc = {"services": {body["id"]: {k: v for k, v in body.items() if k != "id"}}}
    refused(await anon.put("/api/v1/system", json=doc, headers=operator))
    assert (await api.get("/api/v1/services")).json()["items"] == []


async def test_operator_keeps_every_non_exec_field(anon, api, operator):
    assert (
        await anon.post("/api/v1/services", json={"id": "web", "driver": "noop"}, headers=operator)
    ).status_code == 201
    assert (await api.post("/api/v1/services", json=PROCESS)).status_code == 201
    current = (await api.get("/api/v1/services/app/config")).json()
    content = {
        **current["content"],
        "labels": {"tier": "web"},
        "description": "changed by an operator",
        "restart": {"max_attempts": 9},
    }
    r = await anon.put(
        "/api/v1/services/app/config",
        headers=operator,
        json={"content": content, "expected_version": current["version"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["author"] == "olga"


@pytest.mark.parametrize(
    "change",
    [
        {"config": {"command": ["sh", "-c", "id"]}},
        {"config": {"command": ["sleep", "60"], "env": {"LD_PRELOAD": "/tmp/x.so"}}},
        {"config": {"command": ["sleep", "60"], "cwd": "/tmp"}},
        {"health": {"kind": "exec", "command": ["id"]}},
        {"host": "other-host"},
        {"driver": "command", "config": {"start": {"run": "id"}, "stop": {"run": "true"}}},
    ],
    ids=["command", "env", "cwd", "exec-probe", "host", "driver"],
)
async def test_operator_cannot_change_what_a_host_runs(anon, api, operator, change):
    assert (await api.post("/api/v1/services", json=PROCESS)).status_code == 201
    current = (await api.get("/api/v1/services/app/config")).json()
    content = {**current["content"], **change}
    refused(
        await anon.put(
            "/api/v1/services/app/config",
            headers=operator,
            json={"content": content, "expected_version": current["version"]},
        )
    )
    assert (await api.get("/api/v1/services/app/config")).json()["version"] == 1
    # an admin may
    r = await api.put("/api/v1/services/app/config", json={"content": content, "expected_version": 1})
    assert r.status_code == 200, r.text


async def test_operator_cannot_revert_to_other_code_nor_instantiate_it(anon, api, operator):
    assert (await api.post("/api/v1/services", json=PROCESS)).status_code == 201
    content = {**(await api.get("/api/v1/services/app/config")).json()["content"], "config": {"command": ["true"]}}
    assert (
        await api.put("/api/v1/services/app/config", json={"content": content, "expected_version": 1})
    ).status_code == 200
    refused(await anon.post("/api/v1/services/app/config/revert", headers=operator, json={"version": 1}))
    assert (await api.get("/api/v1/services/app/config")).json()["version"] == 2
    refused(
        await anon.post(
            "/api/v1/config-templates/http-process/instantiate",
            headers=operator,
            json={
                "service_id": "webapp",
                "parameters": {"command": ["python3", "app.py"], "port": 8081},
                "create": True,
            },
        )
    )
    assert_envelope(await api.get("/api/v1/services/webapp"), 404)


async def test_a_custom_role_with_configs_write_only_is_refused_too(anon, api):
    r = await api.post(
        "/api/v1/roles", json={"name": "editor", "permissions": ["configs:write", "configs:read", "services:read"]}
    )
    assert r.status_code == 201, r.text
    await create_user(api, "ed", ["editor"])
    headers = bearer((await login(anon, "ed"))["access_token"])
    refused(await anon.post("/api/v1/services", json=EXEC_PROBE, headers=headers))
    # granted services:exec, the same request passes
    r = await api.post("/api/v1/roles", json={"name": "author", "permissions": ["configs:write", "services:exec"]})
    assert r.status_code == 201, r.text
    assert (await api.patch("/api/v1/users/ed", json={"roles": ["editor", "author"]})).status_code == 200
    headers = bearer((await login(anon, "ed"))["access_token"])
    assert (await anon.post("/api/v1/services", json=EXEC_PROBE, headers=headers)).status_code == 201
