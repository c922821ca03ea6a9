"""The Temporal connection over TLS, mTLS and with an API key: a real TLS handshake with a TLS-terminating proxy
(certificates from a test CA made by trustme) in front of the session's Temporal dev server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from windflow.settings import Settings, SettingsError, load_settings
from windflow.temporal.client import connect, connection_options

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVER_NAME = "temporal.windflow.test"


class TLSProxy:
    """Terminates TLS on a loopback port and relays the bytes to a plaintext upstream (the dev server).

    With ``client_ca``, a client must present a certificate signed by it (mTLS). ``handshakes`` counts the
    completed TLS handshakes, ``peers`` the client certificates' subjects."""

    def __init__(self, upstream: str, server_cert: trustme.LeafCert, client_ca: trustme.CA | None = None) -> None:
        self.upstream_host, _, port = upstream.rpartition(":")
        self.upstream_port = int(port)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_cert.configure_cert(self.context)
        self.context.set_alpn_protocols(["h2"])  # gRPC
        if client_ca is not None:
            client_ca.configure_trust(self.context)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.handshakes = 0
        self.peers: list[object] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def __aenter__(self) -> TLSProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        peer = writer.get_extra_info("peercert")
        if peer:
            self.peers.append(peer.get("subject"))
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pki(tmp_path: Path, ca: trustme.CA) -> dict[str, Path]:
    """PEM files: the CA, and a client certificate and key it issued."""
    client = ca.issue_cert("windflow-worker@windflow.test")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "client.pem", "key": tmp_path / "client.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    return files


@contextlib.asynccontextmanager
async def proxy_for(temporal_env, ca: trustme.CA, *, mtls: bool = False) -> AsyncIterator[TLSProxy]:
    upstream = temporal_env.client.service_client.config.target_host
    async with TLSProxy(upstream, ca.issue_cert(SERVER_NAME), client_ca=ca if mtls else None) as proxy:
        yield proxy


def settings_for(tmp_path: Path, address: str, **extra) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        jwt_secret="x" * 48,
        temporal_address=address,
        temporal_namespace="default",
        _env_file=None,
        **extra,
    )


async def can_use(settings: Settings) -> bool:
    client = await asyncio.wait_for(connect(settings), 30)
    info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
    return bool(info.server_version)


async def refused(settings: Settings, why: str) -> None:
    with pytest.raises(RuntimeError, match="Failed client connect") as info:
        await asyncio.wait_for(connect(settings), 30)
    assert why in str(info.value).lower(), info.value


async def test_tls_with_a_private_ca_and_server_name(temporal_env, tmp_path, ca, pki):
    async with proxy_for(temporal_env, ca) as proxy:
        ok = settings_for(tmp_path, proxy.address, temporal_tls_ca=pki["ca"], temporal_tls_server_name=SERVER_NAME)
        assert await can_use(ok)
        assert proxy.handshakes >= 1
        # the system's roots do not know the test CA; a wrong server name fails verification; plaintext fails
        await refused(
            settings_for(tmp_path, proxy.address, temporal_tls=True, temporal_tls_server_name=SERVER_NAME),
            "unknownissuer",
        )
        await refused(
            settings_for(
                tmp_path, proxy.address, temporal_tls_ca=pki["ca"], temporal_tls_server_name="other.windflow.test"
            ),
            "notvalidforname",
        )
        await refused(settings_for(tmp_path, proxy.address), "")  # plaintext to a TLS port


async def test_mtls_client_certificate(temporal_env, tmp_path, ca, pki):
    async with proxy_for(temporal_env, ca, mtls=True) as proxy:
        with_cert = settings_for(
            tmp_path,
            proxy.address,
            temporal_tls_ca=pki["ca"],
            temporal_tls_server_name=SERVER_NAME,
            temporal_tls_cert=pki["cert"],
            temporal_tls_key=pki["key"],
        )
        assert await can_use(with_cert)
        assert proxy.peers, "the proxy saw no client certificate"
        await refused(
            settings_for(tmp_path, proxy.address, temporal_tls_ca=pki["ca"], temporal_tls_server_name=SERVER_NAME), ""
        )  # no client certificate


async def test_temporal_env_variables_and_profile(temporal_env, tmp_path, ca, pki, monkeypatch):
    """The SDK's own TEMPORAL_* variables (temporalio.envconfig) work, and WINDFLOW_TEMPORAL_* wins over them."""
    for name in list(os.environ):
        if name.startswith(("TEMPORAL_", "WINDFLOW_")):
            monkeypatch.delenv(name)
    async with proxy_for(temporal_env, ca, mtls=True) as proxy:
        monkeypatch.setenv("TEMPORAL_ADDRESS", proxy.address)
        monkeypatch.setenv("TEMPORAL_NAMESPACE", "default")
        monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(pki["ca"]))
        monkeypatch.setenv("TEMPORAL_TLS_SERVER_NAME", SERVER_NAME)
        monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(pki["cert"]))
        monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(pki["key"]))
        monkeypatch.setenv("WINDFLOW_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("WINDFLOW_CONFIG_FILE", str(tmp_path / "none.toml"))
        settings = load_settings(_env_file=None)
        assert settings.temporal_address == proxy.address
        assert await can_use(settings)
        # a profile in a Temporal config file, chosen by WINDFLOW_TEMPORAL_PROFILE
        for name in (
            "TEMPORAL_ADDRESS",
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
            "TEMPORAL_TLS_SERVER_NAME",
            "TEMPORAL_TLS_CLIENT_CERT_PATH",
            "TEMPORAL_TLS_CLIENT_KEY_PATH",
        ):
            monkeypatch.delenv(name)
        config = tmp_path / "temporal.toml"
        config.write_text(
            f'[profile.prod]\naddress = "{proxy.address}"\nnamespace = "default"\n'
            f'[profile.prod.tls]\nserver_name = "{SERVER_NAME}"\nserver_ca_cert_path = "{pki["ca"]}"\n'
            f'client_cert_path = "{pki["cert"]}"\nclient_key_path = "{pki["key"]}"\n'
        )
        monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))
        monkeypatch.setenv("WINDFLOW_TEMPORAL_PROFILE", "prod")
        settings = load_settings(_env_file=None)
        assert settings.temporal_address == proxy.address
        assert await can_use(settings)
        # WINDFLOW_TEMPORAL_TLS_SERVER_NAME overrides the profile's: now the name does not match
        monkeypatch.setenv("WINDFLOW_TEMPORAL_TLS_SERVER_NAME", "other.windflow.test")
        await refused(load_settings(_env_file=None), "notvalidforname")


async def test_api_key_implies_tls_and_is_sent(tmp_path, pki):
    options = connection_options(settings_for(tmp_path, "127.0.0.1:7233", temporal_api_key="key-123"))
    assert options["api_key"] == "key-123" and options["tls"] is True
    options = connection_options(
        settings_for(tmp_path, "127.0.0.1:7233", temporal_api_key="key-123", temporal_tls_ca=pki["ca"])
    )
    assert options["tls"].server_root_ca_cert == pki["ca"].read_bytes()
    assert connection_options(settings_for(tmp_path, "127.0.0.1:7233"))["tls"] is False


async def test_tls_settings_are_checked(tmp_path, pki):
    with pytest.raises(SettingsError, match="go together"):
        load_settings(temporal_tls_cert=pki["cert"], _env_file=None)
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(temporal_tls_ca=tmp_path / "missing.pem", _env_file=None)
    with pytest.raises(SettingsError, match="contradicts"):
        load_settings(temporal_tls=False, temporal_api_key="k", _env_file=None)


async def test_a_profile_for_another_server_lends_no_tls(tmp_path, pki, monkeypatch):
    """The Temporal CLI's profile for a cloud namespace must not turn TLS on for `windflow up`'s own dev server."""
    config = tmp_path / "temporal.toml"
    config.write_text(
        '[profile.default]\naddress = "ns.a1b2c.tmprl.cloud:7233"\napi_key = "cloud-key"\n'
        f'[profile.default.tls]\nserver_ca_cert_path = "{pki["ca"]}"\n'
    )
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))
    local = settings_for(tmp_path, "127.0.0.1:7233")
    assert connection_options(local) == {"tls": False}
    cloud = settings_for(tmp_path, "ns.a1b2c.tmprl.cloud:7233")
    options = connection_options(cloud)
    assert options["api_key"] == "cloud-key" and options["tls"].server_root_ca_cert == pki["ca"].read_bytes()
