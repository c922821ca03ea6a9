"""The health state machine: thresholds and the start period."""

from __future__ import annotations

from windflow.domain.health import HealthTracker, HealthVerdict


def feed(tracker: HealthTracker, outcomes: str, *, since_start: float | None = None) -> list[HealthVerdict]:
    """Feed '+' (pass) and '-' (fail) outcomes; return the verdict after each."""
    return [tracker.observe(c == "+", since_start=since_start) for c in outcomes]


def test_unhealthy_only_after_failure_threshold_consecutive_failures() -> None:
    tracker = HealthTracker(failure_threshold=3)
    assert feed(tracker, "--") == [HealthVerdict.UNKNOWN] * 2
    assert tracker.observe(False) == HealthVerdict.UNHEALTHY
    assert tracker.consecutive_failures == 3


def test_a_pass_resets_the_failure_count() -> None:
    tracker = HealthTracker(failure_threshold=3)
    verdicts = feed(tracker, "+--+--")
    assert verdicts[-1] == HealthVerdict.HEALTHY  # never three failures in a row
    assert tracker.consecutive_failures == 2
    assert tracker.observe(False) == HealthVerdict.UNHEALTHY


def test_success_threshold() -> None:
    tracker = HealthTracker(failure_threshold=1, success_threshold=2)
    assert tracker.observe(False) == HealthVerdict.UNHEALTHY
    assert tracker.observe(True) == HealthVerdict.UNHEALTHY  # one pass is not enough
    assert tracker.observe(True) == HealthVerdict.HEALTHY
    assert tracker.observe(False) == HealthVerdict.UNHEALTHY
    assert tracker.observe(True) == HealthVerdict.UNHEALTHY
    assert tracker.observe(False) == HealthVerdict.UNHEALTHY  # the success streak was broken


def test_failures_in_the_start_period_do_not_count() -> None:
    tracker = HealthTracker(failure_threshold=2, start_period=10.0)
    assert feed(tracker, "-----", since_start=3.0) == [HealthVerdict.UNKNOWN] * 5
    assert tracker.consecutive_failures == 0
    # after the start period, failures count again
    assert tracker.observe(False, since_start=10.5) == HealthVerdict.UNKNOWN
    assert tracker.observe(False, since_start=11.0) == HealthVerdict.UNHEALTHY


def test_start_period_ends_early_once_healthy() -> None:
    tracker = HealthTracker(failure_threshold=2, start_period=30.0)
    assert tracker.observe(True, since_start=1.0) == HealthVerdict.HEALTHY
    # seen healthy: failures inside the start period now count
    assert feed(tracker, "--", since_start=2.0) == [HealthVerdict.HEALTHY, HealthVerdict.UNHEALTHY]


def test_no_start_time_means_no_grace() -> None:
    tracker = HealthTracker(failure_threshold=1, start_period=60.0)
    assert tracker.observe(False) == HealthVerdict.UNHEALTHY


def test_recovery_after_unhealthy() -> None:
    tracker = HealthTracker(failure_threshold=2, success_threshold=1)
    feed(tracker, "--")
    assert tracker.verdict == HealthVerdict.UNHEALTHY
    assert tracker.observe(True) == HealthVerdict.HEALTHY
    assert tracker.consecutive_failures == 0
