"""Alert webhooks in, end to end: Alertmanager / generic payload → hook → recover/{service} → real worker → the
supervised stand-in restarted once, however many alerts arrive. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from tests.auth_helpers import bearer, create_user
from tests.helpers import eventually, running_worker, standin, terminate_quietly
from windflow.domain.alerts_in import GenericConfig, find, generic_alerts
from windflow.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")

NAMES = ("hooked", "gen")


@pytest.fixture
def settings(temporal_settings: Settings) -> Settings:
    """The API of these tests talks to the session's dev server, on a task queue a test worker polls."""
    return temporal_settings


@pytest.fixture(autouse=True)
async def hook_creator(api):
    """Hooks act for their creator, who must be a user holding recovery:trigger: the tests' token names "tester"."""
    await create_user(api, "tester", ["operator"])


@pytest.fixture(autouse=True)
async def no_stray_supervisors(temporal_env):
    yield
    await terminate_quietly(
        temporal_env.client, *(f"{kind}/{name}" for name in NAMES for kind in ("supervise", "recover"))
    )


def am_alert(service: str | None, *, status: str = "firing", fingerprint: str, alertname: str = "ServiceDown"):
    labels = {"alertname": alertname, "severity": "critical", "instance": "10.0.0.7:9100"}
    if service is not None:
        labels["windflow_service"] = service
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"{service} is down"},
        "startsAt": "2026-11-21T23:40:00.000Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-21T23:45:00.000Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
        "fingerprint": fingerprint,
    }


def am_payload(alerts: list[dict], *, status: str = "firing") -> dict:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="ServiceDown"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "windflow",
        "groupLabels": {"alertname": "ServiceDown"},
        "commonLabels": {"alertname": "ServiceDown", "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    }


async def bring_up(api, name: str, port: int) -> None:
    r = await api.post("/api/v1/services", json=standin(name, port, boot=0.2).model_dump(mode="json"))
    assert r.status_code == 201, r.text
    r = await api.post("/api/v1/initializations", json={"components": [name]})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]

    async def done():
        body = (await api.get(f"/api/v1/initializations/{run_id}")).json()
        return body if body["status"] in ("SUCCEEDED", "FAILED") else None

    body = await eventually(done, timeout=60, interval=0.2)
    assert body["status"] == "SUCCEEDED", body
    await eventually(lambda: supervisor_state(api, name, "watching"), timeout=20)


async def supervisor_state(api, name: str, state: str):
    """The supervision of ``name`` when it is in ``state`` (``watching``: healthy, watched, no recovery running),
    with the read model's restart count; else None."""
    body = (await api.get(f"/api/v1/services/{name}/supervision")).json()
    if state == "watching":
        ok = body.get("supervised") and body.get("state") == "healthy" and not body.get("recovering")
    else:
        ok = (body.get("status") or {}).get("state") == state
    return {**body, "restarts_total": await restarts(api, name)} if ok else None


async def restarts(api, name: str) -> int:
    return int((await api.get(f"/api/v1/services/{name}")).json().get("restarts_total") or 0)


async def audit(api, **params) -> list[dict]:
    r = await api.get("/api/v1/audit", params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_alertmanager_storm_makes_one_recovery(temporal_env, settings, db, api, anon, ports):
    client = temporal_env.client
    # force: these alerts restart the (healthy) stand-in without probing first
    r = await api.post("/api/v1/hooks", json={"name": "am", "kind": "alertmanager", "force": True})
    assert r.status_code == 201, r.text
    hook = r.json()
    token = hook["token"]
    assert token.startswith("wf_hook_") and hook["config"] == {"label": "windflow_service"}
    assert hook["url"] == "/api/v1/hooks/alertmanager"
    assert "token" not in (await api.get(f"/api/v1/hooks/{hook['id']}")).json()

    async with running_worker(client, settings, db):
        await bring_up(api, "hooked", ports())
        assert await restarts(api, "hooked") == 0
        storm = am_payload(
            [am_alert("hooked", fingerprint=f"f{i}") for i in range(3)]
            + [am_alert("ghost", fingerprint="g1"), am_alert(None, fingerprint="n1")]
        )
        # the same group twice at once (Alertmanager's repeat + a second replica): still one recovery
        r1, r2 = await asyncio.gather(
            anon.post("/api/v1/hooks/alertmanager", json=storm, headers=bearer(token)),
            anon.post("/api/v1/hooks/alertmanager", json=storm, headers=bearer(token)),
        )
        assert r1.status_code == 200 and r2.status_code == 200, (r1.text, r2.text)
        outcomes = [o for r in (r1, r2) for o in r.json()["outcomes"]]
        mine = [o for o in outcomes if o["service"] == "hooked"]
        assert len(mine) == 6 and all(o["workflow_id"] == "recover/hooked" for o in mine)
        assert [o["outcome"] for o in mine].count("recovery_started") == 1, mine
        # the second delivery of the same alerts is either joined to the recovery or, once the first is logged,
        # recorded as a duplicate: never a second recovery
        assert {o["outcome"] for o in mine} <= {"recovery_started", "attached", "duplicate"}
        ghost = next(o for o in r1.json()["outcomes"] if o["service"] == "ghost")
        assert ghost["outcome"] == "ignored" and "unknown service" in ghost["reason"]
        unlabeled = next(o for o in r1.json()["outcomes"] if o["fingerprint"] == "n1")
        assert unlabeled["outcome"] == "ignored" and "windflow_service" in unlabeled["reason"]
        assert r1.json()["recoveries"] == ["recover/hooked"]

        # exactly one restart: wait for it, then make sure no second one follows
        await eventually(lambda: _restarted(api, "hooked", 1), timeout=30)
        await asyncio.sleep(2.0)
        assert await restarts(api, "hooked") == 1
        assert await supervisor_state(api, "hooked", "watching")
        query = f"WorkflowId = 'recover/hooked' AND TaskQueue = '{settings.task_queue}'"
        runs = [w async for w in client.list_workflows(query)]
        assert len(runs) <= 1  # visibility may lag; never two (earlier tests reuse the id on other queues)

        # resolved: recorded, nothing restarted
        resolved = am_payload(
            [am_alert("hooked", status="resolved", fingerprint=f"f{i}") for i in range(3)], status="resolved"
        )
        r = await anon.post("/api/v1/hooks/alertmanager", json=resolved, headers=bearer(token))
        assert r.status_code == 200, r.text
        assert [o["outcome"] for o in r.json()["outcomes"]] == ["resolved_recorded"] * 3
        await asyncio.sleep(1.0)
        assert await restarts(api, "hooked") == 1

    # wrong, missing and user tokens: 401 in the error envelope
    r = await anon.post("/api/v1/hooks/alertmanager", json=storm, headers=bearer("wf_hook_wrong"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token", r.text
    r = await anon.post("/api/v1/hooks/alertmanager", json=storm)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text
    r = await api.post("/api/v1/hooks/alertmanager", json=storm)  # an admin's JWT is not a hook token
    assert r.status_code == 401, r.text
    r = await anon.post(f"/api/v1/hooks/{hook['id']}", json=storm, headers=bearer("wf_hook_wrong"))
    assert r.status_code == 401, r.text

    # the alert log
    log = (await api.get(f"/api/v1/hooks/{hook['id']}/alerts")).json()
    assert len(log) == 2 * 5 + 3
    assert sum(1 for e in log if e["outcome"] == "recovery_started") == 1
    assert sum(1 for e in log if e["outcome"] == "resolved_recorded") == 3
    assert {e["reason"] for e in log if e["service_id"] == "ghost"} == {"unknown service 'ghost'"}
    first = next(e for e in log if e["fingerprint"] == "f0" and e["status"] == "firing")
    assert first["payload"]["labels"]["alertname"] == "ServiceDown" and first["workflow_id"] == "recover/hooked"

    # every call audited, success and failure, as the hook
    ok = await audit(api, action="hook.receive", outcome="success")
    assert len(ok) == 3 and {a["actor"] for a in ok} == {"hook:am"}
    assert all(a["target"] == hook["id"] for a in ok)
    failed = await audit(api, action="hook.receive", outcome="failure")
    assert len(failed) == 4 and all(a["actor"].startswith("hook:") for a in failed)
    assert {a["actor"] for a in failed} == {"hook:unknown", "hook:am"}
    assert all(a["details"]["status"] == 401 for a in failed)


async def test_generic_hook_with_a_jsonpath_mapping_and_crud(temporal_env, settings, db, api, anon, ports):
    client = temporal_env.client
    r = await api.post(
        "/api/v1/hooks",
        json={
            "name": "pager",
            "kind": "generic",
            "service_path": "$.data[*].svc",
            "status_path": "$.event.state",
            "firing_values": ["firing", "triggered"],
            "resolved_values": ["ok"],
            "fingerprint_path": "$.data[*].id",
            "force": True,
        },
    )
    assert r.status_code == 201, r.text
    hook = r.json()
    assert hook["url"] == f"/api/v1/hooks/{hook['id']}"
    # validation: a generic hook needs a parseable service path; names are unique
    bad = await api.post("/api/v1/hooks", json={"name": "bad", "kind": "generic"})
    assert bad.status_code == 422, bad.text
    bad = await api.post("/api/v1/hooks", json={"name": "bad", "kind": "generic", "service_path": "data.svc"})
    assert bad.status_code == 422, bad.text
    dup = await api.post("/api/v1/hooks", json={"name": "pager", "kind": "alertmanager"})
    assert dup.status_code == 409, dup.text

    url = f"/api/v1/hooks/{hook['id']}"
    event = {
        "event": {"state": "triggered"},
        "data": [{"svc": "gen", "id": "a"}, {"svc": "gen", "id": "b"}, {"svc": "nope", "id": "c"}],
    }
    async with running_worker(client, settings, db):
        await bring_up(api, "gen", ports())
        r = await anon.post(url, json=event, headers=bearer(hook["token"]))
        assert r.status_code == 200, r.text
        assert [(o["service"], o["fingerprint"], o["outcome"]) for o in r.json()["outcomes"]] == [
            ("gen", "a", "recovery_started"),
            ("gen", "b", "attached"),
            ("nope", "c", "ignored"),
        ]
        await eventually(lambda: _restarted(api, "gen", 1), timeout=30)

        # rotation: the old token stops working, the new one works
        r = await api.post(f"{url}/rotate-token")
        assert r.status_code == 200, r.text
        new_token = r.json()["token"]
        assert new_token != hook["token"] and r.json()["token_rotated_at"]
        ok_event = {"event": {"state": "ok"}, "data": [{"svc": "gen", "id": "a"}]}
        assert (await anon.post(url, json=ok_event, headers=bearer(hook["token"]))).status_code == 401
        r = await anon.post(url, json=ok_event, headers=bearer(new_token))
        assert r.status_code == 200 and r.json()["outcomes"][0]["outcome"] == "resolved_recorded", r.text
        r = await anon.post(
            url, json={"event": {"state": "weird"}, "data": [{"svc": "gen"}]}, headers=bearer(new_token)
        )
        assert r.json()["outcomes"][0]["outcome"] == "ignored" and "weird" in r.json()["outcomes"][0]["reason"]
        await asyncio.sleep(1.0)
        assert await restarts(api, "gen") == 1

    listed = (await api.get("/api/v1/hooks")).json()
    assert [h["name"] for h in listed] == ["pager"] and "token" not in listed[0]
    assert listed[0]["last_used_at"] is not None and listed[0]["token_prefix"] == new_token[:16]
    assert (await api.delete(url)).status_code == 204
    assert (await api.get(url)).status_code == 404
    assert (await anon.post(url, json=ok_event, headers=bearer(new_token))).status_code == 401

    assert {a["action"] for a in await audit(api, target=hook["id"], outcome="success")} == {
        "hook.create",
        "hook.receive",
        "hook.rotate_token",
        "hook.delete",
    }
    receipts = await audit(api, action="hook.receive")
    assert {(a["actor"], a["outcome"]) for a in receipts} == {
        ("hook:pager", "success"),
        ("hook:pager", "failure"),
        ("hook:unknown", "failure"),
    }  # after deletion


async def test_jsonpath_subset():
    doc = {"alert": {"labels": {"service": "db"}}, "data": [{"svc": "a"}, {"svc": "b"}], "x-y": {"z": 1}}
    assert find("$.alert.labels.service", doc) == ["db"]
    assert find("$.data[*].svc", doc) == ["a", "b"]
    assert find("$.data[-1].svc", doc) == ["b"]
    assert find("$['x-y'].z", doc) == [1]
    assert find("$.missing.path", doc) == []
    alerts = generic_alerts(doc, GenericConfig(service_path="$.data[*].svc"))
    assert [(a.service, a.status) for a in alerts] == [("a", "firing"), ("b", "firing")]


async def test_jsonpath_is_rfc_9535():
    """Filters, descendants and slices work (the RFC 9535 library), and a bad path names what is wrong."""
    from windflow.domain.alerts_in import JsonPathError, parse_path

    doc = {
        "alerts": [
            {"labels": {"service": "db"}, "status": "firing"},
            {"labels": {"service": "web"}, "status": "resolved"},
            {"labels": {"service": "cache"}, "status": "firing"},
        ]
    }
    assert find("$.alerts[?@.status == 'firing'].labels.service", doc) == ["db", "cache"]
    assert find("$..service", doc) == ["db", "web", "cache"]
    assert find("$.alerts[1:].labels.service", doc) == ["web", "cache"]
    assert find("$.alerts[?length(@.labels) == 1].status", doc) == ["firing", "resolved", "firing"]
    alerts = generic_alerts(
        doc, GenericConfig(service_path="$.alerts[*].labels.service", status_path="$.alerts[*].status")
    )
    assert [(a.service, a.status) for a in alerts] == [("db", "firing"), ("web", "resolved"), ("cache", "firing")]
    for bad in ("alerts.service", "$.alerts[", "$.alerts[?@.x ==]", "$" + ".a" * 300):
        with pytest.raises(JsonPathError):
            parse_path(bad)
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    assert find("$..zzz", deep) == []  # no crash on a payload nested past the recursion limit


async def _restarted(api, name: str, n: int):
    st = await supervisor_state(api, name, "watching")
    return st and st.get("restarts_total", 0) >= n
