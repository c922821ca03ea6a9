"""One bus reader per API process, fanning events out to every WebSocket client's bounded queue.

The hub never waits for a client: it puts each event into the matching clients' queues without blocking and
drops (marks *overflowed*) a client whose queue is full. That client's own sender then tells it so and closes
the connection; it resumes by id. So one slow dashboard cannot delay the others, and memory per client is
bounded by ``ws_queue_size``. Each event is serialized once, not once per client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from windflow.auth.permissions import Permission, Principal
from windflow.domain.backoff import reconnect_delay
from windflow.domain.events import Event, EventType
from windflow.events.base import EventBus

log = logging.getLogger("windflow.api.events")

MAX_FILTER_ITEMS = 200


def event_service(event: Event) -> str | None:
    """The service an event is about: ``data.service_id``, or an initialization's current ``component``."""
    value = event.data.get("service_id") or event.data.get("component")
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class EventFilter:
    """What one client wants. ``None`` means "all"; AUDIT events also need ``audit`` (the audit:read right)."""

    types: frozenset[EventType] | None = None
    services: frozenset[str] | None = None
    audit: bool = False

    def matches(self, event: Event) -> bool:
        if event.event_type == EventType.AUDIT and not self.audit:
            return False
        if self.types is not None and event.event_type not in self.types:
            return False
        return self.services is None or event_service(event) in self.services

    def describe(self) -> dict[str, list[str] | None]:
        return {
            "types": sorted(t.value for t in self.types) if self.types is not None else None,
            "services": sorted(self.services) if self.services is not None else None,
        }


def _split(values: list[str] | Any) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("must be a list of strings")
    out = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if len(out) > MAX_FILTER_ITEMS:
        raise ValueError(f"at most {MAX_FILTER_ITEMS} items")
    return out or None


def build_filter(types: list[str] | Any, services: list[str] | Any, principal: Principal) -> EventFilter:
    """Raises ValueError (bad request) or PermissionError (AUDIT asked without audit:read)."""
    names = _split(types)
    event_types: frozenset[EventType] | None = None
    if names is not None:
        try:
            event_types = frozenset(EventType(n.upper()) for n in names)
        except ValueError:
            known = ", ".join(t.value for t in EventType)
            raise ValueError(f"unknown event type in {names}; known: {known}") from None
    can_audit = principal.can(Permission.AUDIT_READ.value)
    if event_types is not None and EventType.AUDIT in event_types and not can_audit:
        raise PermissionError("AUDIT events need the audit:read permission")
    service_ids = _split(services)
    return EventFilter(
        types=event_types, services=frozenset(service_ids) if service_ids is not None else None, audit=can_audit
    )


def encode_event(position: str, event: Event) -> str:
    """The WebSocket (and ``GET /events``) message for one event: its stream position plus the envelope."""
    return '{"type":"event","id":' + json.dumps(position) + ',"event":' + event.model_dump_json() + "}"


# (position, text); position None marks a control message (pong, acknowledgements) that moves no cursor
QueueItem = tuple[str | None, str]


class Subscription:
    __slots__ = ("filter", "queue", "overflowed")

    def __init__(self, flt: EventFilter, size: int) -> None:
        self.filter = flt
        self.queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=size)
        self.overflowed = False

    def offer(self, item: QueueItem) -> bool:
        if self.overflowed:
            return False
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True
            return False
        return True


class EventHub:
    def __init__(self, bus: EventBus, *, queue_size: int = 1000) -> None:
        self._bus = bus
        self.queue_size = queue_size
        self._subs: set[Subscription] = set()
        self.position: str | None = None  # position of the last event dispatched (the live cursor)
        self.started = asyncio.Event()  # set once the hub follows the bus
        self.dispatched = 0
        self.dropped = 0  # clients disconnected for being too slow
        self.failures = 0

    @property
    def clients(self) -> int:
        return len(self._subs)

    def register(self, flt: EventFilter) -> Subscription:
        """Start queueing live events for a client. Every event dispatched after this call reaches the queue
        (if it matches); every event before it is at or before ``self.position``."""
        sub = Subscription(flt, self.queue_size)
        self._subs.add(sub)
        return sub

    def unregister(self, sub: Subscription | None) -> None:
        if sub is not None:
            self._subs.discard(sub)

    def dispatch(self, position: str, event: Event) -> None:
        self.position = position
        self.dispatched += 1
        text: str | None = None
        for sub in tuple(self._subs):
            if not sub.filter.matches(event):
                continue
            if text is None:
                text = encode_event(position, event)
            if not sub.offer((position, text)):
                self._subs.discard(sub)
                self.dropped += 1

    async def run(self) -> None:
        """Follow the bus forever; after an outage resume from the last position, so live clients miss nothing
        that the bus kept."""
        while True:
            try:
                if self.position is None:
                    self.position = await self._bus.last_position()
                self.started.set()
                # "0-0" when the bus was empty: then nothing published since can be skipped
                async for position, event in self._bus.subscribe(after=self.position or "0-0"):
                    if self.failures:
                        log.info("event hub reconnected to the bus")
                        self.failures = 0
                    self.dispatch(position, event)
                    # let the clients' senders run between events: a client that keeps up drains its queue as
                    # a burst arrives, so only one that really cannot keep up overflows
                    await asyncio.sleep(0)
                return  # the bus was closed
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                if self.failures == 1:
                    log.warning("event hub lost the bus (%s: %s); retrying", type(exc).__name__, exc)
                await asyncio.sleep(reconnect_delay(self.failures))
