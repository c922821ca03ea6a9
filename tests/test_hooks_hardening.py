"""Incoming alert hooks, hardened: an alert confirms before it acts (a healthy service is not restarted, a replay
within the window is recorded, not acted on), Standard Webhooks signatures, a rate limit per hook, and a hook
that stops working when its creator loses the permission. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from tests.auth_helpers import bearer, create_user, login
from tests.helpers import eventually, running_worker, terminate_quietly
from tests.test_hooks import am_alert, am_payload, bring_up, restarts
from windflow.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


def signed(secret: str, body: bytes, *, msg_id: str | None = None, at: datetime | None = None) -> dict[str, str]:
    """Standard Webhooks headers made with the reference library, not windflow's code."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
        "content-type": "application/json",
    }


async def make_hook(client, **fields) -> dict:
    r = await client.post(
        "/api/v1/hooks",
        json={"name": f"h-{uuid.uuid4().hex[:6]}", "kind": "generic", "service_path": "$.svc", **fields},
    )
    assert r.status_code == 201, r.text
    return r.json()


# --------------------------------------------------------------------------- without Temporal (nothing to act on)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"hooks_rate_limit": 3, "hooks_rate_window": 60.0})


async def test_signature_hooks_verify_standard_webhooks(api, anon):
    await create_user(api, "tester", ["operator"])
    hook = await make_hook(api, auth="signature")
    secret = hook["signing_secret"]
    assert secret.startswith("whsec_") and "signing_secret" not in (await api.get(f"/api/v1/hooks/{hook['id']}")).json()
    url = f"/api/v1/hooks/{hook['id']}"
    body = b'{"svc": "nowhere"}'
    # no signature, a wrong one, an old one: 401
    r = await anon.post(url, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_signature", r.text
    wrong = signed("whsec_" + "A" * 43 + "=", body)
    assert (await anon.post(url, content=body, headers=wrong)).status_code == 401
    stale = signed(secret, body, at=datetime.now(UTC) - timedelta(minutes=10))
    assert (await anon.post(url, content=body, headers=stale)).status_code == 401
    tampered = signed(secret, body)
    assert (await anon.post(url, content=b'{"svc": "other"}', headers=tampered)).status_code == 401
    # signed right: accepted without a bearer token
    r = await anon.post(url, content=body, headers=signed(secret, body))
    assert r.status_code == 200, r.text
    assert r.json()["outcomes"][0]["outcome"] == "ignored"  # no such service, but it got in

    # token+signature wants both
    both = await make_hook(api, auth="token+signature")
    url = f"/api/v1/hooks/{both['id']}"
    assert (await anon.post(url, content=body, headers=signed(both["signing_secret"], body))).status_code == 401
    assert (
        await anon.post(url, content=body, headers={**bearer(both["token"]), "content-type": "application/json"})
    ).status_code == 401
    r = await anon.post(url, content=body, headers={**signed(both["signing_secret"], body), **bearer(both["token"])})
    assert r.status_code == 200, r.text
    # rotation replaces the signing secret too
    rotated = (await api.post(f"{url}/rotate-token")).json()
    assert rotated["signing_secret"] and rotated["signing_secret"] != both["signing_secret"]
    old = {**signed(both["signing_secret"], body), **bearer(rotated["token"])}
    assert (await anon.post(url, content=body, headers=old)).status_code == 401


async def test_rate_limit_per_hook(api, anon):
    await create_user(api, "tester", ["operator"])
    first, second = await make_hook(api), await make_hook(api)
    body = {"svc": "nowhere"}
    for _ in range(3):
        r = await anon.post(f"/api/v1/hooks/{first['id']}", json=body, headers=bearer(first["token"]))
        assert r.status_code == 200, r.text
    r = await anon.post(f"/api/v1/hooks/{first['id']}", json=body, headers=bearer(first["token"]))
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited", r.text
    assert int(r.headers["retry-after"]) >= 1
    # another hook has its own budget
    r = await anon.post(f"/api/v1/hooks/{second['id']}", json=body, headers=bearer(second["token"]))
    assert r.status_code == 200, r.text


async def test_hook_stops_working_when_its_creator_loses_the_permission(api, anon):
    await create_user(api, "oncall", ["operator"])
    session = await login(anon, "oncall")
    r = await anon.post(
        "/api/v1/hooks",
        json={"name": "oncall-hook", "kind": "generic", "service_path": "$.svc"},
        headers=bearer(session["access_token"]),
    )
    assert r.status_code == 201, r.text
    hook = r.json()
    url, headers = f"/api/v1/hooks/{hook['id']}", bearer(hook["token"])
    assert (await anon.post(url, json={"svc": "x"}, headers=headers)).status_code == 200

    assert (await api.patch("/api/v1/users/oncall", json={"roles": ["viewer"]})).status_code == 200
    r = await anon.post(url, json={"svc": "x"}, headers=headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "hook_disabled", r.text
    assert "recovery:trigger" in r.json()["error"]["message"]

    assert (await api.patch("/api/v1/users/oncall", json={"roles": ["operator"]})).status_code == 200
    assert (await anon.post(url, json={"svc": "x"}, headers=headers)).status_code == 200
    assert (await api.patch("/api/v1/users/oncall", json={"disabled": True})).status_code == 200
    r = await anon.post(url, json={"svc": "x"}, headers=headers)
    assert r.status_code == 403 and "disabled" in r.json()["error"]["message"], r.text
    assert (await api.delete("/api/v1/users/oncall")).status_code == 204
    r = await anon.post(url, json={"svc": "x"}, headers=headers)
    assert r.status_code == 403 and "no longer exists" in r.json()["error"]["message"], r.text


# --------------------------------------------------------------------------- with a worker: what an alert does


class TestActing:
    NAMES = ("calm", "loud")

    @pytest.fixture
    def settings(self, temporal_settings: Settings) -> Settings:
        return temporal_settings

    @pytest.fixture(autouse=True)
    async def cleanup(self, temporal_env):
        yield
        await terminate_quietly(
            temporal_env.client, *(f"{kind}/{name}" for name in self.NAMES for kind in ("supervise", "recover"))
        )

    async def test_replayed_alert_does_not_restart_a_healthy_service(
        self, temporal_env, settings, db, api, anon, ports
    ):
        await create_user(api, "tester", ["operator"])
        r = await api.post("/api/v1/hooks", json={"name": "am", "kind": "alertmanager"})
        assert r.status_code == 201 and r.json()["force"] is False, r.text
        hook = r.json()
        alert = am_payload([am_alert("calm", fingerprint="c0ffee")])
        async with running_worker(temporal_env.client, settings, db):
            await bring_up(api, "calm", ports())
            for _ in range(2):  # the same firing alert twice, a second apart
                r = await anon.post("/api/v1/hooks/alertmanager", json=alert, headers=bearer(hook["token"]))
                assert r.status_code == 200, r.text
                assert r.json()["outcomes"][0]["outcome"] in ("recovery_started", "attached"), r.text

                async def ignored():
                    log = (await api.get(f"/api/v1/hooks/{hook['id']}/alerts")).json()
                    return log if log and all(e["outcome"] == "ignored" for e in log) else None

                log = await eventually(ignored, timeout=30, interval=0.2)
                assert all(e["reason"].startswith("alert ignored: service healthy") for e in log), log
                await asyncio.sleep(1.0)
            assert await restarts(api, "calm") == 0

    async def test_forced_hook_acts_once_per_alert_within_the_window(
        self, temporal_env, settings, db, api, anon, ports
    ):
        await create_user(api, "tester", ["operator"])
        r = await api.post(
            "/api/v1/hooks", json={"name": "loud", "kind": "alertmanager", "force": True, "dedupe_window": 600}
        )
        hook = r.json()
        alert = am_payload([am_alert("loud", fingerprint="beef")])
        async with running_worker(temporal_env.client, settings, db):
            await bring_up(api, "loud", ports())
            twice = am_payload([am_alert("loud", fingerprint="beef")] * 2)  # the same alert twice in one delivery
            r = await anon.post("/api/v1/hooks/alertmanager", json=twice, headers=bearer(hook["token"]))
            assert [o["outcome"] for o in r.json()["outcomes"]] == ["recovery_started", "duplicate"], r.text
            await eventually(lambda: _restarted(api, "loud"), timeout=30)
            await asyncio.sleep(1.0)
            # the replay: recorded as a duplicate, nothing restarted
            r = await anon.post("/api/v1/hooks/alertmanager", json=alert, headers=bearer(hook["token"]))
            out = r.json()["outcomes"][0]
            assert out["outcome"] == "duplicate" and "not acted on" in out["reason"], r.text
            # a new firing episode of the same alert (another startsAt) is a new alert
            again = am_payload([{**am_alert("loud", fingerprint="beef"), "startsAt": "2026-12-06T10:00:00Z"}])
            r = await anon.post("/api/v1/hooks/alertmanager", json=again, headers=bearer(hook["token"]))
            assert r.json()["outcomes"][0]["outcome"] in ("recovery_started", "attached"), r.text
            await eventually(lambda: _restarted(api, "loud", 2), timeout=30)
        log = (await api.get(f"/api/v1/hooks/{hook['id']}/alerts")).json()
        assert sorted(e["outcome"] for e in log) == ["duplicate", "duplicate", "recovery_started", "recovery_started"]


async def _restarted(api, name: str, n: int = 1) -> bool:
    return await restarts(api, name) >= n
