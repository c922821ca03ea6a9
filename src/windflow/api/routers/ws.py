"""``GET /api/v1/ws``: live events over a WebSocket, resumable by stream position.

Protocol (JSON text frames)
    connect  ``/api/v1/ws?types=CONFIG_CHANGED,HEALTH_CHECK&services=db&last_event_id=<id>``
             token: ``?token=`` or ``Authorization: Bearer`` or, within ``ws_auth_timeout`` seconds, a first
             message ``{"type": "auth", "token": "..."}``. ``types``/``services`` repeat or take commas.
             ``last_event_id`` (or header ``Last-Event-ID``): replay everything retained after it, then live.
    server   ``{"type": "subscribed", "types": [...]|null, "services": [...]|null, "position": id|null}``
             ``{"type": "event", "id": "<position>", "event": {event_id, event_type, timestamp, data}}``
             ``{"type": "ping", "ts": "..."}`` every ``ws_heartbeat`` seconds
             ``{"type": "gap", ...}`` the resume point is older than retention: some events are gone
             ``{"type": "lagging", "last_event_id": id, ...}`` then close 4008: too far behind, resume by id
             ``{"type": "error", "message": ...}`` a client message was not understood
    client   ``{"type": "subscribe", "types": [...]|null, "services": [...]|null}`` changes the filter
             ``{"type": "ping"}`` → ``{"type": "pong"}``; anything else gets an ``error`` message.
    close    1000 normal · 1001 server shutting down · 1013 event bus unavailable, retry ·
             4400 bad request · 4401 not authenticated (also: the token expired or was revoked, the session
             was logged out, the password changed) · 4403 permission missing (also: lost since connecting) ·
             4008 too slow

An open connection's token is checked again every ``ws_revalidate_interval`` seconds (2 by default): a logout,
password change, role change, disabled account or revoked API token closes it within that time.

Events arrive in stream order without duplicates; resume with the ``id`` of the last one received.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from windflow.api.errors import ApiError
from windflow.api.event_hub import EventFilter, EventHub, QueueItem, Subscription, build_filter, encode_event
from windflow.api.resources import Resources
from windflow.api.security import authenticate, revalidator
from windflow.auth.permissions import Permission, Principal
from windflow.domain.errors import WindflowError
from windflow.events.base import InvalidPosition, is_after, parse_position

log = logging.getLogger("windflow.api.ws")

router = APIRouter(tags=["events"])

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN = 1013
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_SLOW = 4008

REPLAY_BATCH = 500
HUB_START_TIMEOUT = 5.0


class _Closing(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Gone(Exception):
    """The client went away (or stopped reading for longer than the send timeout)."""


def _reason(text: str) -> str:
    return text.encode()[:123].decode(errors="ignore")  # a close reason is at most 123 bytes


def _bearer(websocket: WebSocket) -> str | None:
    token = websocket.query_params.get("token") or websocket.query_params.get("access_token")
    if token:
        return token
    header = websocket.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def _receive_message(websocket: WebSocket) -> Any:
    """The next client message parsed as JSON (``None`` if it is not JSON); WebSocketDisconnect when gone."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    raw = message.get("text") if message.get("text") is not None else message.get("bytes")
    try:
        return json.loads(raw) if raw is not None else None
    except ValueError:
        return None


async def _authenticate(websocket: WebSocket, timeout: float) -> tuple[Principal, str]:
    token = _bearer(websocket)
    if token is None:
        try:
            async with asyncio.timeout(timeout):
                message = await _receive_message(websocket)
        except TimeoutError:
            raise _Closing(
                CLOSE_UNAUTHORIZED,
                "authentication required: ?token=, Authorization: Bearer, "
                'or a first message {"type": "auth", "token": ...}',
            ) from None
        if isinstance(message, dict) and message.get("type") == "auth" and isinstance(message.get("token"), str):
            token = message["token"]
        else:
            raise _Closing(
                CLOSE_UNAUTHORIZED, 'authentication required: first message must be {"type": "auth", "token": ...}'
            )
    try:
        return await authenticate(websocket, token), token
    except ApiError as exc:
        raise _Closing(CLOSE_UNAUTHORIZED, f"not authenticated: {exc.message}") from None
    except WindflowError as exc:
        raise _Closing(CLOSE_UNAUTHORIZED, f"not authenticated: {exc.message}") from None


class EventStream:
    """One client connection: replay, then live events from the hub, heartbeats, client messages."""

    def __init__(
        self,
        websocket: WebSocket,
        resources: Resources,
        hub: EventHub,
        flt: EventFilter,
        principal: Principal,
        token: str,
    ) -> None:
        self.ws = websocket
        self.token = token
        self.revalidator = revalidator(websocket.app, resources.settings.ws_revalidate_interval)
        self.bus = resources.bus
        self.settings = resources.settings
        self.hub = hub
        self.filter = flt
        self.principal = principal
        self.sub: Subscription | None = None
        self.cursor: str | None = None  # position of the last event sent (or the start position)
        self.sent = 0
        self._early: list[QueueItem] = []  # replies to client messages that came during the replay

    # ----------------------------------------------------------------- sending

    async def send(self, text: str) -> None:
        try:
            async with asyncio.timeout(self.settings.ws_send_timeout):
                await self.ws.send_text(text)
        except TimeoutError:
            raise _Gone("send timed out") from None
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise _Gone(str(exc)) from None

    async def send_json(self, body: dict[str, Any]) -> None:
        await self.send(json.dumps(body))

    def _control(self, body: dict[str, Any]) -> None:
        """A reply from the receiving side, sent by the sender (one writer per socket)."""
        item: QueueItem = (None, json.dumps(body))
        if self.sub is not None:
            self.sub.offer(item)
        elif len(self._early) < 100:
            self._early.append(item)

    def _register(self) -> None:
        self.sub = self.hub.register(self.filter)
        for item in self._early:
            self.sub.offer(item)
        self._early.clear()

    def _subscribed(self) -> dict[str, Any]:
        return {"type": "subscribed", **self.filter.describe(), "position": self.cursor}

    # ----------------------------------------------------------------- the two halves

    async def sender(self, last_event_id: str | None) -> None:
        if last_event_id is not None:
            self.cursor = last_event_id
            await self.send_json(self._subscribed())
            last = await self.bus.last_position()
            resume = parse_position(last_event_id)
            if resume != (0, 0) and (last is None or resume > parse_position(last)):
                # not a position of this log (it was reset, e.g. Redis lost its data): everything is new
                self.cursor = "0-0"
                await self.send_json(
                    {
                        "type": "gap",
                        "after": last_event_id,
                        "message": "unknown position (the event log was reset); replaying all retained events",
                    }
                )
            elif await self.bus.missed(last_event_id):
                await self.send_json(
                    {
                        "type": "gap",
                        "after": last_event_id,
                        "message": "some events after this id are no longer retained; showing all that remain",
                    }
                )
            await self.replay()
        else:
            self._register()
            self.cursor = self.hub.position or "0-0"
            await self.send_json(self._subscribed())
        await self.live()

    async def replay(self) -> None:
        """Send what the bus retains after the cursor; register with the hub once nearly caught up, then read
        once more: no event can fall between the replay and the live queue (duplicates are skipped by id)."""
        while True:
            batch = await self.bus.read(after=self.cursor, limit=REPLAY_BATCH)
            for position, event in batch:
                self.cursor = position
                if self.filter.matches(event):
                    await self.send(encode_event(position, event))
                    self.sent += 1
            if self.sub is not None and not batch:
                return
            if self.sub is None and len(batch) < REPLAY_BATCH:
                self._register()
            await asyncio.sleep(0)  # a long replay must not starve the other connections

    def _expiry(self) -> float:
        """Monotonic deadline at which the presented token expires (the connection is closed with 4401)."""
        expires_at = self.principal.expires_at
        if expires_at is None:
            return float("inf")
        return time.monotonic() + (expires_at - datetime.now(UTC)).total_seconds()

    async def live(self) -> None:
        assert self.sub is not None
        heartbeat = self.settings.ws_heartbeat
        next_ping = time.monotonic() + heartbeat
        expiry = self._expiry()
        while True:
            if self.sub.overflowed:
                await self._too_slow()
            now = time.monotonic()
            if now >= expiry:
                raise _Closing(CLOSE_UNAUTHORIZED, "token expired; reconnect with a fresh token and last_event_id")
            if next_ping <= now:
                await self.send_json({"type": "ping", "ts": datetime.now(UTC).isoformat()})
                next_ping = time.monotonic() + heartbeat
                continue
            try:
                position, text = self.sub.queue.get_nowait()  # a burst: no timer per message
            except asyncio.QueueEmpty:
                try:
                    async with asyncio.timeout(min(next_ping, expiry) - now):
                        position, text = await self.sub.queue.get()
                except TimeoutError:
                    continue
            if self.sub.overflowed:
                await self._too_slow()
            if position is not None:
                if not is_after(position, self.cursor):
                    continue  # already sent by the replay
                self.cursor = position
                self.sent += 1
            await self.send(text)

    async def guard(self) -> None:
        """Beside the sender (never in its way: a check reads the store), until the token is no longer good."""
        while True:
            await asyncio.sleep(self.settings.ws_revalidate_interval)
            await self.revalidate()

    async def revalidate(self) -> None:
        """Is the token still good, with the permissions this stream was opened with? Else close (4401 / 4403).
        A store that cannot answer now closes nothing: the next check asks again."""
        try:
            principal = await self.revalidator.check(self.ws, self.token)
        except ApiError as exc:
            raise _Closing(CLOSE_UNAUTHORIZED, f"not authenticated: {exc.message}") from None
        except Exception as exc:
            log.warning("could not re-check a WebSocket token: %s: %s", type(exc).__name__, exc)
            return
        if not principal.can(Permission.SERVICES_READ.value):
            raise _Closing(CLOSE_FORBIDDEN, f"permission {Permission.SERVICES_READ.value!r} required")
        if not self.principal.permissions <= principal.permissions:
            wanted = self.filter.describe()
            try:  # permissions shrank: the same subscription, as the caller may now have it (AUDIT needs audit:read)
                flt = build_filter(wanted["types"], wanted["services"], principal)
            except (ValueError, PermissionError):
                raise _Closing(CLOSE_FORBIDDEN, "permissions changed; reconnect") from None
            self.filter = flt
            if self.sub is not None:
                self.sub.filter = flt
        self.principal = principal

    async def _too_slow(self) -> None:
        assert self.sub is not None
        behind = self.sub.queue.qsize()
        while not self.sub.queue.empty():  # drop the backlog; the client re-reads it from the stream
            self.sub.queue.get_nowait()
        await self.send_json(
            {
                "type": "lagging",
                "last_event_id": self.cursor,
                "behind": behind,
                "message": f"client too slow: more than {self.hub.queue_size} events behind; "
                "reconnect with last_event_id to resume",
            }
        )
        raise _Closing(CLOSE_TOO_SLOW, "too slow; reconnect with last_event_id to resume")

    async def receiver(self) -> None:
        while True:
            try:
                message = await _receive_message(self.ws)
            except (WebSocketDisconnect, RuntimeError):
                return
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "subscribe":
                try:
                    flt = build_filter(message.get("types"), message.get("services"), self.principal)
                except (ValueError, PermissionError) as exc:
                    self._control({"type": "error", "message": str(exc)})
                    continue
                self.filter = flt
                if self.sub is not None:
                    self.sub.filter = flt
                self._control(self._subscribed())
            elif kind == "ping":
                self._control({"type": "pong", "ts": datetime.now(UTC).isoformat()})
            elif kind in ("pong", "auth"):
                continue
            else:
                self._control({"type": "error", "message": 'expected {"type": "subscribe" | "ping" | "pong"}'})

    async def serve(self, last_event_id: str | None) -> tuple[int, str] | None:
        """Run until either side ends; returns the close code and reason (None: the client left)."""
        sender = asyncio.create_task(self.sender(last_event_id))
        receiver = asyncio.create_task(self.receiver())
        guard = asyncio.create_task(self.guard())
        try:
            done, _ = await asyncio.wait({sender, receiver, guard}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, receiver, guard):
                task.cancel()
            await asyncio.gather(sender, receiver, guard, return_exceptions=True)
            self.hub.unregister(self.sub)
        if guard in done and not guard.cancelled():
            closing = guard.exception()
            if isinstance(closing, _Closing):
                return closing.code, closing.reason
        if sender in done and not sender.cancelled():
            exc = sender.exception()
            if isinstance(exc, _Closing):
                return exc.code, exc.reason
            if isinstance(exc, _Gone):
                return None
            if exc is not None:
                log.warning("event stream failed: %s: %s", type(exc).__name__, exc)
                return CLOSE_TRY_AGAIN, "event bus unavailable; reconnect with last_event_id"
        return None


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        async with asyncio.timeout(2):
            await websocket.close(code=code, reason=_reason(reason))
    except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
        pass


@router.websocket("/ws", name="events_ws")
async def events_ws(websocket: WebSocket) -> None:
    """Live events (see the module docstring for the protocol). Needs ``services:read``."""
    resources: Resources = websocket.app.state.resources
    hub: EventHub | None = getattr(websocket.app.state, "event_hub", None)
    await websocket.accept()
    try:
        principal, token = await _authenticate(websocket, resources.settings.ws_auth_timeout)
        if not principal.can(Permission.SERVICES_READ.value):
            raise _Closing(CLOSE_FORBIDDEN, f"permission {Permission.SERVICES_READ.value!r} required")
        params = websocket.query_params
        try:
            flt = build_filter(
                params.getlist("types") + params.getlist("type"),
                params.getlist("services") + params.getlist("service"),
                principal,
            )
        except PermissionError as exc:
            raise _Closing(CLOSE_FORBIDDEN, str(exc)) from None
        except ValueError as exc:
            raise _Closing(CLOSE_BAD_REQUEST, str(exc)) from None
        last_event_id = params.get("last_event_id") or websocket.headers.get("last-event-id") or None
        if last_event_id is not None:
            try:
                parse_position(last_event_id)
            except InvalidPosition as exc:
                raise _Closing(CLOSE_BAD_REQUEST, str(exc)) from None
        if hub is None:
            raise _Closing(CLOSE_TRY_AGAIN, "event stream not running")
        try:
            await asyncio.wait_for(hub.started.wait(), timeout=HUB_START_TIMEOUT)
        except TimeoutError:
            raise _Closing(CLOSE_TRY_AGAIN, "event bus unavailable; retry shortly") from None
    except _Closing as exc:
        await _close(websocket, exc.code, exc.reason)
        return
    except WebSocketDisconnect:
        return
    stream = EventStream(websocket, resources, hub, flt, principal, token)
    try:
        outcome = await stream.serve(last_event_id)
    except asyncio.CancelledError:
        await _close(websocket, CLOSE_GOING_AWAY, "server shutting down")
        raise
    if outcome is not None:
        await _close(websocket, *outcome)


events_ws.permission = Permission.SERVICES_READ  # type: ignore[attr-defined]  # for the route/permission matrix
