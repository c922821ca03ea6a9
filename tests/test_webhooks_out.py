"""Outgoing webhooks against a real local HTTP receiver: bus event → persisted delivery → signed POST, retried
until delivered; filtering; disabled subscriptions; ping and redelivery; the API's validation and permission.
Runs on SQLite and PostgreSQL; the end-to-end delivery also on the in-process bus and on Redis Streams."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.auth_helpers import assert_envelope, bearer
from tests.conftest import mint_token
from tests.helpers import eventually
from tests.servers import Receiver
from windflow.domain.events import ConfigChanged, Event, EventType, ServiceStatusUpdate, make_event
from windflow.events.base import parse_position
from windflow.events.memory import MemoryBus
from windflow.metrics import WEBHOOK_DELIVERIES
from windflow.outbound import OutboundPolicy
from windflow.persistence.models import AuditRow
from windflow.persistence.webhooks_out_models import WebhookDeliveryRow
from windflow.persistence.webhooks_out_repositories import WebhookDeliveryRepository, WebhookSubscriptionRepository
from windflow.webhooks_out.dispatcher import DeliveryPolicy, WebhookDispatcher
from windflow.webhooks_out.signing import verify, verify_standard

pytestmark = pytest.mark.asyncio(loop_scope="session")

HOOKS = "/api/v1/webhooks"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def event_ids(receiver: Receiver, path: str) -> list[str]:
    return [r["json"]["event_id"] for r in receiver.at(path)]


@pytest.fixture
def bus_kind() -> str:
    return "memory"


@pytest.fixture
def settings(settings, bus_kind, request):
    """Tiny backoff so retries happen at once; Redis Streams on a stream of this test's own when asked."""
    update = {
        "webhooks_backoff": 0.02,
        "webhooks_backoff_max": 0.1,
        "webhooks_poll_interval": 0.05,
        "webhooks_max_attempts": 3,
        "webhooks_timeout": 5.0,
        "events_metrics_interval": 0,
        "outbound_private_notify": True,
    }  # the receiver listens on loopback
    if bus_kind == "redis":
        update |= {
            "redis_url": request.getfixturevalue("redis_url"),
            "events_stream": f"wf:test:webhooks:{uuid.uuid4().hex[:12]}",
        }
    return settings.model_copy(update=update)


@pytest.fixture
async def redis_keys(app_resources):
    """Set up before the app, so torn down after it has stopped: then removes this test's Redis keys."""
    yield
    bus = app_resources.bus
    if hasattr(bus, "keys"):
        await bus.redis.delete(*bus.keys)


@pytest.fixture
async def running(redis_keys, app):
    """The app with its dispatcher following the bus."""
    await eventually(app.state.webhook_dispatcher.started.is_set)
    return app


def status_event(service: str = "api", state: str = "running") -> Event:
    return make_event(
        EventType.SERVICE_STATUS_UPDATE,
        ServiceStatusUpdate(service_id=service, state=state, source="test"),
        event_id=str(uuid.uuid4()),
        timestamp=datetime.now(UTC),
    )


def config_event(service: str = "api") -> Event:
    return make_event(
        EventType.CONFIG_CHANGED,
        ConfigChanged(service_id=service, version=2, author="tester"),
        event_id=str(uuid.uuid4()),
        timestamp=datetime.now(UTC),
    )


async def subscribe(api, url: str, **fields) -> dict:
    r = await api.post(HOOKS, json={"url": url, **fields})
    assert r.status_code == 201, r.text
    return r.json()


async def deliveries_of(api, webhook_id: str, **params) -> list[dict]:
    r = await api.get(f"{HOOKS}/{webhook_id}/deliveries", params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def counted(outcome: str) -> float:
    return WEBHOOK_DELIVERIES.labels(outcome=outcome)._value.get()


def taken_in(dispatcher: WebhookDispatcher, position: str) -> bool:
    """The in-process bus's intake is past ``position``: it has queued (or skipped) everything up to it."""
    return dispatcher.position is not None and parse_position(dispatcher.position) >= parse_position(position)


def expected_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The documented scheme, computed independently of windflow's own code."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- delivery end to end


@pytest.mark.parametrize("bus_kind", ["memory", "redis"])
async def test_published_event_is_delivered_signed_and_retried_after_a_500(running, api, receiver, bus_kind):
    sub = await subscribe(api, f"{receiver.url}/hook", event_types=["SERVICE_STATUS_UPDATE"])
    secret = sub["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    receiver.plan["/hook"] = [500]
    retrying, delivered = counted("retrying"), counted("delivered")

    bus = running.state.resources.bus
    assert type(bus).__name__ == {"memory": "MemoryBus", "redis": "RedisStreamsBus"}[bus_kind]
    event = status_event()
    position = await bus.publish(event)

    async def done():
        items = await deliveries_of(api, sub["id"], event_id=event.event_id)
        return items[0] if items and items[0]["state"] == "delivered" else None

    delivery = await eventually(done)
    assert delivery["attempts"] == 2
    assert delivery["last_status_code"] == 200 and delivery["last_error"] is None
    assert delivery["event_type"] == "SERVICE_STATUS_UPDATE" and delivery["webhook_id"] == sub["id"]

    got = receiver.at("/hook")
    assert [r["answered"] for r in got] == [500, 200]
    for request in got:
        headers, body = request["headers"], request["body"]
        # the Standard Webhooks reference library verifies it, and the delivery id is signed
        assert Webhook(secret).verify(body, headers) == event.model_dump(mode="json")
        assert headers["webhook-id"] == delivery["delivery_id"]
        assert verify_standard(secret, body, headers)
        for tampered in ({**headers, "webhook-id": "another-delivery"}, {**headers, "webhook-timestamp": "1"}):
            with pytest.raises(WebhookVerificationError):
                Webhook(secret).verify(body, tampered)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body + b" ", headers)
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 43).verify(body, headers)
        assert headers["X-Windflow-Event"] == "SERVICE_STATUS_UPDATE"
        assert headers["X-Windflow-Delivery"] == delivery["delivery_id"]  # stable across the retry
        assert headers["Content-Type"] == "application/json"
        timestamp = headers["X-Windflow-Timestamp"]
        assert headers["X-Windflow-Signature"] == expected_signature(secret, timestamp, body)
        assert verify(secret, body, timestamp=timestamp, signature_header=headers["X-Windflow-Signature"])
        assert not verify("whsec_wrong", body, timestamp=timestamp, signature_header=headers["X-Windflow-Signature"])
        assert not verify(secret, body + b" ", timestamp=timestamp, signature_header=headers["X-Windflow-Signature"])
        sent = json.loads(body)
        assert sent == event.model_dump(mode="json")
        assert Event.model_validate(sent).data["state"] == "running"
    assert counted("retrying") >= retrying + 1
    assert counted("delivered") >= delivered + 1
    # the WebSocket hub got the event too: the dispatcher took nothing from it
    hub = running.state.event_hub
    await eventually(lambda: hub.position is not None and parse_position(hub.position) >= parse_position(position))


async def test_event_types_filter_and_disabled_subscriptions_get_nothing(running, api, receiver):
    only_config = await subscribe(api, f"{receiver.url}/config", event_types=["CONFIG_CHANGED", "CONFIG_CHANGED"])
    assert only_config["event_types"] == ["CONFIG_CHANGED"]
    only_status = await subscribe(api, f"{receiver.url}/status", event_types=["SERVICE_STATUS_UPDATE"])
    everything = await subscribe(api, f"{receiver.url}/all")
    assert everything["event_types"] is None
    disabled = await subscribe(api, f"{receiver.url}/off", enabled=False)
    dispatcher = running.state.webhook_dispatcher
    bus = running.state.resources.bus

    status, config = status_event(), config_event()
    await bus.publish(status)
    last = await bus.publish(config)
    await eventually(lambda: taken_in(dispatcher, last))

    async def all_delivered():
        states = [d["state"] for s in (only_config, only_status, everything) for d in await deliveries_of(api, s["id"])]
        return states and all(st == "delivered" for st in states)

    await eventually(all_delivered)
    assert event_ids(receiver, "/config") == [config.event_id]
    assert event_ids(receiver, "/status") == [status.event_id]
    assert {status.event_id, config.event_id} <= set(event_ids(receiver, "/all"))
    assert await deliveries_of(api, disabled["id"]) == []
    assert receiver.at("/off") == []

    # disabling stops further deliveries; enabling the other one starts them
    r = await api.patch(f"{HOOKS}/{only_status['id']}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False, r.text
    r = await api.patch(f"{HOOKS}/{disabled['id']}", json={"enabled": True, "event_types": ["SERVICE_STATUS_UPDATE"]})
    assert r.status_code == 200 and r.json()["event_types"] == ["SERVICE_STATUS_UPDATE"], r.text
    later = status_event(state="stopped")
    last = await bus.publish(later)
    await eventually(lambda: taken_in(dispatcher, last))
    await eventually(lambda: event_ids(receiver, "/off") == [later.event_id])
    assert [d["event_id"] for d in await deliveries_of(api, only_status["id"])] == [status.event_id]
    assert event_ids(receiver, "/status") == [status.event_id]


async def test_ping_failure_after_max_attempts_and_redelivery(running, api, receiver):
    sub = await subscribe(
        api,
        f"{receiver.url}/flaky",
        event_types=["CONFIG_CHANGED"],
        enabled=False,
        secret="a-secret-of-my-own-choosing",
    )
    assert sub["secret"] == "a-secret-of-my-own-choosing"

    # a ping goes out at once, enabled or not, and is recorded
    r = await api.post(f"{HOOKS}/{sub['id']}/ping")
    assert r.status_code == 200, r.text
    ping = r.json()
    assert ping["state"] == "delivered" and ping["attempts"] == 1 and ping["event_type"] == "PING"
    [request] = receiver.at("/flaky")
    assert Webhook(sub["secret"]).verify(request["body"], request["headers"])["event_type"] == "PING"
    assert request["headers"]["webhook-id"] == ping["delivery_id"]
    assert request["headers"]["X-Windflow-Event"] == "PING"
    assert request["headers"]["X-Windflow-Delivery"] == ping["delivery_id"]
    assert request["headers"]["X-Windflow-Signature"] == expected_signature(
        sub["secret"], request["headers"]["X-Windflow-Timestamp"], request["body"]
    )

    # every attempt answered 500: failed after webhooks_max_attempts (3)
    r = await api.patch(f"{HOOKS}/{sub['id']}", json={"enabled": True})
    assert r.status_code == 200, r.text
    receiver.plan["/flaky"] = [500, 500, 500]
    failed_before = counted("failed")
    event = config_event()
    await running.state.resources.bus.publish(event)

    async def failed():
        items = await deliveries_of(api, sub["id"], state="failed")
        return items[0] if items else None

    delivery = await eventually(failed)
    assert delivery["event_id"] == event.event_id
    assert delivery["attempts"] == 3 and delivery["last_status_code"] == 500
    assert delivery["last_error"].startswith("HTTP 500") and delivery["next_attempt_at"] is None
    assert counted("failed") >= failed_before + 1
    assert len({r["headers"]["X-Windflow-Delivery"] for r in receiver.at("/flaky")[1:]}) == 1

    # redelivery: a new delivery of the same payload, sent by the dispatcher
    r = await api.post(f"{HOOKS}/{sub['id']}/deliveries/{delivery['delivery_id']}/redeliver")
    assert r.status_code == 202, r.text
    again = r.json()
    assert again["redelivery_of"] == delivery["delivery_id"] and again["delivery_id"] != delivery["delivery_id"]

    async def redelivered():
        r = await api.get(f"{HOOKS}/{sub['id']}/deliveries/{again['delivery_id']}")
        return r.json() if r.json()["state"] == "delivered" else None

    done = await eventually(redelivered)
    assert done["attempts"] == 1 and done["payload"] == delivery["payload"]
    last = receiver.at("/flaky")[-1]
    assert last["headers"]["X-Windflow-Delivery"] == again["delivery_id"]
    assert json.loads(last["body"])["event_id"] == event.event_id

    # the log pages newest first
    r = await api.get(f"{HOOKS}/{sub['id']}/deliveries", params={"limit": 2})
    page = r.json()
    assert [d["delivery_id"] for d in page["items"]] == [again["delivery_id"], delivery["delivery_id"]]
    r = await api.get(f"{HOOKS}/{sub['id']}/deliveries", params={"limit": 2, "cursor": page["next_cursor"]})
    assert [d["delivery_id"] for d in r.json()["items"]] == [ping["delivery_id"]]
    assert r.json()["next_cursor"] is None

    # a disabled subscription is not redelivered to
    await api.patch(f"{HOOKS}/{sub['id']}", json={"enabled": False})
    r = await api.post(f"{HOOKS}/{sub['id']}/deliveries/{delivery['delivery_id']}/redeliver")
    assert_envelope(r, 409, "conflict")


# --------------------------------------------------------------------------- API


async def test_api_validates_hides_the_secret_and_needs_webhooks_manage(running, api, anon, settings, db):
    for body, where in [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "https://example.com/x", "event_types": ["NO_SUCH_EVENT"]}, "event_types"),
        ({"url": "https://example.com/x", "event_types": []}, "event_types"),
        ({"url": "https://example.com/x", "secret": "short"}, "secret"),
        ({"url": "https://example.com/x", "secret": "sixteen-chars-and-a-\x00"}, "secret"),
        ({"url": "https://example.com/x", "secret": "whsec_restart-secret-0001"}, "secret"),  # not base64
        ({"url": "https://example.com/x", "enabled": "yes"}, "enabled"),
        ({"url": "https://example.com:70000/x"}, "url"),
    ]:
        r = await api.post(HOOKS, json=body)
        err = assert_envelope(r, 422, "validation_error")
        assert err["details"][0]["loc"][:2] == ["body", where], (body, err)

    # disabled: nothing is ever sent to these made-up addresses
    created = await subscribe(
        api,
        "https://user:pw@example.invalid/in?x=1",
        event_types=["RECOVERY_UPDATE"],
        description="on-call bridge",
        enabled=False,
    )
    secret, wid = created["secret"], created["id"]
    assert created["url"] == "https://user:**redacted**@example.invalid/in?x=1"

    r = await api.get(f"{HOOKS}/{wid}")
    assert r.status_code == 200 and "secret" not in r.json() and secret not in r.text
    assert r.json()["description"] == "on-call bridge" and r.json()["enabled"] is False
    r = await api.get(HOOKS)
    assert [w["id"] for w in r.json()] == [wid] and secret not in r.text and "secret" not in r.json()[0]

    r = await api.patch(f"{HOOKS}/{wid}", json={"url": "gopher://example.com"})
    assert_envelope(r, 422, "validation_error")
    r = await api.patch(f"{HOOKS}/{wid}", json={"enabled": None, "description": None})  # null: unchanged
    assert r.status_code == 200 and r.json()["enabled"] is False and r.json()["description"] == "on-call bridge"
    r = await api.patch(f"{HOOKS}/{wid}", json={"event_types": None, "url": "https://example.invalid/new"})
    assert r.status_code == 200 and r.json()["event_types"] is None
    assert r.json()["url"] == "https://example.invalid/new" and r.json()["enabled"] is False

    r = await api.post(f"{HOOKS}/{wid}/rotate-secret")
    assert r.status_code == 200, r.text
    rotated = r.json()["secret"]
    assert rotated != secret and rotated.startswith("whsec_") and r.json()["secret_rotated_at"]
    r = await api.get(f"{HOOKS}/{wid}")
    assert rotated not in r.text and "secret" not in r.json()

    async with db.read() as session:
        audit = (await session.execute(select(AuditRow).where(AuditRow.action.like("webhook.%")))).scalars().all()
    assert {a.action for a in audit} >= {"webhook.create", "webhook.update", "webhook.rotate_secret"}
    assert all(secret not in json.dumps(a.details) and rotated not in json.dumps(a.details) for a in audit)

    r = await api.get(f"{HOOKS}/wh_nope")
    assert_envelope(r, 404, "not_found")
    for hostile in ("a%00b", "a%0ab", "a%20b"):  # refused before they reach the store
        assert_envelope(await api.get(f"{HOOKS}/{hostile}"), 422, "validation_error")
    r = await api.get(f"{HOOKS}/{wid}/deliveries/whd_nope")
    assert_envelope(r, 404, "not_found")

    for role, perms in [
        ("viewer", {"services:read", "configs:read"}),
        ("operator", {"services:read", "services:control", "recovery:trigger", "audit:read"}),
    ]:
        headers = bearer(mint_token(settings, permissions=perms, subject=role, roles=(role,)))
        for method, url, body in [
            ("GET", HOOKS, None),
            ("POST", HOOKS, {"url": "https://example.com"}),
            ("GET", f"{HOOKS}/{wid}", None),
            ("DELETE", f"{HOOKS}/{wid}", None),
            ("POST", f"{HOOKS}/{wid}/rotate-secret", None),
        ]:
            r = await anon.request(method, url, headers=headers, json=body)
            err = assert_envelope(r, 403, "forbidden")
            assert err["details"] == {"required": "webhooks:manage"}
    r = await anon.get(HOOKS)
    assert_envelope(r, 401, "unauthorized")

    r = await api.delete(f"{HOOKS}/{wid}")
    assert r.status_code == 204, r.text
    assert_envelope(await api.get(f"{HOOKS}/{wid}"), 404, "not_found")


# --------------------------------------------------------------------------- store: restarts and claiming


async def test_queued_deliveries_survive_a_restart_and_are_claimed_once(db, receiver):
    subs, deliveries = WebhookSubscriptionRepository(), WebhookDeliveryRepository()
    async with db.write() as session:
        await subs.add(
            session=session,
            subscription_id="wh_restart",
            url=f"{receiver.url}/r",
            event_types=[],
            secret="whsec_restart-secret-0001",
            enabled=True,
            description="",
            created_by="test",
        )
    policy = DeliveryPolicy(backoff=0.02, backoff_max=0.1, poll_interval=0.05, max_attempts=3, timeout=5)
    event = status_event()

    # queued by a dispatcher that never got to send (the process went away) ...
    gone = WebhookDispatcher(db, MemoryBus(), policy=policy, outbound=OutboundPolicy())
    assert await gone.enqueue(event) == 1
    assert await gone.enqueue(event) == 0  # the same event again (a redelivered stream entry) queues nothing

    # ... two dispatchers race for it: exactly one wins the attempt
    first, second = (WebhookDispatcher(db, MemoryBus(), policy=policy, outbound=OutboundPolicy()) for _ in range(2))
    claims = await first.claim(10)
    assert [c.attempts for c in claims] == [1] and await second.claim(10) == []
    result = await first.deliver(claims[0])
    assert result.ok
    async with db.read() as session:
        row = (await session.execute(select(WebhookDeliveryRow))).scalar_one()
    assert (row.state, row.attempts, row.last_status_code) == ("delivered", 1, 200)
    assert event_ids(receiver, "/r") == [event.event_id]

    # a claim whose sender died is due again once its lease has passed, and sent by the next dispatcher
    other = status_event(state="stopped")
    await gone.enqueue(other)
    lost = await first.claim(10)
    assert len(lost) == 1
    async with db.write() as session:
        await deliveries.claim_due(session=session, limit=10, lease=policy.lease)  # nothing due: still leased
        stale = await session.get(WebhookDeliveryRow, lost[0].id)
        stale.next_attempt_at = datetime.now(UTC) - timedelta(seconds=1)
    [retaken] = await second.claim(10)
    assert retaken.delivery_id == lost[0].delivery_id and retaken.attempts == 2
    assert (await second.deliver(retaken)).ok
    await first.deliver(lost[0])  # the late sender's outcome does not overwrite the new claim's
    async with db.read() as session:
        row = await session.get(WebhookDeliveryRow, lost[0].id)
    assert (row.state, row.attempts) == ("delivered", 2)


async def test_standard_signature_is_the_spec_hmac_over_id_timestamp_body():
    """Computed by hand from the Standard Webhooks spec, independent of any library."""
    from windflow.webhooks_out.signing import new_secret, sign

    secret = new_secret()
    body = b'{"event_id":"e1","event_type":"PING"}'
    headers = sign(secret, body, event_type="PING", delivery_id="d-1", timestamp=1_700_000_000)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, b"d-1.1700000000." + body, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()
    assert headers["webhook-id"] == "d-1" and headers["webhook-timestamp"] == "1700000000"
    # a secret stored before the standard scheme that no verifier can load still signs (its UTF-8 bytes as
    # the key) rather than failing the delivery
    legacy = sign("whsec_restart-secret-0001", body, event_type="PING", delivery_id="d-2")
    key = b"whsec_restart-secret-0001"
    digest = hmac.new(key, f"d-2.{legacy['webhook-timestamp']}.".encode() + body, hashlib.sha256).digest()
    assert legacy["webhook-signature"] == "v1," + base64.b64encode(digest).decode()
    assert verify_standard("whsec_restart-secret-0001", body, legacy)
