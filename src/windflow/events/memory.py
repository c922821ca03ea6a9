"""In-process bus for embedded mode: a bounded, ordered log with live fan-out to subscribers.

Same contract as the Redis Streams bus: ``publish_many`` is idempotent by ``event_id`` (a relay retrying
after a failed "mark published" does not duplicate), and ``subscribe(after=...)`` replays what is retained
after a position and then follows live events.

Positions are ``"<epoch>-<n>"``: the bus's creation time in milliseconds, then a counter. Like Redis stream
ids they keep growing across a restart of the process, so a client resuming with an id from before the
restart is given everything the new bus holds instead of skipping it (``"0-0"`` means "from the start").
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence

from windflow.domain.events import Event
from windflow.events.base import parse_position


class MemoryBus:
    def __init__(self, *, maxlen: int = 10_000) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self._log: deque[tuple[int, Event]] = deque()
        self._maxlen = maxlen
        self._ids: dict[str, int] = {}  # event_id -> seq, for what the log retains
        self._seq = 0
        self._epoch = int(time.time() * 1000)
        self._cond = asyncio.Condition()
        self._closed = False

    def _pos(self, n: int) -> str:
        return f"{self._epoch}-{n}"

    def _parse(self, position: str | None) -> int:
        """The counter value a position stands for in this bus (0: before everything)."""
        if not position:
            return 0
        epoch, n = parse_position(position)
        if epoch < self._epoch:
            return 0  # "0-0", or an id from before this process started: all of this bus comes after it
        if epoch > self._epoch:
            return self._seq  # not from this bus (nor from the past): treat as "now"
        return n

    @property
    def _first(self) -> int:
        """Seq of the oldest retained event (``_seq + 1`` when the log is empty)."""
        return self._log[0][0] if self._log else self._seq + 1

    async def publish(self, event: Event) -> str:
        return (await self.publish_many([event]))[0]

    async def publish_many(self, events: Sequence[Event]) -> list[str]:
        if self._closed:
            raise RuntimeError("bus is closed")
        out = []
        async with self._cond:
            for event in events:
                existing = self._ids.get(event.event_id)
                if existing is not None:
                    out.append(self._pos(existing))
                    continue
                self._seq += 1
                self._log.append((self._seq, event))
                self._ids[event.event_id] = self._seq
                if len(self._log) > self._maxlen:
                    _, dropped = self._log.popleft()
                    self._ids.pop(dropped.event_id, None)
                out.append(self._pos(self._seq))
            self._cond.notify_all()
        return out

    def history(self) -> list[Event]:
        return [e for _, e in self._log]

    def _after(self, cursor: int, limit: int) -> list[tuple[str, Event]]:
        start = max(0, cursor + 1 - self._first)
        end = min(len(self._log), start + limit)
        return [(self._pos(self._log[i][0]), self._log[i][1]) for i in range(start, end)]

    async def read(self, *, after: str | None = None, limit: int = 100) -> list[tuple[str, Event]]:
        return self._after(self._parse(after), max(1, limit))

    async def last_position(self) -> str | None:
        return self._pos(self._seq) if self._seq else None

    async def missed(self, after: str) -> bool:
        epoch, _ = parse_position(after)
        if 0 < epoch < self._epoch:
            return True  # from a bus of an earlier process: what it published after `after` is gone
        return bool(self._log) and self._first > self._parse(after) + 1

    async def subscribe(self, *, after: str | None = None) -> AsyncIterator[tuple[str, Event]]:
        cursor = self._parse(after) if after is not None else self._seq
        while not self._closed:
            batch = self._after(cursor, 1000)
            if batch:
                for position, event in batch:
                    cursor = self._parse(position)
                    yield position, event
                continue
            async with self._cond:
                await self._cond.wait_for(functools.partial(self._closed_or_past, cursor))

    def _closed_or_past(self, cursor: int) -> bool:
        return self._closed or self._seq > cursor

    async def close(self) -> None:
        self._closed = True
        async with self._cond:
            self._cond.notify_all()
