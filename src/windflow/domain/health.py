"""The health state machine (like Kubernetes probes, with a start period).

healthy after ``success_threshold`` consecutive passes, unhealthy after ``failure_threshold`` consecutive
failures; failures inside ``start_period`` (seconds since the service started) do not count.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class HealthVerdict(StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class HealthTracker(BaseModel):
    failure_threshold: int = 3
    success_threshold: int = 1
    start_period: float = 0.0
    verdict: HealthVerdict = HealthVerdict.UNKNOWN
    consecutive_failures: int = 0
    consecutive_successes: int = 0

    def observe(self, healthy: bool, *, since_start: float | None = None) -> HealthVerdict:
        """Feed one probe outcome; ``since_start`` is seconds since the service (re)started."""
        if healthy:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            if self.consecutive_successes >= self.success_threshold:
                self.verdict = HealthVerdict.HEALTHY
        else:
            self.consecutive_successes = 0
            in_grace = since_start is not None and since_start < self.start_period
            # a failure in the start period never counts, unless the service was already seen healthy
            if not in_grace or self.verdict == HealthVerdict.HEALTHY:
                self.consecutive_failures += 1
            if self.consecutive_failures >= self.failure_threshold:
                self.verdict = HealthVerdict.UNHEALTHY
        return self.verdict
