"""One Temporal client factory (data converter, interceptors) for worker, API and CLI."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter

from windflow.settings import Settings

DATA_CONVERTER: DataConverter = pydantic_data_converter


def data_converter(settings: Settings | None = None) -> DataConverter:  # noqa: ARG001 - codec arrives later
    return DATA_CONVERTER


async def connect(
    settings: Settings, *, interceptors: Sequence[Interceptor] = (), identity: str | None = None, **kwargs: Any
) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        interceptors=list(interceptors),
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
