"""Ports of the event bus. Implementations: :mod:`windflow.events.memory` and :mod:`windflow.events.redis_streams`.

A *position* is where an event sits in the bus's ordered log, written like a Redis stream id ``"<ms>-<seq>"``
(the in-process bus uses ``"<n>-0"``), so a client resumes the same way on both buses. Positions grow
strictly in publish order; compare them with :func:`parse_position`, never as strings.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from windflow.domain.events import Event

_POSITION = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")


class InvalidPosition(ValueError):
    """A position that is not ``<int>`` or ``<int>-<int>``."""


def parse_position(position: str) -> tuple[int, int]:
    """``"1700000000000-3"`` → ``(1700000000000, 3)``; ``"42"`` → ``(42, 0)``. Raises :class:`InvalidPosition`."""
    match = _POSITION.match(position.strip())
    if not match:
        raise InvalidPosition(f"{position!r} is not a stream position like '1700000000000-0'")
    return int(match.group(1)), int(match.group(2) or 0)


def is_after(position: str, cursor: str | None) -> bool:
    """True when ``position`` comes strictly after ``cursor`` (everything is after ``None``)."""
    return cursor is None or parse_position(position) > parse_position(cursor)


@runtime_checkable
class EventPublisher(Protocol):
    async def publish(self, event: Event) -> str:
        """Publish one event; returns its position in the bus."""
        ...

    async def publish_many(self, events: Sequence[Event]) -> list[str]:
        """Publish in order, atomically and idempotently: an ``event_id`` already in the bus is not added again
        (its existing position is returned), so a relay that retries after a crash cannot duplicate."""
        ...


@runtime_checkable
class EventSubscriber(Protocol):
    def subscribe(self, *, after: str | None = None) -> AsyncIterator[tuple[str, Event]]:
        """Everything after position ``after`` that is still retained, then live events, in order.

        ``after=None`` starts at the end (live events only); ``after="0-0"`` replays all that is retained.
        Raises when the bus is unreachable; the caller resumes with the last position it saw.
        """
        ...


@runtime_checkable
class EventHistory(Protocol):
    async def read(self, *, after: str | None = None, limit: int = 100) -> list[tuple[str, Event]]:
        """Up to ``limit`` retained events after ``after`` (``None``: from the oldest retained), in order."""
        ...

    async def last_position(self) -> str | None:
        """Position of the newest event, ``None`` when the bus is empty."""
        ...

    async def missed(self, after: str) -> bool:
        """True when events published after ``after`` have already been trimmed away (retention), i.e. a
        client resuming from ``after`` cannot get everything it missed."""
        ...


@runtime_checkable
class EventBus(EventPublisher, EventSubscriber, EventHistory, Protocol):
    async def close(self) -> None: ...
