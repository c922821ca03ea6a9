"""The one reconnect backoff: exponential, capped, jittered; and the loops that reconnect all use it."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

import windflow
from windflow.domain.backoff import reconnect_delay


def test_doubles_up_to_the_cap_with_equal_jitter():
    no_jitter = [reconnect_delay(n, draw=0.0) for n in range(1, 9)]
    assert no_jitter == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert reconnect_delay(0, draw=0.0) == 0.05
    assert reconnect_delay(10_000, base=0.1, cap=5.0, draw=0.0) == 5.0  # no overflow however long it failed
    # the jitter takes up to half of the delay away, never adds to it
    assert reconnect_delay(3, draw=0.999999) == pytest.approx(0.1, rel=1e-5)
    rng = random.Random(7)
    waits = [reconnect_delay(8, draw=rng.random()) for _ in range(2000)]
    assert 1.0 <= min(waits) < 1.05 and 1.95 < max(waits) <= 2.0
    assert len({round(w, 3) for w in waits}) > 500  # spread out: no herd reconnecting at one instant
    assert reconnect_delay(8, jitter=0.0, draw=0.7) == 2.0
    with pytest.raises(ValueError):
        reconnect_delay(1, jitter=1.5)


def test_every_reconnect_loop_uses_the_helper():
    """No hand-written ``x * 2 ** min(failures, n)`` left beside the helper."""
    src = Path(windflow.__file__).parent
    hand_written = re.compile(r"\*\s*2(\.0)?\s*\*\*\s*min\(")
    offenders = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.name != "backoff.py" and hand_written.search(p.read_text())
    ]
    assert offenders == []
    users = [str(p.relative_to(src)) for p in src.rglob("*.py") if "reconnect_delay(" in p.read_text()]
    assert {
        "api/event_hub.py",
        "events/relay.py",
        "events/redis_streams.py",
        "webhooks_out/dispatcher.py",
        "cli/events.py",
    } <= set(users)
