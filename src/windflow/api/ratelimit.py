"""Rate limits of sign-in and password attempts: in-process by default, shared through Redis when configured.

* ``hit(key, limit, window)`` counts an attempt and returns ``None`` when it is allowed, or the seconds to wait
  before the oldest attempt in the window falls out of it (the ``Retry-After``). Refused attempts are not
  counted, so a client that waits the advertised time gets in.
* ``fail(key, free, base, cap, ttl)`` records a failure; after the first ``free`` ones, the n-th holds the key for
  ``base * 2**(n - free - 1)`` seconds (at most ``cap``). ``held(key)`` tells how long is left. A success resets it.
  Keyed by user *and* client address, this slows a guesser down exponentially without letting anyone lock
  a user out from elsewhere.

:class:`FallbackRateLimiter` puts the Redis limiter in front of an in-process one: when Redis cannot be reached,
attempts are counted in the process (logged once, reported by ``/readyz``) instead of failing the sign-in.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from windflow.domain.backoff import reconnect_delay

log = logging.getLogger("windflow.api.ratelimit")


T = TypeVar("T")


class RateLimiter(Protocol):
    async def hit(self, key: str, *, limit: int, window: float) -> int | None: ...

    async def fail(self, key: str, *, free: int, base: float, cap: float, ttl: float) -> int: ...

    async def held(self, key: str) -> int | None: ...

    async def reset(self, key: str) -> None: ...


def failure_delay(failures: int, *, free: int, base: float, cap: float) -> float:
    """Seconds the ``failures``-th failure holds its key: none for the first ``free``, then ``base`` doubling up to
    ``cap`` (free=3: 0, 0, 0, 1, 2, 4, ...)."""
    if failures <= free:
        return 0.0
    # the reconnect loops' doubling, without their jitter: an attacker must not win a shorter wait by chance
    return reconnect_delay(failures - free, base=base, cap=cap, jitter=0.0)


class MemoryRateLimiter:
    """Per-process sliding window log (enough for embedded mode and a single API process)."""

    def __init__(self, *, max_keys: int = 100_000, clock: Any = time.monotonic) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._failures: dict[str, tuple[int, float, float]] = {}  # key -> (failures, held until, forgotten at)
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

    async def fail(self, key: str, *, free: int, base: float, cap: float, ttl: float) -> int:
        async with self._lock:
            now = self._clock()
            failures, _, expires = self._failures.get(key, (0, 0.0, 0.0))
            if expires <= now:
                failures = 0
            if key not in self._failures and len(self._failures) >= self._max_keys:
                for k in [k for k, v in self._failures.items() if v[2] <= now] or list(self._failures)[:1]:
                    del self._failures[k]
            failures += 1
            delay = failure_delay(failures, free=free, base=base, cap=cap)
            self._failures[key] = (failures, now + delay, now + max(ttl, delay))
            return math.ceil(delay)

    async def held(self, key: str) -> int | None:
        entry = self._failures.get(key)
        if entry is None:
            return None
        wait = entry[1] - self._clock()
        return max(1, math.ceil(wait)) if wait > 0 else None

    async def reset(self, key: str) -> None:
        async with self._lock:
            self._hits.pop(key, None)
            self._failures.pop(key, None)

    async def ping(self) -> None:
        return None

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


_REDIS_FAIL = """
local key, now, free, base, cap, ttl = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5])
local n = redis.call('HINCRBY', key, 'n', 1)
local delay = 0
if n > free then
  delay = math.min(cap, base * 2 ^ math.min(n - free - 1, 64))
end
redis.call('HSET', key, 'until', tostring(now + delay))
redis.call('PEXPIRE', key, math.ceil(math.max(ttl, delay) * 1000))
return tostring(delay)
"""


class RedisRateLimiter:
    """The same sliding window in a Redis sorted set, atomic through a Lua script: shared by all API replicas."""

    def __init__(self, redis: Any, *, prefix: str = "windflow:ratelimit:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_REDIS_HIT)
        self._fail = redis.register_script(_REDIS_FAIL)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisRateLimiter:
        from redis.asyncio import Redis

        # short timeouts: a sign-in must not wait long on an unreachable Redis before falling back
        return cls(Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0), **kwargs)

    async def hit(self, key: str, *, limit: int, window: float) -> int | None:
        now = time.time()
        wait = await self._script(keys=[self._prefix + key], args=[now, window, limit, uuid.uuid4().hex])
        if wait is None:
            return None
        return max(1, math.ceil(float(wait)))

    async def fail(self, key: str, *, free: int, base: float, cap: float, ttl: float) -> int:
        delay = await self._fail(keys=[self._prefix + "fail:" + key], args=[time.time(), free, base, cap, ttl])
        return math.ceil(float(delay))

    async def held(self, key: str) -> int | None:
        until = await self._redis.hget(self._prefix + "fail:" + key, "until")
        if until is None:
            return None
        wait = float(until) - time.time()
        return max(1, math.ceil(wait)) if wait > 0 else None

    async def reset(self, key: str) -> None:
        await self._redis.delete(self._prefix + key, self._prefix + "fail:" + key)

    async def ping(self) -> None:
        await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()


class FallbackRateLimiter:
    """The Redis limiter, or the in-process one while Redis cannot be reached (never an error to the caller).

    The switch is logged once each way; :attr:`degraded` says which one counts now (``/readyz`` reports it).
    Counts kept in the process while degraded are per API replica: limits still hold, only less shared.
    """

    def __init__(self, primary: RedisRateLimiter, fallback: MemoryRateLimiter | None = None) -> None:
        self.primary = primary
        self.fallback = fallback or MemoryRateLimiter()
        self.degraded = False
        self.last_error: str | None = None

    async def _call(self, op: Callable[[RedisRateLimiter | MemoryRateLimiter], Awaitable[T]]) -> T:
        """``op`` on Redis, or on the in-process limiter while Redis cannot be reached."""
        from redis.exceptions import RedisError

        try:
            result = await op(self.primary)
        except (RedisError, OSError, TimeoutError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            if not self.degraded:
                self.degraded = True
                log.warning(
                    "Redis unreachable (%s): counting sign-in attempts in this process until it is back",
                    self.last_error,
                )
            return await op(self.fallback)
        if self.degraded:
            self.degraded = False
            self.last_error = None
            log.warning("Redis reachable again: sign-in attempts are counted in Redis")
        return result

    async def hit(self, key: str, *, limit: int, window: float) -> int | None:
        return await self._call(lambda limiter: limiter.hit(key, limit=limit, window=window))

    async def fail(self, key: str, *, free: int, base: float, cap: float, ttl: float) -> int:
        return await self._call(lambda limiter: limiter.fail(key, free=free, base=base, cap=cap, ttl=ttl))

    async def held(self, key: str) -> int | None:
        return await self._call(lambda limiter: limiter.held(key))

    async def reset(self, key: str) -> None:
        await self._call(lambda limiter: limiter.reset(key))
        await self.fallback.reset(key)  # counts taken while degraded must not outlive a success either

    async def check(self) -> str:
        """``ok``, or ``degraded: ...`` when Redis does not answer now (what ``/readyz`` shows)."""
        await self._call(lambda limiter: limiter.ping())
        return f"degraded: {self.last_error}" if self.degraded else "ok"

    async def aclose(self) -> None:
        await self.primary.aclose()
