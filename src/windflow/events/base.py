"""Ports of the event bus. Implementations: :mod:`windflow.events.memory` and Redis Streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from windflow.domain.events import Event


@runtime_checkable
class EventPublisher(Protocol):
    async def publish(self, event: Event) -> str:
        """Publish one event; returns its position in the bus (stream id)."""
        ...

    async def publish_many(self, events: Sequence[Event]) -> list[str]: ...


class StreamEntry(Protocol):
    position: str
    event: Event


@runtime_checkable
class EventSubscriber(Protocol):
    def subscribe(self, *, after: str | None = None) -> AsyncIterator[tuple[str, Event]]:
        """Everything after position ``after`` that is still retained, then live events, in order."""
        ...


class EventBus(EventPublisher, EventSubscriber, Protocol):
    async def close(self) -> None: ...
