"""Outbound policy: probes, the http driver, notification channels and webhooks never reach link-local or cloud
metadata addresses (in any spelling, after DNS, behind a redirect); webhooks and channels reach loopback and
private addresses only when allowed; the http driver reports statuses, never response bodies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests.servers import Receiver
from windflow.domain.errors import DriverFailed
from windflow.domain.models import HttpHealth, ServiceSpec
from windflow.domain.notifications import ChannelConfig, Notification
from windflow.drivers.http import HttpDriver
from windflow.escalation import build_channel
from windflow.outbound import OutboundPolicy, OutboundRefused
from windflow.probes.http import HttpProbe
from windflow.settings import Settings
from windflow.webhooks_out.dispatcher import attempt, new_client

pytestmark = pytest.mark.asyncio(loop_scope="session")

METADATA_SPELLINGS = [
    "169.254.169.254",
    "2852039166",
    "0xa9fea9fe",
    "0251.0376.0251.0376",
    "169.254.43518",
    "[::ffff:169.254.169.254]",
    "[::ffff:a9fe:a9fe]",
    "[64:ff9b::a9fe:a9fe]",
    "[fd00:ec2::254]",
    "metadata.google.internal",
    "METADATA.google.internal.",
    "100.100.100.200",
    "[fe80::1]",
    "0.0.0.0",
]
LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "127.1",
    "[::1]",
    "localhost",
    "[::ffff:127.0.0.1]",
    "10.1.2.3",
    "192.168.0.10",
]


class Site:
    """A real HTTP server: ``/secret`` answers a body nobody should see relayed; ``/hop`` redirects to
    ``target``; every request is recorded."""

    def __init__(self, target: str = "") -> None:
        self.hits: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                site.hits.append(self.path)
                if self.path.startswith("/hop"):
                    self.send_response(302)
                    self.send_header("Location", site.target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b"instance-credentials: AKIA-SECRET-VALUE"
                self.send_response(500 if self.path.startswith("/fail") else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self.target = target
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


def probe_spec(url: str) -> HttpHealth:
    return HttpHealth(kind="http", url=url, timeout=2)


# --------------------------------------------------------------------------- the policy itself


@pytest.mark.parametrize("host", METADATA_SPELLINGS)
async def test_metadata_is_refused_in_every_spelling(host):
    for policy in (OutboundPolicy(), OutboundPolicy.notify_default()):
        assert policy.refuse_url(f"http://{host}/latest/meta-data/") is not None, (host, policy.purpose)
    # even an allow-list of private ranges does not open metadata
    assert OutboundPolicy(allow=("10.0.0.0/8",)).refuse_url(f"http://{host}/") is not None


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_loopback_and_private_are_for_services_only(host):
    assert OutboundPolicy().refuse_url(f"http://{host}:8080/health") is None
    assert OutboundPolicy.notify_default().refuse_url(f"http://{host}:8080/hook") is not None


async def test_settings_lists():
    settings = Settings(
        outbound_deny=["10.9.0.0/16", "*.corp.example"], outbound_allow=["127.0.0.1/32"], _env_file=None
    )
    services, notify = OutboundPolicy.for_services(settings), OutboundPolicy.for_notify(settings)
    assert services.refuse_url("http://10.9.1.1/") and services.refuse_url("http://db.corp.example/")
    assert services.refuse_url("http://10.8.1.1/") is None
    assert notify.refuse_url("http://127.0.0.1:9/") is None and notify.refuse_url("http://127.0.0.2:9/")
    with pytest.raises(ValueError, match="neither a CIDR"):
        Settings(outbound_deny=["not a host!"], _env_file=None)


async def test_names_are_checked_after_resolution():
    """A name that is not refused by itself is refused for the addresses it resolves to (so a DNS answer
    cannot smuggle a refused address in), and the address that was checked is the one returned."""
    strict = OutboundPolicy(allow_private=False)
    assert strict.refuse_host("localhost.") is not None  # by name
    deny_loopback = OutboundPolicy(deny=("127.0.0.0/8", "::1/128"))
    assert deny_loopback.refuse_host("localhost") is None  # the name alone says nothing
    with pytest.raises(OutboundRefused, match="resolves to"):
        await deny_loopback.resolve("localhost", 80)
    assert (await OutboundPolicy().resolve("localhost", 80))[0][1] in {"127.0.0.1", "::1"}


# --------------------------------------------------------------------------- probes


async def test_http_probe_refuses_metadata_on_both_transports(site):
    probe = HttpProbe()
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://0xa9fea9fe/",
        "https://[fd00:ec2::254]/",
        "https://metadata.google.internal/computeMetadata/v1/",
    ):
        result = await probe.check(probe_spec(url))
        assert not result.healthy and "outbound policy" in result.message, (url, result.message)
    # a local service (any spelling of loopback) is still probed: that is the probe's job
    for host in ("127.0.0.1", "0x7f000001", "localhost"):
        result = await probe.check(probe_spec(f"http://{host}:{site.port}/ok"))
        assert result.healthy, result.message
    await probe.aclose()


async def test_http_probe_does_not_follow_a_redirect_to_metadata():
    inner = Site()
    hop = Site(target=f"{inner.url}/secret")  # a redirect hop to another address: never followed
    try:
        for fast in (True, False):
            probe = HttpProbe(fast_http=fast)
            result = await probe.check(probe_spec(f"{hop.url}/hop"))
            assert not result.healthy and "302" in result.message, result.message
            await probe.aclose()
        hop.target = "http://169.254.169.254/latest/meta-data/"
        result = await HttpProbe(fast_http=False).check(probe_spec(f"{hop.url}/hop"))
        assert "302" in result.message
        assert inner.hits == []
    finally:
        hop.close()
        inner.close()


async def test_http_probe_under_a_policy_refusing_the_resolved_address(site):
    probe = HttpProbe(outbound=OutboundPolicy(deny=("127.0.0.0/8", "::1/128")))
    result = await probe.check(probe_spec(f"http://localhost:{site.port}/ok"))
    assert not result.healthy and "resolves to" in result.message, result.message
    assert site.hits == []
    await probe.aclose()


async def test_tcp_probe_refuses_metadata_and_reaches_local_ports(site):
    from windflow.domain.models import TcpHealth
    from windflow.probes.tcp import TcpProbe

    probe = TcpProbe()
    for host in ("169.254.169.254", "0xa9fea9fe", "fd00:ec2::254", "metadata.google.internal"):
        result = await probe.check(TcpHealth(kind="tcp", host=host, port=80, timeout=2))
        assert not result.healthy and "outbound policy" in result.message, (host, result.message)
    for host in ("127.0.0.1", "localhost"):
        result = await probe.check(TcpHealth(kind="tcp", host=host, port=site.port, timeout=2))
        assert result.healthy, result.message


# --------------------------------------------------------------------------- http driver


def driver_spec(start: str) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "id": "ctl",
            "driver": "http",
            "config": {"start": {"url": start}, "stop": {"url": start}, "timeout": "2s", "auth_token": "drv-token"},
        }
    )


async def test_http_driver_refuses_metadata_and_never_echoes_bodies(site):
    with pytest.raises(DriverFailed, match="outbound policy"):
        await HttpDriver().start(driver_spec("http://169.254.169.254/latest/meta-data/iam/"))
    with pytest.raises(DriverFailed, match="outbound policy"):
        await HttpDriver().start(driver_spec("http://[::ffff:169.254.169.254]/"))
    ok = await HttpDriver().start(driver_spec(f"{site.url}/secret"))
    assert ok.ok and "AKIA" not in ok.output + ok.message and "bytes" in ok.message
    with pytest.raises(DriverFailed) as err:
        await HttpDriver().start(driver_spec(f"{site.url}/fail"))
    assert "500" in err.value.message and "AKIA" not in err.value.message + str(err.value.details)
    # a redirect is an answer, not a hop
    hop = Site(target="http://169.254.169.254/latest/meta-data/")
    try:
        with pytest.raises(DriverFailed, match="302"):
            await HttpDriver().start(driver_spec(f"{hop.url}/hop"))
    finally:
        hop.close()


# --------------------------------------------------------------------------- channels and webhooks


def notification() -> Notification:
    from datetime import UTC, datetime

    return Notification(id="n-1", kind="gave_up", service_id="api", title="api gave up", timestamp=datetime.now(UTC))


async def test_channels_refuse_loopback_by_default_and_metadata_always():
    receiver = Receiver()
    try:
        config = ChannelConfig(name="hook", kind="webhook", url=f"{receiver.url}/hook", timeout=2)
        refused = await build_channel(config).send(notification())
        assert not refused.delivered and "outbound policy" in (refused.error or ""), refused
        assert receiver.at("/hook") == []
        allowed = await build_channel(config, OutboundPolicy(allow_private=True)).send(notification())
        assert allowed.delivered and len(receiver.at("/hook")) == 1
        meta = ChannelConfig(name="m", kind="slack", url="http://169.254.169.254/x", timeout=2)
        result = await build_channel(meta, OutboundPolicy(allow_private=True)).send(notification())
        assert not result.delivered and "outbound policy" in (result.error or "")
    finally:
        receiver.close()


async def test_webhook_delivery_is_checked_at_connect_time():
    """A subscription stored before the policy (or by a name that now resolves inward) is refused when sent."""
    receiver = Receiver()
    try:
        async with new_client() as client:
            result = await attempt(
                client,
                url=f"{receiver.url}/w",
                secret="whsec_0123456789abcdef",
                delivery_id="d1",
                event_type="PING",
                payload={"x": 1},
                timeout=2,
            )
        assert not result.ok and "outbound policy" in (result.error or ""), result
        assert receiver.at("/w") == []
    finally:
        receiver.close()


# --------------------------------------------------------------------------- the API refuses them when saved


async def test_api_refuses_metadata_urls_when_saved(api):
    base = {"id": "web", "driver": "noop"}
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
    ):
        r = await api.post("/api/v1/services", json={**base, "health": {"kind": "http", "url": url}})
        assert r.status_code == 422, (url, r.text)
        err = r.json()["error"]
        assert err["details"][0]["loc"] == ["health", "url"] and "outbound policy" in err["details"][0]["msg"]
    r = await api.post(
        "/api/v1/services",
        json={
            "id": "ctl",
            "driver": "http",
            "config": {"start": {"url": "http://127.0.0.1:9/start"}, "stop": {"url": "http://0xa9fea9fe/stop"}},
        },
    )
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == ["config", "stop", "url"], r.text
    for health, loc in (
        ({"kind": "tcp", "host": "169.254.169.254", "port": 80}, ["health", "host"]),
        ({"kind": "redis", "url": "redis://metadata.google.internal:6379/0"}, ["health", "url"]),
    ):
        r = await api.post("/api/v1/services", json={**base, "health": health})
        assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == loc, r.text
    # a local probe is fine
    r = await api.post("/api/v1/services", json={**base, "health": {"kind": "http", "url": "http://127.0.0.1:9/"}})
    assert r.status_code == 201, r.text
    r = await api.post(
        "/api/v1/services/validate", json={**base, "id": "w2", "health": {"kind": "http", "url": "http://169.254.1.1/"}}
    )
    assert r.status_code == 200 and r.json()["valid"] is False

    # webhooks and channels: loopback and private refused by default, metadata always
    for url in (
        "http://127.0.0.1:9/x",
        "http://0x7f000001/x",
        "http://10.0.0.5/x",
        "http://169.254.169.254/x",
        "http://localhost:9/x",
    ):
        r = await api.post("/api/v1/webhooks", json={"url": url})
        assert r.status_code == 422 and "outbound policy" in r.json()["error"]["message"], (url, r.text)
    r = await api.post("/api/v1/webhooks", json={"url": "https://hooks.example/in"})
    assert r.status_code == 201, r.text
    r = await api.patch(f"/api/v1/webhooks/{r.json()['id']}", json={"url": "http://169.254.169.254/"})
    assert r.status_code == 422, r.text
    system = {
        "services": {"web": {"driver": "noop"}},
        "notifications": {"channels": [{"name": "c", "kind": "webhook", "url": "http://192.168.1.1/x"}]},
    }
    r = await api.put("/api/v1/system", content=yaml.safe_dump(system), headers={"content-type": "application/yaml"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["loc"] == ["notifications", "channels", 0, "url"]
