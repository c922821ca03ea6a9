"""Redis Streams bus: the production event log, with durable consumer groups.

Stream layout
    One stream (``settings.events_stream``, e.g. ``windflow:events``) holds every event in publish order;
    ``XADD ... MAXLEN ~ N`` bounds retention. Each entry carries the fields ``event_id``, ``type``, ``prev``
    (the id of the entry before it, so a resuming reader can tell whether anything it missed was trimmed)
    and ``event`` (the JSON envelope). The entry id is the event's *position*.

Exactly once into the stream
    The outbox relay may publish a batch and crash (or lose the database) before it marks the rows published;
    it then publishes the same rows again. ``publish_many`` therefore runs one Lua script that, atomically,
    skips every ``event_id`` already published (a hash ``<stream>:ids`` of event_id → position, trimmed FIFO
    through the list ``<stream>:ids:order`` to the stream's own retention) and XADDs the rest in order. So the
    stream never holds an event twice while it retains it, whatever the relay does; readers need no de-dup.

    Rejected alternative: explicit ids derived from the outbox row id (``XADD <row_id>-0``). Row ids are
    assigned at insert, not at commit; on PostgreSQL a transaction holding id 10 can commit after id 11 was
    published, and ``XADD 10-0`` would then be refused (ids must grow), losing the event.

    The dedup state lives in Redis next to the stream, so a Redis that loses its data (no persistence) loses
    both together and the relay's re-publishing of still-pending rows is correct, not a duplicate.

Exactly once to an acknowledging consumer group
    :class:`StreamConsumer` reads with XREADGROUP and acknowledges with XACK only after the handler returned.
    Since each event is one entry, a group sees it once; an entry whose consumer died before XACK stays in the
    group's pending list and is delivered again (same ``event_id``): first to the same consumer when it
    restarts (it reads its own pending entries first), else to another one by XAUTOCLAIM after
    ``claim_idle`` seconds. After ``max_deliveries`` it goes to the dead-letter stream ``<stream>:dead``.
    A handler that performs an external side effect and can crash between the effect and the ACK must be
    idempotent on ``event_id`` (the usual at-least-once boundary of any broker).

Cluster note: the keys are not hash-tagged; name the stream ``{windflow}:events`` on Redis Cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.typing import EncodableT, FieldT

from windflow.domain.backoff import reconnect_delay
from windflow.domain.events import Event
from windflow.events.base import parse_position

log = logging.getLogger("windflow.events.redis")

MAX_SCRIPT_BATCH = 500

_PUBLISH = """
local stream, ids, order = KEYS[1], KEYS[2], KEYS[3]
local maxlen, keep = ARGV[1], tonumber(ARGV[2])
local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
local prev = '0-0'
if #last > 0 then prev = last[1][1] end
local out = {}
local added = 0
for i = 3, #ARGV, 3 do
  local eid = ARGV[i]
  local pos = redis.call('HGET', ids, eid)
  if not pos then
    pos = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
                     'event_id', eid, 'type', ARGV[i + 1], 'prev', prev, 'event', ARGV[i + 2])
    redis.call('HSET', ids, eid, pos)
    redis.call('RPUSH', order, eid)
    prev = pos
    added = added + 1
  end
  out[#out + 1] = pos
end
if added > 0 then
  local excess = redis.call('LLEN', order) - keep
  if excess > 0 then
    local old = redis.call('LPOP', order, excess)
    for _, e in ipairs(old) do redis.call('HDEL', ids, e) end
  end
end
return out
"""

UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def normalize(position: str) -> str:
    ms, seq = parse_position(position)
    return f"{ms}-{seq}"


def decode(fields: dict[str, str]) -> Event | None:
    try:
        return Event.model_validate_json(fields["event"])
    except (KeyError, ValidationError, ValueError):
        return None


def connect(url: str, *, block_ms: int = 2000) -> Redis:
    """A client whose reads outlast a blocking XREAD, and which fails fast (and briefly retries) when Redis is
    away, so callers' own retry loops stay in charge."""
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=block_ms / 1000 + 5,
        socket_connect_timeout=2,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        health_check_interval=30,
    )


class RedisStreamsBus:
    """The event bus on one Redis stream. ``close()`` closes the client (``aclose``)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        stream: str = "windflow:events",
        maxlen: int = 100_000,
        block_ms: int = 2000,
        claim_idle: float = 30.0,
        max_deliveries: int = 5,
        client: Redis | None = None,
    ) -> None:
        if client is None and url is None:
            raise ValueError("give a Redis url or client")
        self.redis: Redis = client if client is not None else connect(url or "", block_ms=block_ms)
        self.stream = stream
        self.maxlen = maxlen
        self.block_ms = block_ms
        self.consumer_defaults: dict[str, Any] = {
            "claim_idle": claim_idle,
            "max_deliveries": max_deliveries,
            "block_ms": block_ms,
        }
        self._publish = self.redis.register_script(_PUBLISH)
        self._closed = False

    @property
    def keys(self) -> list[str]:
        """Every key this bus owns (stream, dedup state, dead letters), e.g. to clean up after a test."""
        return [self.stream, f"{self.stream}:ids", f"{self.stream}:ids:order", f"{self.stream}:dead"]

    # ------------------------------------------------------------------ publish

    async def publish(self, event: Event) -> str:
        return (await self.publish_many([event]))[0]

    async def publish_many(self, events: Sequence[Event]) -> list[str]:
        out: list[str] = []
        for start in range(0, len(events), MAX_SCRIPT_BATCH):
            chunk = events[start : start + MAX_SCRIPT_BATCH]
            args: list[Any] = [self.maxlen, self.maxlen]
            for event in chunk:
                args += [event.event_id, event.event_type.value, event.model_dump_json()]
            result = await self._publish(keys=self.keys[:3], args=args)
            out.extend(str(p) for p in result)
        return out

    # ------------------------------------------------------------------ read

    async def read(self, *, after: str | None = None, limit: int = 100) -> list[tuple[str, Event]]:
        """Fewer than ``limit`` events back means the end of the stream (undecodable entries are skipped)."""
        limit = max(1, limit)
        out: list[tuple[str, Event]] = []
        start = f"({normalize(after)}" if after else "-"
        while len(out) < limit:
            want = limit - len(out)
            entries = _range(await self.redis.xrange(self.stream, min=start, max="+", count=want))
            out += [(pos, ev) for pos, fields in entries if (ev := self._decode(pos, fields)) is not None]
            if len(entries) < want:
                break
            start = f"({entries[-1][0]}"
        return out

    async def last_position(self) -> str | None:
        entries = _range(await self.redis.xrevrange(self.stream, max="+", min="-", count=1))
        return entries[0][0] if entries else None

    async def missed(self, after: str) -> bool:
        cursor = parse_position(after)
        first = _range(await self.redis.xrange(self.stream, min="-", max="+", count=1))
        if not first:
            return False
        pos, fields = first[0]
        if parse_position(pos) <= cursor:
            return False
        return parse_position(fields.get("prev") or "0-0") > cursor

    async def subscribe(self, *, after: str | None = None) -> AsyncIterator[tuple[str, Event]]:
        cursor = normalize(after) if after is not None else (await self.last_position() or "0-0")
        while not self._closed:
            response = await self.redis.xread({self.stream: cursor}, count=1000, block=self.block_ms)
            for pos, fields in _entries(response):
                cursor = pos
                event = self._decode(pos, fields or {})
                if event is not None:
                    yield pos, event

    def _decode(self, pos: str, fields: dict[str, str]) -> Event | None:
        event = decode(fields)
        if event is None:
            log.warning("skipping undecodable entry %s in %s", pos, self.stream)
        return event

    # ------------------------------------------------------------------ misc

    def consumer(self, group: str, name: str, **options: Any) -> StreamConsumer:
        """A durable consumer (e.g. a notification channel) in ``group``; ``name`` must be stable across
        restarts of the same member so it gets back what it was given and never acknowledged."""
        return StreamConsumer(self.redis, self.stream, group, name, **{**self.consumer_defaults, **options})

    async def acquire_lease(self, name: str, ttl: float) -> bool:
        """True for the one caller (across processes) that takes ``name`` for ``ttl`` seconds."""
        return bool(await self.redis.set(f"{self.stream}:lease:{name}", "1", nx=True, px=max(1, int(ttl * 1000))))

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        self._closed = True
        await self.redis.aclose()


# ---------------------------------------------------------------------- consumer groups


@dataclass
class Delivery:
    position: str
    event: Event | None  # None: the entry could not be decoded (it goes to the dead-letter stream)
    deliveries: int
    fields: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Event], Awaitable[object]]  # what it returns is not used


class StreamConsumer:
    """One named consumer of a consumer group: XREADGROUP, XACK, XAUTOCLAIM, dead letters.

    ``fetch()`` returns, in this order of preference: entries this consumer was given before it restarted
    and never acknowledged; entries other consumers left unacknowledged for ``claim_idle`` seconds
    (XAUTOCLAIM); new entries (blocking up to ``block_ms``). ``run(handler)`` acknowledges after the handler
    returns, leaves failures pending for redelivery, and dead-letters an entry delivered more than
    ``max_deliveries`` times.
    """

    def __init__(
        self,
        redis: Redis,
        stream: str,
        group: str,
        name: str,
        *,
        claim_idle: float = 30.0,
        max_deliveries: int = 5,
        block_ms: int = 2000,
        count: int = 100,
        start: str = "0",
        dead_letter_stream: str | None = None,
        dead_letter_maxlen: int = 10_000,
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.name = name
        self.claim_idle_ms = max(1, int(claim_idle * 1000))
        self.max_deliveries = max_deliveries
        self.block_ms = max(1, min(block_ms, self.claim_idle_ms))
        self.count = count
        self.start = start
        self.dead_letter_stream = dead_letter_stream or f"{stream}:dead"
        self.dead_letter_maxlen = dead_letter_maxlen
        self._group_ready = False
        self._own_cursor: str | None = "0"  # after (re)start: first re-read what we were given and never acked
        self._claim_cursor = "0-0"
        self._next_claim = 0.0

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id=self.start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def fetch(self) -> list[Delivery]:
        if not self._group_ready:
            await self.ensure_group()
        try:
            return await self._fetch()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # the stream or group vanished (e.g. Redis restarted without persistence): start over
            log.warning("group %s on %s is gone; recreating it", self.group, self.stream)
            self._group_ready = False
            self.restart()
            await self.ensure_group()
            return await self._fetch()

    def restart(self) -> None:
        """Behave as after a process restart: re-read own pending entries first, rescan for stuck ones."""
        self._own_cursor = "0"
        self._claim_cursor = "0-0"
        self._next_claim = 0.0

    async def _fetch(self) -> list[Delivery]:
        while self._own_cursor is not None:
            # one pass over what this consumer was given and never acknowledged (then XAUTOCLAIM retries it)
            response = await self.redis.xreadgroup(
                self.group, self.name, {self.stream: self._own_cursor}, count=self.count
            )
            raw = _entries_with_trimmed(response)
            if not raw:
                self._own_cursor = None
                break
            self._own_cursor = raw[-1][0]
            gone = [pos for pos, fields in raw if fields is None]
            if gone:  # trimmed away while pending: nothing left to deliver
                await self.ack(*gone)
            entries = [(pos, fields) for pos, fields in raw if fields is not None]
            if entries:
                return await self._with_counts(entries)
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.claim_idle_ms / 4000
            result = await self.redis.xautoclaim(
                self.stream, self.group, self.name, self.claim_idle_ms, start_id=self._claim_cursor, count=self.count
            )
            self._claim_cursor = str(result[0])
            claimed = [(pos, fields) for pos, fields in result[1] if fields is not None]
            if claimed:
                return await self._with_counts(claimed)
        response = await self.redis.xreadgroup(
            self.group, self.name, {self.stream: ">"}, count=self.count, block=self.block_ms
        )
        return [Delivery(pos, decode(fields), 1, fields) for pos, fields in _entries(response)]

    async def _with_counts(self, entries: list[tuple[str, dict[str, str]]]) -> list[Delivery]:
        pending = await self.redis.xpending_range(
            self.stream,
            self.group,
            min=entries[0][0],
            max=entries[-1][0],
            count=len(entries) + 100,
            consumername=self.name,
        )
        counts = {str(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return [Delivery(pos, decode(fields), counts.get(pos, 1), fields) for pos, fields in entries]

    async def ack(self, *positions: str) -> int:
        if not positions:
            return 0
        return int(await self.redis.xack(self.stream, self.group, *positions))

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move an entry to the dead-letter stream and acknowledge it, atomically."""
        async with self.redis.pipeline(transaction=True) as pipe:
            entry: dict[FieldT, EncodableT] = dict(delivery.fields.items())
            entry.update(
                original_id=delivery.position,
                group=self.group,
                consumer=self.name,
                deliveries=str(delivery.deliveries),
                reason=reason[:500],
            )
            pipe.xadd(self.dead_letter_stream, entry, maxlen=self.dead_letter_maxlen, approximate=True)
            pipe.xack(self.stream, self.group, delivery.position)
            await pipe.execute()

    async def handle(self, delivery: Delivery, handler: Handler) -> bool:
        """Run the handler on one delivery; True when it was acknowledged (handled or dead-lettered)."""
        if delivery.event is None:
            await self.dead_letter(delivery, "undecodable entry")
            return True
        if delivery.deliveries > self.max_deliveries:
            await self.dead_letter(delivery, f"delivered {delivery.deliveries} times without acknowledgement")
            return True
        try:
            await handler(delivery.event)
        except Exception as exc:
            log.warning("handler failed on %s (delivery %d): %s", delivery.position, delivery.deliveries, exc)
            return False
        await self.ack(delivery.position)
        return True

    async def run(self, handler: Handler, *, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set (or cancelled), riding out Redis outages."""
        failures = 0
        while stop is None or not stop.is_set():
            try:
                for delivery in await self.fetch():
                    await self.handle(delivery, handler)
                failures = 0
            except asyncio.CancelledError:
                raise
            except (*UNAVAILABLE, RedisError) as exc:
                failures += 1
                self._group_ready = False
                self.restart()
                log.warning("consumer %s/%s: redis unavailable (%s); retrying", self.group, self.name, exc)
                await asyncio.sleep(reconnect_delay(failures))


# The client decodes replies to str (``decode_responses=True``); these two give them their types, once.


def _range(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """An XRANGE / XREVRANGE / XAUTOCLAIM entry list as (position, fields) pairs."""
    return [(str(pos), fields or {}) for pos, fields in reply or []]


def _entries(response: Any) -> list[tuple[str, dict[str, str]]]:
    """The entries of an XREAD / XREADGROUP reply (one stream)."""
    return [(pos, fields) for pos, fields in _entries_with_trimmed(response) if fields]


def _entries_with_trimmed(response: Any) -> list[tuple[str, dict[str, str] | None]]:
    """The same, with the entries trimmed away while pending (fields None: a re-read of a consumer's own
    history returns them)."""
    out: list[tuple[str, dict[str, str] | None]] = []
    for _stream, entries in response or []:
        out.extend((str(pos), fields or None) for pos, fields in entries)
    return out
