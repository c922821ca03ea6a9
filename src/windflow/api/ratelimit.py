"""Sliding-window rate limits (login attempts): in-process by default, shared through Redis when configured.

``hit(key, limit, window)`` counts an attempt and returns ``None`` when it is allowed, or the seconds to wait
before the oldest attempt in the window falls out of it (the ``Retry-After``). Refused attempts are not
counted, so a client that waits the advertised time gets in.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import deque
from typing import Any, Protocol


class RateLimiter(Protocol):
    async def hit(self, key: str, *, limit: int, window: float) -> int | None: ...

    async def reset(self, key: str) -> None: ...


class MemoryRateLimiter:
    """Per-process sliding window log (enough for embedded mode and a single API process)."""

    def __init__(self, *, max_keys: int = 100_000, clock: Any = time.monotonic) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._lock = asyncio.Lock()
        self._max_keys = max_keys
        self._clock = clock

    async def hit(self, key: str, *, limit: int, window: float) -> int | None:
        async with self._lock:
            now = self._clock()
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= self._max_keys:
                    self._evict(now, window)
                hits = self._hits[key] = deque()
            while hits and hits[0] <= now - window:
                hits.popleft()
            if len(hits) >= limit:
                return max(1, math.ceil(hits[0] + window - now))
            hits.append(now)
            return None

    async def reset(self, key: str) -> None:
        async with self._lock:
            self._hits.pop(key, None)

    def _evict(self, now: float, window: float) -> None:
        for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - window]:
            del self._hits[key]
        if len(self._hits) >= self._max_keys:  # still full of live keys: drop the oldest half
            for key in sorted(self._hits, key=lambda k: self._hits[k][-1])[: self._max_keys // 2]:
                del self._hits[key]


_REDIS_HIT = """
local key, now, window, limit, member = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) >= limit then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tostring(tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', key, now, member)
redis.call('PEXPIRE', key, math.ceil(window * 1000))
return false
"""


class RedisRateLimiter:
    """The same sliding window in a Redis sorted set, atomic through a Lua script: shared by all API replicas."""

    def __init__(self, redis: Any, *, prefix: str = "windflow:ratelimit:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_REDIS_HIT)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisRateLimiter:
        from redis.asyncio import Redis

        return cls(Redis.from_url(url), **kwargs)

    async def hit(self, key: str, *, limit: int, window: float) -> int | None:
        now = time.time()
        wait = await self._script(keys=[self._prefix + key], args=[now, window, limit, uuid.uuid4().hex])
        if wait is None:
            return None
        return max(1, math.ceil(float(wait)))

    async def reset(self, key: str) -> None:
        await self._redis.delete(self._prefix + key)

    async def aclose(self) -> None:
        await self._redis.aclose()
