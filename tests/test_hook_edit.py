"""Editing an incoming alert hook (PATCH /hooks/{id}): name, mapping, force, dedupe window; the kind's own
fields only, checked as a new hook is; nothing half-saved; audited; recovery:trigger only. SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.auth_helpers import assert_envelope, bearer, create_user
from tests.helpers import eventually
from tests.test_hooks_hardening import make_hook

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_edit_a_generic_hook(api, anon, settings):
    await create_user(api, "tester", ["operator"])  # the hook's creator must be a user holding recovery:trigger
    hook = await make_hook(api, name="pager", status_path="$.state")
    other = await make_hook(api, name="other")
    url = f"/api/v1/hooks/{hook['id']}"

    r = await api.patch(
        url, json={"name": "pager-2", "service_path": "$.alert.svc", "force": True, "dedupe_window": 30}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "pager-2" and body["force"] is True and body["dedupe_window"] == 30
    assert body["config"]["service_path"] == "$.alert.svc" and body["config"]["status_path"] == "$.state"
    assert "token" not in body and body["token_prefix"] == hook["token_prefix"]  # the token is unchanged

    # the new mapping is the one alerts go through (an unknown service: recorded as ignored, nothing started)
    r = await anon.post(url, json={"alert": {"svc": "ghost"}, "state": "firing"}, headers=bearer(hook["token"]))
    assert r.status_code == 200, r.text
    assert [(o["service"], o["outcome"]) for o in r.json()["outcomes"]] == [("ghost", "ignored")]

    # bad input: an unparseable path, another kind's field, a taken name, an unknown key; nothing saved
    err = assert_envelope(
        await api.patch(url, json={"name": "pager-3", "status_path": "state["}), 422, "validation_error"
    )
    assert err["details"][0]["loc"][0] == "body"
    err = assert_envelope(await api.patch(url, json={"label": "svc"}), 422, "validation_error")
    assert err["details"][0]["loc"] == ["body", "label"]
    assert_envelope(await api.patch(url, json={"name": other["name"]}), 409, "conflict")
    assert_envelope(await api.patch(url, json={"kind": "alertmanager"}), 422, "validation_error")
    assert_envelope(await api.patch(url, json={"dedupe_window": -1}), 422, "validation_error")
    assert_envelope(await api.patch("/api/v1/hooks/hk_missing", json={"force": False}), 404)
    after = (await api.get(url)).json()
    assert after["name"] == "pager-2" and after["config"]["status_path"] == "$.state"

    # an unchanged value is not a change: nothing audited for it
    assert (await api.patch(url, json={"force": True})).status_code == 200

    async def audited():
        r = await api.get("/api/v1/audit", params={"action": "hook.update", "target": hook["id"]})
        items = r.json()["items"]
        return items if any(i["outcome"] == "success" for i in items) else None

    items = await eventually(audited)
    ok = [i for i in items if i["outcome"] == "success"]
    assert len(ok) == 1 and ok[0]["details"]["changed"] == ["dedupe_window", "force", "name", "service_path"]


async def test_edit_an_alertmanager_hook_and_permissions(api, anon, settings):
    r = await api.post("/api/v1/hooks", json={"name": "am", "kind": "alertmanager"})
    assert r.status_code == 201, r.text
    url = f"/api/v1/hooks/{r.json()['id']}"
    r = await api.patch(url, json={"label": "service"})
    assert r.status_code == 200 and r.json()["config"] == {"label": "service"}, r.text
    assert_envelope(await api.patch(url, json={"service_path": "$.x"}), 422, "validation_error")

    await create_user(api, "vic", ["viewer"])
    login = await anon.post("/api/v1/auth/login", json={"username": "vic", "password": "correct-horse-battery"})
    viewer = bearer(login.json()["access_token"])
    assert_envelope(await anon.patch(url, json={"label": "x"}, headers=viewer), 403)
    assert (await api.get(url)).json()["config"] == {"label": "service"}
