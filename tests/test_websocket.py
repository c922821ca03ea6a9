"""``/api/v1/ws`` with a real uvicorn server and real ``websockets`` clients, on both buses and both stores."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from typer.testing import CliRunner
from websockets.exceptions import ConnectionClosed

from tests.conftest import mint_token
from tests.live_server import LiveServer, events, next_of, open_ws, recv_json
from tests.servers import free_port, start_redis
from windflow.api.app import build_resources, create_app
from windflow.api.resources import Resources
from windflow.auth.permissions import Permission
from windflow.domain.events import (
    ConfigChanged,
    Event,
    EventType,
    InitializationUpdate,
    make_event,
)
from windflow.domain.results import ProbeResult
from windflow.events.redis_streams import RedisStreamsBus
from windflow.events.relay import OutboxRelay
from windflow.persistence.db import Database
from windflow.persistence.repositories import OutboxRepository, ProbeResultRepository
from windflow.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")

outbox = OutboxRepository()


def svc(sid: str, port: int = 9000) -> dict[str, Any]:
    return {
        "id": sid,
        "driver": "process",
        "config": {"command": ["python3", "-m", "http.server", str(port)]},
        "health": {"kind": "tcp", "port": port},
    }


@dataclass
class Live:
    server: LiveServer
    res: Resources
    settings: Settings
    token: str

    @property
    def url(self) -> str:
        return self.server.ws_url

    def ws(self, query: str = "", token: str | None = "default", **kwargs: Any) -> Any:
        tok = self.token if token == "default" else token
        return open_ws(self.url + (f"?{query}" if query else ""), tok, **kwargs)

    def http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            base_url=self.server.http_url, timeout=10, headers={"Authorization": f"Bearer {self.token}"}
        )

    @property
    def hub(self) -> Any:
        return self.server.app.state.event_hub

    async def write_events(self, *events: Event) -> None:
        """As activities do: the event row in the state change's transaction, then wake the relay."""
        async with self.res.db.write() as session:
            for event in events:
                await outbox.add(session=session, event=event)
        assert self.res.relay is not None
        self.res.relay.notify()


async def _outbox_drained(db: Database, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with db.read() as session:
            if not await OutboxRepository().pending(session=session, limit=1):
                return
        assert loop.time() < deadline, "the relay did not publish the start-up events"
        await asyncio.sleep(0.02)


@pytest.fixture(params=["memory", "redis"])
def bus_kind(request) -> str:
    return str(request.param)


@pytest.fixture
def live_factory(settings: Settings, db: Database, bus_kind: str, request):
    @asynccontextmanager
    async def make(*, drain: bool = True, **overrides: Any) -> AsyncIterator[Live]:
        update: dict[str, Any] = {
            "events_stream": f"wf:test:{uuid.uuid4().hex[:12]}",
            "ws_heartbeat": 30.0,
            "events_metrics_interval": 0.0,
            "ws_auth_timeout": 1.0,
        }
        if bus_kind == "redis" and "redis_url" not in overrides:
            update["redis_url"] = request.getfixturevalue("redis_url")
        update.update(overrides)
        s = settings.model_copy(update=update)
        res = await build_resources(s, migrate=False)
        await res.db.dispose()
        res.db = db
        res.relay = OutboxRelay(db, res.bus, interval=0.05)
        app = create_app(s, resources=res)
        try:
            async with LiveServer(app) as server:
                if drain:
                    await _outbox_drained(db)  # start-up events (the bootstrap admin's audit) reach no test's client
                yield Live(server, res, s, mint_token(s))
        finally:
            if isinstance(res.bus, RedisStreamsBus):
                try:
                    await res.bus.redis.delete(*res.bus.keys)
                except Exception:  # noqa: BLE001  (a test may have stopped that Redis)
                    pass
            await res.bus.close()

    return make


def init_event(run: str, status: str, progress: int, component: str | None = None) -> Event:
    return make_event(
        EventType.INITIALIZATION_UPDATE,
        InitializationUpdate(
            run_id=run,
            workflow_id=f"init/{run}",
            status=status,
            progress=progress,
            component=component,
            component_status="healthy" if component else None,
        ),
        event_id=str(uuid.uuid4()),
        timestamp=datetime.now(UTC),
    )


def config_event(service: str, version: int, comment: str = "") -> Event:
    return make_event(
        EventType.CONFIG_CHANGED,
        ConfigChanged(service_id=service, version=version, author="t", comment=comment),
        event_id=str(uuid.uuid4()),
        timestamp=datetime.now(UTC),
    )


async def test_client_receives_changes_in_order(live_factory):
    async with live_factory() as live, live.ws("types=CONFIG_CHANGED,INITIALIZATION_UPDATE") as ws:
        hello = await next_of(ws, "subscribed")
        assert hello["types"] == ["CONFIG_CHANGED", "INITIALIZATION_UPDATE"] and hello["services"] is None
        # an initialization's progress, written the way its activities write it
        steps = [
            init_event("r1", "running", 0),
            init_event("r1", "running", 33, "database"),
            init_event("r1", "running", 66, "cache"),
            init_event("r1", "succeeded", 100, "api"),
        ]
        for step in steps:
            await live.write_events(step)
        got = await events(ws, 4)
        assert [m["event"]["event_id"] for m in got] == [e.event_id for e in steps]
        assert [m["event"]["data"]["progress"] for m in got] == [0, 33, 66, 100]

        # config changes made through the API, in order
        async with live.http() as http:
            for sid, port in (("database", 9101), ("cache", 9102), ("api", 9103)):
                assert (await http.post("/api/v1/services", json=svc(sid, port))).status_code == 201
            content = {k: v for k, v in svc("database", 9199).items() if k != "id"}
            r = await http.put(
                "/api/v1/services/database/config",
                json={"content": content, "comment": "new port"},
                headers={"If-Match": '"1"'},
            )
            assert r.status_code == 200, r.text
        got = await events(ws, 4)
        assert [(m["event"]["data"]["service_id"], m["event"]["data"]["version"]) for m in got] == [
            ("database", 1),
            ("cache", 1),
            ("api", 1),
            ("database", 2),
        ]
        ids = [m["id"] for m in got]
        assert ids == sorted(ids, key=lambda p: tuple(map(int, p.split("-"))))
        assert all(m["event"]["event_type"] == "CONFIG_CHANGED" for m in got)  # AUDIT etc. filtered out


async def test_reconnect_with_last_id_receives_the_gap(live_factory):
    async with live_factory() as live:
        first = [config_event("db", i) for i in range(1, 4)]
        async with live.ws("types=CONFIG_CHANGED") as ws:
            await next_of(ws, "subscribed")
            await live.write_events(*first)
            got = await events(ws, 3)
        last_id = got[-1]["id"]
        missed = [config_event("db", i) for i in range(4, 9)]
        for e in missed:  # while the client is away
            await live.write_events(e)
        await asyncio.sleep(0.2)
        async with live.ws(f"types=CONFIG_CHANGED&last_event_id={last_id}") as ws:
            hello = await next_of(ws, "subscribed")
            assert hello["position"] == last_id
            replayed = await events(ws, 5)
            later = config_event("db", 9)
            await live.write_events(later)
            live_one = await events(ws, 1)
            # nothing more: no duplicate of the replayed ones arrives from the live queue
            with pytest.raises(TimeoutError):
                await next_of(ws, "event", timeout=0.5)
        received = [m["event"]["event_id"] for m in replayed + live_one]
        assert received == [e.event_id for e in missed + [later]]

        # the Last-Event-ID header works too
        async with open_ws(
            live.url + "?types=CONFIG_CHANGED",
            None,
            additional_headers={"Authorization": f"Bearer {live.token}", "Last-Event-ID": got[0]["id"]},
        ) as ws:
            await next_of(ws, "subscribed")
            again = await events(ws, 8)
            assert [m["event"]["event_id"] for m in again] == [e.event_id for e in first[1:] + missed + [later]]


async def test_gap_is_reported_when_the_resume_point_was_trimmed(live_factory):
    async with live_factory(events_maxlen=100) as live:
        async with live.ws() as ws:
            await next_of(ws, "subscribed")
            await live.res.bus.publish_many([config_event("db", 1)])
            first = (await events(ws, 1))[0]["id"]
        await live.res.bus.publish_many([config_event("db", i) for i in range(2, 402)])
        async with live.ws(f"last_event_id={first}") as ws:
            await next_of(ws, "subscribed")
            gap = await next_of(ws, "gap")
            assert gap["after"] == first
            replayed = await events(ws, 50)
            assert replayed[-1]["event"]["data"]["version"] > replayed[0]["event"]["data"]["version"]
        # an id this log never issued (e.g. from before Redis lost its data): told so, then all that is retained
        oldest = (await live.res.bus.read(limit=1))[0][0]
        async with live.ws("last_event_id=99999999999999-0") as ws:
            await next_of(ws, "subscribed")
            assert "reset" in (await next_of(ws, "gap"))["message"]
            assert (await events(ws, 1))[0]["id"] == oldest


async def test_unauthenticated_connections_are_refused(live_factory, settings):
    async with live_factory() as live:

        async def closed_with(query: str = "", token: str | None = None, **kw: Any) -> tuple[int, str]:
            async with live.ws(query, token=token, **kw) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await recv_json(ws, timeout=10)
            assert info.value.rcvd is not None
            return info.value.rcvd.code, info.value.rcvd.reason

        code, reason = await closed_with()  # no token at all: refused once the auth grace period ends
        assert code == 4401 and "authentication required" in reason
        code, reason = await closed_with("token=not-a-jwt")
        assert code == 4401 and "not authenticated" in reason
        code, _ = await closed_with(token="garbage")
        assert code == 4401
        expired = mint_token(live.settings)
        code, _ = await closed_with(token=expired[:-4] + "AAAA")  # bad signature
        assert code == 4401
        no_rights = mint_token(live.settings, permissions=[], roles=())
        code, reason = await closed_with(token=no_rights)
        assert code == 4403 and "services:read" in reason
        viewer = mint_token(live.settings, permissions=[Permission.SERVICES_READ], roles=("viewer",))
        code, reason = await closed_with("types=AUDIT", token=viewer)
        assert code == 4403 and "audit:read" in reason
        code, reason = await closed_with("types=NOPE", token=live.token)
        assert code == 4400 and "unknown event type" in reason
        code, _ = await closed_with("last_event_id=yesterday", token=live.token)
        assert code == 4400

        # a token in the first message is accepted
        async with live.ws(token=None) as ws:
            await ws.send(json.dumps({"type": "auth", "token": live.token}))
            assert (await next_of(ws, "subscribed"))["types"] is None


async def test_filters_by_type_and_service(live_factory):
    async with live_factory() as live:
        viewer = mint_token(live.settings, permissions=[Permission.SERVICES_READ], roles=("viewer",))
        async with (
            live.ws("services=alpha") as only_alpha,
            live.ws("types=AUDIT") as audits,
            live.ws(token=viewer) as everything_visible,
        ):
            for ws in (only_alpha, audits, everything_visible):
                await next_of(ws, "subscribed")
            async with live.http() as http:
                assert (await http.post("/api/v1/services", json=svc("beta", 9201))).status_code == 201
                assert (await http.post("/api/v1/services", json=svc("alpha", 9202))).status_code == 201
            alpha = (await events(only_alpha, 1))[0]["event"]
            assert (alpha["event_type"], alpha["data"]["service_id"]) == ("CONFIG_CHANGED", "alpha")
            audit = [m for m in await events(audits, 2) if m["event"]["data"]["action"] != "user.bootstrap"]
            while len(audit) < 2:  # the start-up audit may still be on its way; only this test's count
                audit += [m for m in await events(audits, 1) if m["event"]["data"]["action"] != "user.bootstrap"]
            assert {m["event"]["event_type"] for m in audit} == {"AUDIT"}
            assert [(m["event"]["data"]["action"], m["event"]["data"]["target"]) for m in audit] == [
                ("service.create", "beta"),
                ("service.create", "alpha"),
            ]
            seen = await events(everything_visible, 2)  # a viewer gets no AUDIT events
            assert [m["event"]["data"]["service_id"] for m in seen] == ["beta", "alpha"]

            # change the filter on the open connection
            await only_alpha.send(json.dumps({"type": "subscribe", "services": ["beta"], "types": ["CONFIG_CHANGED"]}))
            ack = await next_of(only_alpha, "subscribed")
            assert ack["services"] == ["beta"]
            await live.write_events(config_event("alpha", 5), config_event("beta", 5))
            moved = (await events(only_alpha, 1))[0]["event"]
            assert moved["data"]["service_id"] == "beta"
            await only_alpha.send(json.dumps({"type": "subscribe", "types": ["BOGUS"]}))
            assert "unknown event type" in (await next_of(only_alpha, "error"))["message"]


async def test_slow_client_is_dropped_while_a_fast_one_keeps_receiving(live_factory):
    async with live_factory(ws_queue_size=8, ws_send_timeout=60.0) as live:
        big = "x" * 16_000
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing, tiny buffers
        sock.connect(("127.0.0.1", live.server.port))
        async with live.ws(sock=sock, compression=None, max_queue=1) as slow, live.ws() as fast:
            await next_of(slow, "subscribed")
            await next_of(fast, "subscribed")
            received: list[dict[str, Any]] = []

            async def read_fast() -> None:
                while True:
                    msg = await recv_json(fast, timeout=30)
                    if msg["type"] == "event":
                        received.append(msg)

            reader = asyncio.create_task(read_fast())
            published: list[Event] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while live.hub.dropped == 0:
                assert loop.time() < deadline, "the slow client was never dropped"
                batch = [config_event("db", len(published) + i, big) for i in range(20)]
                await live.res.bus.publish_many(batch)
                published += batch
                await asyncio.sleep(0.01)
            tail = [config_event("db", 10_000 + i) for i in range(5)]
            await live.res.bus.publish_many(tail)  # the fast client is not held back by the slow one
            published += tail
            mine = {e.event_id for e in published}

            def own(messages: list[dict[str, Any]]) -> list[str]:  # only this test's events
                return [m["event"]["event_id"] for m in messages if m["event"]["event_id"] in mine]

            while len(own(received)) < len(published):
                assert loop.time() < deadline + 30, f"fast client got {len(own(received))}/{len(published)}"
                if reader.done():
                    reader.result()  # the fast client was cut off: raise what it saw
                await asyncio.sleep(0.02)
            reader.cancel()
            assert own(received) == [e.event_id for e in published]

            # the slow one: what was already on its way, in order, then the notice, then close 4008
            got: list[dict[str, Any]] = []
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    msg = await recv_json(slow, timeout=30)
                    got.append(msg)
            notice = got[-1]
            assert notice["type"] == "lagging" and "too slow" in notice["message"]
            # (the slow client subscribed first: an event the relay published just before this test's own may
            # reach it alone; only this test's events are compared)
            arrived = [m for m in got if m["type"] == "event"]
            delivered = [m for m in arrived if m["event"]["event_id"] in mine]
            assert [m["event"]["event_id"] for m in delivered] == [e.event_id for e in published[: len(delivered)]]
            assert len(delivered) < len(published)
            assert arrived, "the slow client received nothing before it was dropped"
            assert notice["last_event_id"] == arrived[-1]["id"]
            assert info.value.rcvd is not None and info.value.rcvd.code == 4008

        # it resumes by id and gets the rest, no duplicates
        async with live.ws(f"last_event_id={notice['last_event_id']}") as again:
            rest = await events(again, len(published) - len(delivered), timeout=30)
        assert [m["event"]["event_id"] for m in delivered + rest] == [e.event_id for e in published]


async def test_heartbeats_and_client_ping(live_factory):
    async with live_factory(ws_heartbeat=0.2) as live, live.ws() as ws:
        await next_of(ws, "subscribed")
        ping = await next_of(ws, "ping", timeout=5)
        assert datetime.fromisoformat(ping["ts"])
        await ws.send(json.dumps({"type": "ping"}))
        await next_of(ws, "pong", timeout=5)
        await ws.send("not json")
        await next_of(ws, "error", timeout=5)
        await ws.send(b"\x00\x01")  # binary frames are answered, not fatal
        await next_of(ws, "error", timeout=5)
        await ws.send(json.dumps({"type": "ping"}))
        await next_of(ws, "pong", timeout=5)


async def test_metrics_updates_carry_per_service_figures(live_factory):
    async with live_factory(events_metrics_interval=0.2) as live:
        async with live.http() as http:
            assert (await http.post("/api/v1/services", json=svc("db", 9301))).status_code == 201
        now = datetime.now(UTC)
        async with live.res.db.write() as session:
            await ProbeResultRepository().add(
                session=session,
                service_id="db",
                results=[
                    ProbeResult(
                        healthy=i != 0, latency_ms=10.0 + i, message="", checked_at=now - timedelta(seconds=4 - i)
                    )
                    for i in range(4)
                ],
            )
        async with live.ws("types=METRICS_UPDATE&services=db") as ws:
            await next_of(ws, "subscribed")
            for _ in range(20):
                data = (await events(ws, 1))[0]["event"]["data"]
                if data["latency_ms"] is not None:
                    break
        assert data["service_id"] == "db" and data["latency_ms"] == 13.0
        assert data["availability_1h"] == 0.75 and data["restarts"] == 0 and data["health"]


async def test_polling_route_and_documented_models(live_factory):
    async with live_factory() as live:
        evs = [config_event("db", i) for i in range(1, 6)]
        await live.write_events(*evs)
        async with live.http() as http:
            page = None
            for _ in range(100):
                page = (await http.get("/api/v1/events", params={"types": "CONFIG_CHANGED", "limit": 3})).json()
                if page["items"]:
                    break
                await asyncio.sleep(0.05)
            assert page is not None
            assert [m["event"]["data"]["version"] for m in page["items"]] == [1, 2, 3]
            rest = (await http.get("/api/v1/events", params={"after": page["next_after"]})).json()
            assert [m["event"]["data"]["version"] for m in rest["items"]] == [4, 5]
            assert (await http.get("/api/v1/events", params={"after": "nope"})).status_code == 422
            schema = (await http.get("/api/v1/events/schema")).json()
            assert set(schema["types"]) == {t.value for t in EventType}
            assert "version" in schema["types"]["CONFIG_CHANGED"]["properties"]
            components = (await http.get("/openapi.json")).json()["components"]["schemas"]
            assert {"ConfigChangedEvent", "MetricsUpdateEvent", "InitializationUpdateEvent", "EventPage"} <= set(
                components
            )
            anon = await httpx2.AsyncClient(base_url=live.server.http_url).get("/api/v1/events")
            assert anon.status_code == 401


async def test_cli_events_tail(live_factory, monkeypatch):
    from windflow.cli.main import app as cli

    async with live_factory() as live:
        monkeypatch.setenv("WINDFLOW_TOKEN", live.token)
        monkeypatch.setenv("XDG_CONFIG_HOME", str(live.settings.data_dir / "cfg"))
        runner = CliRunner()
        run = asyncio.create_task(
            asyncio.to_thread(
                runner.invoke,
                cli,
                [
                    "events",
                    "tail",
                    "--type",
                    "CONFIG_CHANGED",
                    "--service",
                    "db",
                    "--count",
                    "2",
                    "--api",
                    live.server.http_url,
                ],
            )
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while live.hub.clients == 0:
            assert loop.time() < deadline
            await asyncio.sleep(0.02)
        await live.write_events(config_event("other", 1), config_event("db", 7, "hello"), config_event("db", 8))
        result = await asyncio.wait_for(run, 20)
        assert result.exit_code == 0, result.output
        lines = [ln for ln in result.output.splitlines() if "CONFIG_CHANGED" in ln]
        assert len(lines) == 2 and "v7" in lines[0] and "v8" in lines[1] and "other" not in result.output

        bad = await asyncio.to_thread(
            runner.invoke, cli, ["events", "tail", "--api", live.server.http_url], env={"WINDFLOW_TOKEN": "bogus"}
        )
        assert bad.exit_code == 2 and "not authenticated" in bad.output


@pytest.mark.parametrize("bus_kind", ["redis"])
async def test_websocket_rides_out_a_redis_outage(live_factory, bus_kind):
    """Redis stops while clients are connected and changes keep coming through the API; after it is back, the
    client gets every one of them, in order, once."""
    port = free_port()
    server = start_redis(port)
    try:
        async with live_factory(redis_url=server.url) as live, live.ws("types=CONFIG_CHANGED") as ws:
            await next_of(ws, "subscribed")
            async with live.http() as http:
                assert (await http.post("/api/v1/services", json=svc("s0", 9400))).status_code == 201
                assert (await events(ws, 1))[0]["event"]["data"]["service_id"] == "s0"
                server.stop()
                for i in range(1, 6):  # the API keeps serving; the events wait in the outbox
                    assert (await http.post("/api/v1/services", json=svc(f"s{i}", 9400 + i))).status_code == 201
                server = start_redis(port)
                got = await events(ws, 5, timeout=30)
            assert [m["event"]["data"]["service_id"] for m in got] == [f"s{i}" for i in range(1, 6)]
            with pytest.raises(TimeoutError):
                await next_of(ws, "event", timeout=0.5)
    finally:
        server.stop()


@pytest.mark.parametrize("bus_kind", ["redis"])
async def test_api_serves_while_redis_is_down_and_catches_up(live_factory, bus_kind):
    port = free_port()
    async with live_factory(redis_url=f"redis://127.0.0.1:{port}/0", drain=False) as live:  # nothing listens there
        async with live.http() as http:
            assert (await http.post("/api/v1/services", json=svc("early", 9500))).status_code == 201
            assert (await http.get("/api/v1/services/early")).status_code == 200
            assert (await http.get("/api/v1/events")).status_code == 503  # said plainly, not a 500
        async with live.ws() as ws:  # no bus yet: told to retry
            with pytest.raises(ConnectionClosed) as info:
                await recv_json(ws, timeout=15)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1013
        server = start_redis(port)
        try:
            async with live.ws("types=CONFIG_CHANGED&last_event_id=0-0") as ws:
                await next_of(ws, "subscribed")
                got = await events(ws, 1, timeout=20)
                assert got[0]["event"]["data"]["service_id"] == "early"
                with pytest.raises(TimeoutError):
                    await next_of(ws, "event", timeout=0.5)
        finally:
            server.stop()


async def test_polling_route_filters_by_time(live_factory):
    """`since`/`until` keep the events stamped inside the range (the dashboard's Events page time range)."""
    async with live_factory() as live:
        now = datetime.now(UTC)
        stamps = [now - timedelta(hours=3), now - timedelta(minutes=30), now - timedelta(minutes=5)]
        evs = [
            make_event(
                EventType.CONFIG_CHANGED,
                ConfigChanged(service_id="db", version=i + 1, author="t"),
                event_id=str(uuid.uuid4()),
                timestamp=at,
            )
            for i, at in enumerate(stamps)
        ]
        await live.write_events(*evs)
        async with live.http() as http:

            async def versions(**params) -> list[int]:
                r = await http.get("/api/v1/events", params={"types": "CONFIG_CHANGED", **params})
                assert r.status_code == 200, r.text
                return [m["event"]["data"]["version"] for m in r.json()["items"]]

            for _ in range(100):
                if await versions() == [1, 2, 3]:
                    break
                await asyncio.sleep(0.05)
            assert await versions(since=(now - timedelta(hours=1)).isoformat()) == [2, 3]
            assert await versions(
                since=(now - timedelta(hours=1)).isoformat(), until=(now - timedelta(minutes=10)).isoformat()
            ) == [2]
            naive = (now - timedelta(minutes=10)).replace(tzinfo=None).isoformat()  # no zone: UTC
            assert await versions(since=naive) == [3]
            bad = await http.get(
                "/api/v1/events", params={"since": now.isoformat(), "until": (now - timedelta(hours=1)).isoformat()}
            )
            assert bad.status_code == 422 and bad.json()["error"]["details"][0]["loc"] == ["query", "since"]
            assert (await http.get("/api/v1/events", params={"since": "soon"})).status_code == 422
