"""One Temporal client factory (data converter, interceptors) for worker, API and CLI."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.service import TLSConfig

from windflow.codec import EncryptionCodec, codec_from_keys
from windflow.settings import Settings
from windflow.tracing import temporal_interceptors

DATA_CONVERTER: DataConverter = pydantic_data_converter


def payload_codec(settings: Settings | None) -> EncryptionCodec | None:
    """The payload encryption codec (see :mod:`windflow.codec`): from ``WINDFLOW_CODEC_KEYS``, else the key
    generated in the data dir; ``None`` only with ``WINDFLOW_CODEC_DISABLED=true`` (or without settings)."""
    if settings is None:
        return None
    keys, key_id = settings.codec_key_map()
    return codec_from_keys(keys, key_id) if keys else None


def data_converter(settings: Settings | None = None) -> DataConverter:
    """Pydantic payloads, encrypted by the codec when keys are configured. Every client goes through here."""
    codec = payload_codec(settings)
    if codec is None:
        return DATA_CONVERTER
    return dataclasses.replace(DATA_CONVERTER, payload_codec=codec)


def connection_options(settings: Settings) -> dict[str, Any]:
    """``Client.connect`` keywords for TLS, mTLS and API keys: the Temporal client profile
    (``temporalio.envconfig``: TEMPORAL_* variables, the config file, ``WINDFLOW_TEMPORAL_PROFILE``), with
    each ``WINDFLOW_TEMPORAL_*`` setting taking precedence over the profile's value.

    A profile that names another address than the one windflow connects to (say the Temporal CLI's default
    profile points at a cloud namespace while `windflow up` runs its own dev server) lends neither its TLS
    settings nor its API key: they belong to that other server."""
    from temporalio.envconfig import ClientConfigProfile

    profile = ClientConfigProfile.load(profile=settings.temporal_profile).to_client_connect_config()
    if profile.get("target_host") and profile["target_host"] != settings.temporal_address:
        profile = {}
    options: dict[str, Any] = {}
    if profile.get("rpc_metadata"):
        options["rpc_metadata"] = dict(profile["rpc_metadata"])
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else profile.get("api_key")
    if api_key:
        options["api_key"] = api_key
    base = profile.get("tls", False)
    base_config = base if isinstance(base, TLSConfig) else None

    def pem(path: Any) -> bytes | None:
        return path.expanduser().read_bytes() if path is not None else None

    ours = {
        "server_root_ca_cert": pem(settings.temporal_tls_ca),
        "client_cert": pem(settings.temporal_tls_cert),
        "client_private_key": pem(settings.temporal_tls_key),
        "domain": settings.temporal_tls_server_name,
    }
    wanted = settings.temporal_tls
    if wanted is None:
        wanted = bool(base) or bool(api_key) or any(v is not None for v in ours.values())
    if wanted:

        def field(name: str) -> Any:  # ours, else the profile's
            value = ours[name]
            return value if value is not None else getattr(base_config, name, None)

        config = TLSConfig(
            server_root_ca_cert=field("server_root_ca_cert"),
            client_cert=field("client_cert"),
            client_private_key=field("client_private_key"),
            domain=field("domain"),
        )
        options["tls"] = config if any(field(name) is not None for name in ours) else True
    else:
        options["tls"] = False
    return options


async def connect(
    settings: Settings, *, interceptors: Sequence[Interceptor] = (), identity: str | None = None, **kwargs: Any
) -> Client:
    from windflow.metrics import default_runtime

    kwargs.setdefault("runtime", default_runtime())  # the SDK core's log lines through Python logging
    for key, value in connection_options(settings).items():
        kwargs.setdefault(key, value)
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        interceptors=[*temporal_interceptors(), *interceptors],  # tracing + request id; workers inherit them
        identity=identity,
        **kwargs,
    )


class LazyClient:
    """Connects on first use and again after a failure, so the API starts while Temporal is still down."""

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self._settings = settings
        self._client = client
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> Client | None:
        return self._client

    async def get(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                self._client = await connect(self._settings, identity="windflow-api")
            return self._client
