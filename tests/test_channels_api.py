"""Notification channels one at a time (/notification-channels): list with secrets redacted, create, replace
(redacted values sent back keep the stored secret, only for the same destination), delete, test-send through a
real HTTP receiver, the delivery log; settings channels read-only; the outbound policy; permissions and audit.
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.auth_helpers import assert_envelope
from tests.conftest import mint_token
from tests.servers import Receiver
from windflow.domain.notifications import ChannelConfig
from windflow.domain.redaction import REDACTED
from windflow.persistence.notifications import NotificationChannelRepository
from windflow.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")
BASE = "/api/v1/notification-channels"
SLACK = "https://hooks.slack.example/services/T000/B000/very-secret-token"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "outbound_private_notify": True,  # the receiver listens on loopback
            "notification_channels": [ChannelConfig(name="ops-log", kind="log")],
        }
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


async def audit(api, action: str) -> list[dict]:
    return (await api.get("/api/v1/audit", params={"action": action})).json()["items"]


async def test_create_list_replace_delete_with_secrets_redacted(api, anon, db, settings):
    r = await api.post(
        BASE, json={"name": "team-slack", "kind": "slack", "url": SLACK, "events": ["escalated", "gave_up"]}
    )
    assert r.status_code == 201, r.text
    assert r.json()["url"] == f"https://hooks.slack.example/{REDACTED}" and r.json()["source"] == "stored"
    r = await api.post(
        BASE,
        json={
            "name": "pager",
            "kind": "webhook",
            "url": "https://pager.example/hook?key=abc",
            "headers": {"Authorization": "Bearer s3cret", "X-Team": "sre"},
        },
    )
    assert r.status_code == 201, r.text

    listed = (await api.get(BASE)).json()
    assert [(c["name"], c["source"]) for c in listed] == [
        ("ops-log", "settings"),
        ("team-slack", "stored"),
        ("pager", "stored"),
    ]
    pager = listed[2]
    assert "s3cret" not in str(listed) and "very-secret-token" not in str(listed) and "key=abc" not in str(listed)
    assert pager["headers"] == {"Authorization": REDACTED, "X-Team": "sre"}
    # the system export shows the same stored set
    exported = (await api.get("/api/v1/system", params={"format": "json"})).json()
    assert [c["name"] for c in exported["notifications"]["channels"]] == ["team-slack", "pager"]

    # PUT of what was read, with one change: the redacted secrets stay as stored
    body = {k: v for k, v in pager.items() if k not in ("name", "source")} | {"timeout": 9}
    r = await api.put(f"{BASE}/pager", json=body)
    assert r.status_code == 200 and r.json()["timeout"] == "9s", r.text
    async with db.read() as session:
        stored = await NotificationChannelRepository().get(session=session, name="pager")
    assert stored.headers["Authorization"] == "Bearer s3cret" and stored.url == "https://pager.example/hook?key=abc"
    # ... but not to another destination: re-enter the secret (nothing saved)
    moved = body | {"url": pager["url"].replace("pager.example", "elsewhere.example")}
    err = assert_envelope(await api.put(f"{BASE}/pager", json=moved), 422)
    assert any(d["type"] == "secret_destination" for d in err["details"]), err
    async with db.read() as session:
        assert (await NotificationChannelRepository().get(session=session, name="pager")).timeout == 9

    assert (await api.delete(f"{BASE}/team-slack")).status_code == 204
    assert [c["name"] for c in (await api.get(BASE)).json()] == ["ops-log", "pager"]
    assert_envelope(await api.delete(f"{BASE}/team-slack"), 404)

    actions = {a["action"] for a in await audit(api, "notification_channel.create")}
    assert actions == {"notification_channel.create"}
    updates = await audit(api, "notification_channel.update")
    assert [u["details"]["changed"] for u in updates if u["outcome"] == "success"] == [["timeout"]]
    assert "s3cret" not in str(await audit(api, "notification_channel.create"))
    assert len(await audit(api, "notification_channel.delete")) == 2  # one done, one refused (404)


async def test_bad_channels_are_refused_with_the_envelope(api, settings):
    cases = [
        ({"name": "x", "kind": "webhook"}, 422),  # a webhook needs a url
        ({"name": "x", "kind": "log", "url": "https://a.example"}, 422),  # a log takes none
        ({"name": "Bad Name", "kind": "log"}, 422),
        ({"name": "x", "kind": "carrier-pigeon"}, 422),
        ({"name": "x", "kind": "log", "colour": "red"}, 422),  # unknown key
        ({"name": "x", "kind": "webhook", "url": "http://169.254.169.254/latest"}, 422),  # outbound policy
        ({"name": "x", "kind": "webhook", "url": "https://a.example", "headers": {"X": f"a{REDACTED}"}}, 422),
        ({"name": "x", "kind": "webhook", "url": "https://a.example", "timeout": 0}, 422),
        ({"name": "ops-log", "kind": "log"}, 409),  # a settings channel's name
    ]
    for body, code in cases:
        assert_envelope(await api.post(BASE, json=body), code)
    err = assert_envelope(
        await api.post(BASE, json={"name": "x", "kind": "webhook", "url": "http://169.254.169.254/x"}), 422
    )
    assert err["details"][0]["type"] == "outbound_refused"
    assert (await api.get(BASE)).json() == [(await api.get(f"{BASE}/ops-log")).json()]  # nothing half-saved
    assert (await api.post(BASE, json={"name": "dup", "kind": "log"})).status_code == 201
    assert_envelope(await api.post(BASE, json={"name": "dup", "kind": "log"}), 409)
    assert_envelope(await api.put(f"{BASE}/ops-log", json={"kind": "log"}), 409)  # settings: read-only here
    assert_envelope(await api.delete(f"{BASE}/ops-log"), 409)
    assert_envelope(await api.put(f"{BASE}/missing", json={"kind": "log"}), 404)


async def test_test_send_reaches_the_receiver_and_is_logged(api, anon, receiver, settings):
    url = f"{receiver.url}/notify"
    assert (
        await api.post(BASE, json={"name": "hook", "kind": "webhook", "url": url, "headers": {"X-Token": "t0ken"}})
    ).status_code == 201
    r = await api.post(f"{BASE}/hook/test")
    assert r.status_code == 200 and r.json()["delivered"] is True and r.json()["channel"] == "hook", r.text
    (sent,) = receiver.at("/notify")
    assert sent["json"]["title"].startswith("Test notification") and sent["headers"]["X-Token"] == "t0ken"
    receiver.plan["/notify"] = [500]
    r = await api.post(f"{BASE}/hook/test")
    assert r.status_code == 200 and r.json()["delivered"] is False and r.json()["status_code"] == 500, r.text
    assert (await api.post(f"{BASE}/ops-log/test")).json()["delivered"] is True  # a settings channel can be tested
    assert_envelope(await api.post(f"{BASE}/missing/test"), 404)

    log = (await api.get(f"{BASE}/hook/deliveries")).json()["items"]
    assert [(d["delivered"], d["status_code"]) for d in log] == [(False, 500), (True, 200)]
    failed = (await api.get(f"{BASE}/hook/deliveries", params={"delivered": "false"})).json()["items"]
    assert len(failed) == 1
    tests = await audit(api, "notification_channel.test")
    assert sorted(t["outcome"] for t in tests) == ["failure", "failure", "success", "success"]


async def test_permissions(api, anon, settings):
    assert (await api.post(BASE, json={"name": "a", "kind": "log"})).status_code == 201
    viewer = {"Authorization": f"Bearer {mint_token(settings, ['services:read', 'configs:read'], roles=('viewer',))}"}
    assert (await anon.get(BASE, headers=viewer)).status_code == 200
    assert (await anon.get(f"{BASE}/a/deliveries", headers=viewer)).status_code == 200
    for method, path, body in [
        ("post", BASE, {"name": "b", "kind": "log"}),
        ("put", f"{BASE}/a", {"kind": "log"}),
        ("delete", f"{BASE}/a", None),
        ("post", f"{BASE}/a/test", None),
    ]:
        kwargs = {"json": body} if body is not None else {}
        assert_envelope(await getattr(anon, method)(path, headers=viewer, **kwargs), 403)
    nobody = {"Authorization": f"Bearer {mint_token(settings, ['services:read'], roles=('x',))}"}
    assert_envelope(await anon.get(BASE, headers=nobody), 403)
    assert_envelope(await anon.get(BASE), 401)
