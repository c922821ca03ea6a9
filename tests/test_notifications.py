"""Escalation notifications: real HTTP receivers, the log channel, the delivery log, and the system file."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import yaml
from sqlalchemy import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from tests.servers import Receiver
from windflow.activities.notifications import NOT_DELIVERED, NotificationActivities
from windflow.domain.contracts import NotifyInput
from windflow.domain.errors import ConfigInvalid
from windflow.domain.notifications import ChannelConfig, Notification, NotificationKind, NotificationsSection
from windflow.domain.redaction import REDACTED
from windflow.domain.system import dump_system, load_system
from windflow.outbound import OutboundPolicy
from windflow.persistence.models import AuditRow, NotificationLogRow
from windflow.persistence.notifications import NotificationChannelRepository
from windflow.persistence.registry import apply_system
from windflow.settings import Settings

LOCAL = OutboundPolicy()  # the receivers listen on loopback: allowed here, refused by the notify default

pytestmark = pytest.mark.asyncio(loop_scope="session")

channels_repo = NotificationChannelRepository()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def note(nid: str = "recover/api/escalated/1", kind: NotificationKind = NotificationKind.ESCALATED) -> Notification:
    return Notification(
        id=nid,
        kind=kind,
        service_id="api",
        title="api gave up after 5 attempts",
        text="restart failed: exit 1",
        details={"attempts": 5, "last_error": "exit 1"},
        workflow_id="recover/api",
        timestamp=datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
    )


async def log_rows(db) -> list[NotificationLogRow]:
    async with db.read() as session:
        return list((await session.execute(select(NotificationLogRow).order_by(NotificationLogRow.id))).scalars())


async def audit_actions(db) -> list[tuple[str, str]]:
    async with db.read() as session:
        rows = (
            await session.execute(select(AuditRow).where(AuditRow.action.like("notification.%")).order_by(AuditRow.id))
        ).scalars()
        return [(r.action, r.details["channel"]) for r in rows]


async def store_channels(db, *channels: ChannelConfig) -> None:
    system = load_system({"services": {}, "notifications": {"channels": [c.model_dump(mode="json") for c in channels]}})
    async with db.write() as session:
        await apply_system(session=session, system=system, author="tester")


# --------------------------------------------------------------------------- delivery


async def test_webhook_slack_and_log_delivered_and_recorded(db, receiver, caplog):
    webhook = ChannelConfig(
        name="hook",
        kind="webhook",
        url=f"{receiver.url}/hook",
        headers={"Authorization": "Bearer s3cret"},
        timeout="2s",
    )
    slack = ChannelConfig(name="chat", kind="slack", url=f"{receiver.url}/slack")
    logch = ChannelConfig(name="log", kind="log")
    await store_channels(db, slack)  # from the system file; the others from settings
    acts = NotificationActivities(db, [webhook, logch], outbound=LOCAL)
    n = note()
    with caplog.at_level(logging.INFO, logger="windflow.escalation"):
        result = await ActivityEnvironment().run(acts.notify, NotifyInput(notification=n))

    assert {r.channel: r.delivered for r in result.results} == {"hook": True, "log": True, "chat": True}
    assert all(r.attempts == 1 for r in result.results)
    (hook,) = receiver.at("/hook")
    assert hook["json"] == n.model_dump(mode="json")
    assert hook["headers"]["Authorization"] == "Bearer s3cret"
    (sl,) = receiver.at("/slack")
    assert "api" in sl["json"]["text"] and "escalated" in sl["json"]["text"]
    types = [b["type"] for b in sl["json"]["blocks"]]
    assert types[0] == "header" and "section" in types and types[-1] == "context"
    assert sl["json"]["blocks"][0]["text"]["text"] == n.title
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "windflow.escalation"]
    assert lines and lines[0]["id"] == n.id and lines[0]["channel"] == "log" and lines[0]["service_id"] == "api"

    rows = await log_rows(db)
    assert sorted((r.channel, r.delivered, r.notification_id, r.kind) for r in rows) == [
        ("chat", True, n.id, "escalated"),
        ("hook", True, n.id, "escalated"),
        ("log", True, n.id, "escalated"),
    ]
    assert {r.channel: r.status_code for r in rows} == {"chat": 200, "hook": 200, "log": None}
    assert sorted(await audit_actions(db)) == [("notification.delivered", c) for c in ("chat", "hook", "log")]

    # the same notification again (a retried activity): nothing is sent twice
    again = await ActivityEnvironment().run(acts.notify, NotifyInput(notification=n))
    assert all(r.delivered for r in again.results)
    assert len(receiver.at("/hook")) == 1 and len(receiver.at("/slack")) == 1
    assert len(await log_rows(db)) == 3


async def test_failed_channel_recorded_then_retry_sends_only_it(db, receiver):
    receiver.plan["/flaky"] = [500, 200]
    good = ChannelConfig(name="good", kind="webhook", url=f"{receiver.url}/good")
    flaky = ChannelConfig(name="flaky", kind="webhook", url=f"{receiver.url}/flaky")
    acts = NotificationActivities(db, [good, flaky], outbound=LOCAL)
    req = NotifyInput(notification=note("recover/db/gave_up/1", NotificationKind.GAVE_UP))
    env = ActivityEnvironment()

    with pytest.raises(ApplicationError) as info:
        await env.run(acts.notify, req)
    err = info.value
    assert err.type == NOT_DELIVERED and not err.non_retryable
    assert "flaky: HTTP 500: receiver says no" in err.message
    rows = await log_rows(db)
    assert [(r.channel, r.delivered, r.status_code) for r in rows] == [("good", True, 200), ("flaky", False, 500)]
    assert "HTTP 500" in next(r.error for r in rows if r.channel == "flaky")
    assert ("notification.failed", "flaky") in await audit_actions(db)

    result = await env.run(acts.notify, req)  # Temporal's retry
    by = {r.channel: r for r in result.results}
    assert by["good"].delivered and by["good"].attempts == 1
    assert by["flaky"].delivered and by["flaky"].attempts == 2 and by["flaky"].status_code == 200
    assert len(receiver.at("/good")) == 1 and len(receiver.at("/flaky")) == 2
    assert len(await log_rows(db)) == 3
    assert sorted(await audit_actions(db)) == [
        ("notification.delivered", "flaky"),
        ("notification.delivered", "good"),
        ("notification.failed", "flaky"),
    ]


async def test_unreachable_kind_filter_and_channel_selection(db, receiver):
    dead = ChannelConfig(name="dead", kind="webhook", url=f"http://127.0.0.1:{closed_port()}/x", timeout=1)
    only_recovered = ChannelConfig(name="happy", kind="webhook", url=f"{receiver.url}/happy", events=["recovered"])
    logch = ChannelConfig(name="log", kind="log")
    acts = NotificationActivities(db, [dead, only_recovered, logch], outbound=LOCAL)

    with pytest.raises(ApplicationError) as info:
        await acts.notify(NotifyInput(notification=note("n-1")))  # called directly, outside an activity too
    assert "dead: connection refused" in info.value.message
    assert info.value.details[0]["results"][0]["channel"] == "dead"
    assert not receiver.at("/happy")  # it does not want escalations

    result = await acts.notify(
        NotifyInput(notification=note("n-2", NotificationKind.RECOVERED), channels=["happy", "log", "nonexistent"])
    )
    assert [(r.channel, r.delivered) for r in result.results] == [("happy", True), ("log", True)]
    assert len(receiver.at("/happy")) == 1
    assert (await acts.notify(NotifyInput(notification=note("n-3"), channels=[]))).results == []


async def test_settings_channels_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv(
        "WINDFLOW_NOTIFICATION_CHANNELS",
        json.dumps(
            [
                {
                    "name": "ops",
                    "kind": "slack",
                    "url": "https://hooks.slack.com/services/T/B/X",
                    "events": ["gave_up"],
                },
                {"name": "log", "kind": "log", "timeout": "500ms"},
            ]
        ),
    )
    s = Settings(data_dir=tmp_path, _env_file=None)
    assert [c.name for c in s.notification_channels] == ["ops", "log"]
    assert s.notification_channels[0].wants("gave_up") and not s.notification_channels[0].wants("escalated")
    assert s.notification_channels[1].timeout == 0.5
    assert (s.restart_max_in_flight, s.restart_max_per_window, s.restart_window) == (5, 30, 60.0)


# --------------------------------------------------------------------------- system file

SYSTEM = {
    "services": {"web": {"driver": "noop"}},
    "notifications": {
        "channels": [
            {
                "name": "ops-slack",
                "kind": "slack",
                "url": "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
                "events": ["escalated", "gave_up"],
            },
            {
                "name": "pager",
                "kind": "webhook",
                "url": "https://pager.example/hook?token=abc123",
                "headers": {"Authorization": "Bearer t0ken", "X-Team": "infra"},
                "timeout": "3s",
            },
            {"name": "log", "kind": "log"},
        ]
    },
}


async def stored(db) -> list[dict]:
    async with db.read() as session:
        return [c.model_dump(mode="json") for c in await channels_repo.get_all(session=session)]


async def test_system_file_notifications_round_trip(api, db):
    put = {"content-type": "application/yaml"}
    r = await api.put("/api/v1/system", content=yaml.safe_dump(SYSTEM), headers=put)
    assert r.status_code == 200, r.text
    original = await stored(db)
    assert [c["name"] for c in original] == ["ops-slack", "pager", "log"]
    assert original[1]["headers"]["Authorization"] == "Bearer t0ken"

    exported = (await api.get("/api/v1/system")).text  # redacted
    doc = yaml.safe_load(exported)
    chans = {c["name"]: c for c in doc["notifications"]["channels"]}
    assert "XXXXSECRET" not in exported and "t0ken" not in exported and "abc123" not in exported
    assert chans["ops-slack"]["url"] == f"https://hooks.slack.com/{REDACTED}"
    assert chans["pager"]["headers"] == {"Authorization": REDACTED, "X-Team": "infra"}
    assert chans["pager"]["timeout"] == "3s"
    # the redacted export applies back unchanged: stored secrets are kept
    r = await api.put("/api/v1/system", content=exported, headers=put)
    assert r.status_code == 200, r.text
    assert r.json()["unchanged"] == ["web"]
    assert await stored(db) == original
    # with secrets: the export is the stored truth and re-applies to the same state
    full = (await api.get("/api/v1/system", params={"secrets": True})).text
    assert yaml.safe_load(full)["notifications"]["channels"] == original
    r = await api.put("/api/v1/system", content=full, headers=put)
    assert r.status_code == 200 and await stored(db) == original

    # a file without the key leaves the channels alone; an empty list clears them
    r = await api.put("/api/v1/system", content=yaml.safe_dump({"services": SYSTEM["services"]}), headers=put)
    assert r.status_code == 200 and await stored(db) == original
    r = await api.put(
        "/api/v1/system", content=yaml.safe_dump({**SYSTEM, "notifications": {"channels": []}}), headers=put
    )
    assert r.status_code == 200 and await stored(db) == []
    assert "notifications" not in yaml.safe_load((await api.get("/api/v1/system")).text)
    # a redacted value with no stored secret behind it is refused
    r = await api.put("/api/v1/system", content=exported, headers=put)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["loc"][:2] == ["notifications", "channels"]


async def test_invalid_channel_config_is_422_with_path(api, db):
    bad = {
        "services": {"web": {"driver": "noop"}},
        "notifications": {
            "channels": [
                {"name": "hook", "kind": "webhook"},  # no url
                {"name": "x", "kind": "pigeon"},
                {"name": "log", "kind": "log", "events": ["escalated", "exploded"]},
                {"name": "log", "kind": "log"},
                {"name": "extra", "kind": "log", "colour": "red"},
            ]
        },
    }
    r = await api.put("/api/v1/system", content=yaml.safe_dump(bad), headers={"content-type": "application/yaml"})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "config_invalid"
    paths = {".".join(map(str, d["loc"])): d["msg"] for d in err["details"]}
    assert "webhook channel needs a url" in paths["notifications.channels.0.url"]
    assert "notifications.channels.1.kind" in paths
    assert "notifications.channels.2.events.1" in paths
    assert "listed more than once" in paths["notifications.channels.3.name"]
    assert "notifications.channels.4.colour" in paths
    assert await stored(db) == []
    async with db.read() as session:
        from windflow.persistence.repositories import ServiceRepository

        assert await ServiceRepository().ids(session=session) == []  # all-or-nothing

    with pytest.raises(ConfigInvalid) as info:
        load_system({"services": {}, "notifications": ["not", "a", "mapping"]})
    assert info.value.details[0]["loc"] == ["notifications"]
    with pytest.raises(ConfigInvalid):
        load_system({"services": {}, "notifications": {"channels": [{"name": "l", "kind": "log", "url": "http://x"}]}})


async def test_dump_system_includes_notifications_only_when_given():
    system = load_system(SYSTEM)
    assert isinstance(system.notifications, NotificationsSection)
    doc = dump_system(system.services, notifications=system.notifications)
    assert load_system(doc).notifications == system.notifications
    assert "notifications" not in dump_system(system.services)
    assert load_system({"services": {}}).notifications is None
