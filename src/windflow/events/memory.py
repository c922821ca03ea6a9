"""In-process bus for embedded mode: a bounded, ordered log with live fan-out to subscribers."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence

from windflow.domain.events import Event


class MemoryBus:
    """Positions are ``"<n>-0"`` (like Redis stream ids) so clients resume the same way on both buses."""

    def __init__(self, *, maxlen: int = 10_000) -> None:
        self._log: deque[tuple[int, Event]] = deque(maxlen=maxlen)
        self._seq = 0
        self._cond = asyncio.Condition()
        self._closed = False

    @staticmethod
    def _pos(n: int) -> str:
        return f"{n}-0"

    @staticmethod
    def _parse(position: str | None) -> int:
        if not position:
            return 0
        head = position.split("-", 1)[0]
        return int(head) if head.isdigit() else 0

    async def publish(self, event: Event) -> str:
        return (await self.publish_many([event]))[0]

    async def publish_many(self, events: Sequence[Event]) -> list[str]:
        out = []
        async with self._cond:
            for event in events:
                self._seq += 1
                self._log.append((self._seq, event))
                out.append(self._pos(self._seq))
            self._cond.notify_all()
        return out

    def history(self) -> list[Event]:
        return [e for _, e in self._log]

    async def subscribe(self, *, after: str | None = None) -> AsyncIterator[tuple[str, Event]]:
        cursor = self._parse(after) if after is not None else self._seq
        while not self._closed:
            batch = [(n, e) for n, e in self._log if n > cursor]
            if batch:
                for n, event in batch:
                    cursor = n
                    yield self._pos(n), event
                continue
            async with self._cond:
                await self._cond.wait_for(lambda c=cursor: self._closed or self._seq > c)

    async def close(self) -> None:
        self._closed = True
        async with self._cond:
            self._cond.notify_all()
