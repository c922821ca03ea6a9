"""How long a reconnect loop waits after a failure: exponential, capped, with jitter.

Every loop that keeps a connection to the bus, the store or the API alive (the outbox relay, the WebSocket
hub, the Redis Streams consumer, the webhook intake and sender, ``windflow events tail``) waits
``reconnect_delay(failures)`` after its ``failures``-th failure in a row. The delay doubles from ``base`` up to
``cap``; the jitter spreads it over ``[(1 - jitter) * d, d]`` ("equal jitter"), so that many processes that lost
the same server at the same moment do not all come back at the same instant.

Pure: the random draw can be passed in (tests, or ``workflow.random()`` inside a workflow).
"""

from __future__ import annotations

import random

BASE = 0.05
"""Seconds after the first failure (before jitter)."""
CAP = 2.0
"""Longest wait, in seconds (before jitter)."""
JITTER = 0.5
"""Fraction of the delay that is random."""


def reconnect_delay(
    failures: int, *, base: float = BASE, cap: float = CAP, jitter: float = JITTER, draw: float | None = None
) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1-based; 0 or less waits ``base``).

    ``draw`` in ``[0, 1)`` is the random draw (default: :func:`random.random`).
    """
    if base < 0 or cap < 0 or not 0.0 <= jitter <= 1.0:
        raise ValueError("base and cap must be >= 0 and jitter within [0, 1]")
    delay = min(cap, base * 2.0 ** min(max(failures, 1) - 1, 64))
    r = random.random() if draw is None else draw
    return delay * (1.0 - jitter * r)
