"""A read cache for hot list reads (``GET /api/v1/services``): in Redis when ``redis_url`` is set, else in-process.

What it caches: the finished JSON body of a page, keyed by the query *and by the store's change stamp*
(:meth:`ServiceRepository.change_stamp`: row count, newest ``updated_at`` and, on PostgreSQL, the sum of every
row's ``updated_at``). A read first asks the store for the stamp (one aggregate query on one table), then looks
for the page under that stamp; on a miss it builds the page and stores it.

Why a stamp read from the store and not a generation key that writers bump:

* Writers live in several processes: the API, and the workers, which write service states on every
  transition and may run without Redis (embedded mode, tests) or on other hosts. A bump would have to be
  added to every writer and could never be atomic with the commit it follows: a writer that dies between
  its commit and its bump (or a Redis blip at that moment) would leave the cache stale until a TTL runs out.
* The stamp moves *in the same transaction* as the change (the row's ``updated_at``), whoever wrote it and
  whether or not Redis was reachable, so no write can be missed and there is nothing to invalidate: a new
  stamp simply names new keys, and the old entries age out (``read_cache_ttl`` bounds the memory they hold,
  not how stale a read can be).
* Order matters: the stamp is read *before* the page. A write committed in between makes the stored page
  newer than its stamp, never older, so a later reader that sees the same stamp gets data at least as new
  as the stamp promises, and one that sees the newer stamp misses and rebuilds.

The cost of a hit is that one aggregate query plus a dictionary or Redis lookup, instead of loading,
redacting and serializing the rows. The cache never makes a read fail: a Redis error counts as a miss and
turns the Redis cache off for ``REDIS_RETRY_AFTER`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

from windflow.persistence.db import Database
from windflow.persistence.repositories import ServiceRepository

log = logging.getLogger("windflow.api.cache")
REDIS_RETRY_AFTER = 5.0
_services = ServiceRepository()


class ReadCache(Protocol):
    hits: int
    misses: int

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...

    async def close(self) -> None: ...


class MemoryReadCache:
    """In-process LRU with a TTL (one API process: embedded mode)."""

    def __init__(self, *, ttl: float, max_entries: int = 256, clock: Any = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < self._clock():
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    async def set(self, key: str, value: bytes) -> None:
        self._entries[key] = (self._clock() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        self._entries.clear()


class RedisReadCache:
    """Entries shared by every API replica on one Redis, under ``prefix`` and with a TTL."""

    def __init__(self, url: str, *, prefix: str, ttl: float) -> None:
        from redis.asyncio import Redis

        self.redis = Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl * 1000))
        self._off_until = 0.0
        self.hits = 0
        self.misses = 0
        self.errors = 0

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        self._off_until = time.monotonic() + REDIS_RETRY_AFTER
        log.warning("read cache off for %gs: Redis: %s: %s", REDIS_RETRY_AFTER, type(exc).__name__, exc)

    async def get(self, key: str) -> bytes | None:
        if time.monotonic() < self._off_until:
            self.misses += 1
            return None
        try:
            value = await self.redis.get(self.prefix + key)
        except Exception as exc:  # the cache never fails a read
            self._failed(exc)
            value = None
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes) -> None:
        if time.monotonic() < self._off_until:
            return
        try:
            await self.redis.set(self.prefix + key, value, px=self.ttl_ms)
        except Exception as exc:
            self._failed(exc)

    async def close(self) -> None:
        await self.redis.aclose()


def build_read_cache(*, redis_url: str | None, prefix: str, ttl: float) -> ReadCache:
    if redis_url:
        return RedisReadCache(redis_url, prefix=prefix, ttl=ttl)
    return MemoryReadCache(ttl=ttl)


def read_cache_of(resources: Any) -> ReadCache | None:
    """The API process's cache (built on first use, kept in ``resources.extras``); None when turned off."""
    settings = resources.settings
    if not settings.read_cache:
        return None
    cache = resources.extras.get("read_cache")
    if cache is None:
        cache = build_read_cache(
            redis_url=settings.redis_url, prefix=f"{settings.events_stream}:cache:", ttl=settings.read_cache_ttl
        )
        resources.extras["read_cache"] = cache
    return cache


async def close_read_cache(resources: Any) -> None:
    cache = resources.extras.pop("read_cache", None)
    if cache is not None:
        await cache.close()


async def services_stamp(db: Database) -> str:
    return await _services.change_stamp(db=db)
