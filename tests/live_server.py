"""A real uvicorn server on 127.0.0.1 serving a windflow app, in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from tests.servers import free_port


class LiveServer:
    def __init__(self, app: Any, *, port: int | None = None, log_level: str | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        # log_level given: uvicorn logs through the root logger as `windflow api` does (log_config=None)
        extra: dict[str, Any] = {"log_config": None, "access_log": True} if log_level else {}
        if log_level:  # undo what another server's default log_config set up in this process (own handlers and
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # propagate=False): records reach the root
                logger = logging.getLogger(name)
                logger.handlers.clear()
                logger.propagate = True
        from windflow.api.app import SERVER_OPTIONS  # served as `windflow api` serves it

        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level=log_level or "warning",
            lifespan="on",
            **{**SERVER_OPTIONS, **extra},
        )
        self.server = uvicorn.Server(config)
        self.server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # pytest owns signals
        self._task: asyncio.Task[None] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/ws"

    async def __aenter__(self) -> LiveServer:
        self._task = asyncio.create_task(self.server.serve())
        for _ in range(400):
            if self.server.started:
                return self
            if self._task.done():
                await self._task
                raise RuntimeError("uvicorn exited during startup")
            await asyncio.sleep(0.025)
        raise RuntimeError("uvicorn did not start")

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=15)
            if not done:
                self.server.force_exit = True
                await asyncio.wait({self._task}, timeout=5)
            if self._task.done() and not self._task.cancelled() and self._task.exception() is not None:
                raise self._task.exception()  # type: ignore[misc]
            assert done, "uvicorn took more than 15 s to shut down"


async def recv_json(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))  # type: ignore[no-any-return]


async def next_of(ws: ClientConnection, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    """The next message of one ``type`` (skipping pings and the like)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await recv_json(ws, max(0.01, deadline - loop.time()))
        if msg.get("type") == kind:
            return msg


async def events(ws: ClientConnection, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The next ``count`` event messages."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    out: list[dict[str, Any]] = []
    while len(out) < count:
        out.append(await next_of(ws, "event", max(0.01, deadline - loop.time())))
    return out


def open_ws(url: str, token: str | None = None, **kwargs: Any) -> Any:
    headers = dict(kwargs.pop("additional_headers", None) or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    # close_timeout: a client that leaves with unread messages stops reading, so it would wait the full
    # timeout for the server's closing frame queued behind them
    kwargs.setdefault("close_timeout", 1)
    return connect(url, additional_headers=headers or None, open_timeout=10, **kwargs)
