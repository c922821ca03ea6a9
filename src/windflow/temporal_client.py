"""One Temporal client factory (data converter, interceptors) for worker, API and CLI."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter

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


async def connect(
    settings: Settings, *, interceptors: Sequence[Interceptor] = (), identity: str | None = None, **kwargs: Any
) -> Client:
    from windflow.metrics import default_runtime

    kwargs.setdefault("runtime", default_runtime())  # the SDK core's log lines through Python logging
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
