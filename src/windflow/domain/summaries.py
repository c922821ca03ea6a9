"""What the Temporal UI shows for each step: short, secret-free texts for activity, timer and workflow summaries
and a workflow's current details.

Pure functions (no I/O, no clock), safe inside workflows. A summary names the component and what the step does
("start db", "wait healthy: api (tcp 127.0.0.1:15432)", "backoff 4 s before attempt 3"), so an on-call engineer
reads a run's timeline without opening payloads. Addresses lose their credentials and query strings: summaries
are kept in the history like any payload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from windflow.domain.models import ExecHealth, HttpHealth, PostgresHealth, RedisHealth, ServiceSpec, TcpHealth

#: Temporal's UI shows one line; longer summaries are cut here
MAX_SUMMARY = 200


def cut(text: str, limit: int = MAX_SUMMARY) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def seconds(value: float) -> str:
    """``4 s``, ``1.5 s``, ``2 min``, ``1 h 30 min``."""
    if value < 60:
        return f"{value:g} s" if value == int(value) or value >= 10 else f"{value:.2g} s"
    minutes = round(value / 60, 1)
    if minutes < 60:
        return f"{minutes:g} min"
    hours, rest = divmod(int(round(minutes)), 60)
    return f"{hours} h" + (f" {rest} min" if rest else "")


def _endpoint(url: str) -> str:
    """``host:port/path`` of a URL, without user, password or query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "?"
    return f"{host}{port}{parts.path if parts.path not in ('', '/') else ''}"


def probe_label(health: Any) -> str:
    """What a probe checks, e.g. ``tcp 127.0.0.1:15432``, ``http GET 127.0.0.1:8000/health``, ``exec pg_isready``."""
    if health is None:
        return "process running"
    if isinstance(health, HttpHealth):
        return f"http {health.method} {_endpoint(health.url)}"
    if isinstance(health, TcpHealth):
        return f"tcp {health.host}:{health.port}"
    if isinstance(health, ExecHealth):
        return f"exec {health.command[0].rsplit('/', 1)[-1]}"
    if isinstance(health, PostgresHealth):
        dsn = health.dsn
        return f"postgres {_endpoint(dsn)}" if "://" in dsn else "postgres"
    if isinstance(health, RedisHealth):
        return f"redis {_endpoint(health.url)}"
    return str(getattr(health, "kind", "probe"))


def where(spec: ServiceSpec) -> str:
    """`` on HOST`` for a host-bound service, else nothing."""
    return f" on {spec.host}" if spec.host else ""


def attempt_suffix(attempt: int, of: int | None = None) -> str:
    if attempt <= 1 and not of:
        return ""
    return f" (attempt {attempt}" + (f" of {of}" if of else "") + ")"


def start(spec: ServiceSpec, attempt: int = 1) -> str:
    return cut(f"start {spec.id}{where(spec)}{attempt_suffix(attempt)}")


def stop(spec: ServiceSpec, why: str = "") -> str:
    return cut(f"stop {spec.id}{where(spec)}" + (f" ({why})" if why else ""))


def restart(spec: ServiceSpec, why: str = "", attempt: int | None = None, of: int | None = None) -> str:
    text = f"restart {spec.id}{where(spec)}"
    if attempt is not None:
        text += attempt_suffix(attempt, of) if of else f" (attempt {attempt})"
    return cut(text + (f": {why}" if why else ""))


def readiness(spec: ServiceSpec) -> Any:
    """The probe that says ``spec`` is ready (its readiness probe where the model has one)."""
    ready = getattr(spec, "readiness_spec", None)
    return ready() if callable(ready) else spec.health


def wait_healthy(spec: ServiceSpec) -> str:
    return cut(f"wait healthy: {spec.id} ({probe_label(readiness(spec))})")


def probe(spec: ServiceSpec, why: str = "probe") -> str:
    return cut(f"{why}: {spec.id} ({probe_label(spec.health)})")


def backoff(delay: float, next_attempt: int) -> str:
    return f"backoff {seconds(delay)} before attempt {next_attempt}"


def component_events(events: Iterable[Mapping[str, Any]]) -> str:
    """``record: db healthy, api starting`` for a batch of initialization events (last status per component)."""
    last: dict[str, str] = {}
    run_status = None
    for event in events:
        name = event.get("component")
        if name:
            last[str(name)] = str(event.get("component_status") or "").lower().replace("_", " ")
        else:
            run_status = str(event.get("status") or "").lower().replace("_", " ")
    parts = [f"{name} {status}".strip() for name, status in last.items()]
    if run_status and not parts:
        parts.append(f"run {run_status}")
    return cut("record: " + (", ".join(parts) if parts else "progress"))


def progress(components: Mapping[str, Any]) -> str:
    """Current details of an initialization: counts per status, then what it waits for and what failed.

    ``components`` maps a name to an object with ``status`` (a ComponentStatus or its value) and ``last_error``."""
    counts: dict[str, int] = {}
    waiting, starting, failed, running = [], [], [], []
    for name, comp in components.items():
        status = str(getattr(comp.status, "value", comp.status)).lower()
        counts[status] = counts.get(status, 0) + 1
        if status == "waiting_healthy":
            waiting.append(name)
        elif status == "starting":
            starting.append(name)
        elif status == "running":  # a job
            running.append(name)
        elif status == "failed":
            err = getattr(comp, "last_error", None)
            failed.append(f"{name} ({cut(err, 80)})" if err else name)
    total = len(components)
    lines = [
        f"**{counts.get('healthy', 0)} of {total} healthy**"
        + "".join(f", {n} {s.replace('_', ' ')}" for s, n in sorted(counts.items()) if s != "healthy")
    ]
    if starting:
        lines.append("starting: " + ", ".join(sorted(starting)))
    if waiting:
        lines.append("waiting for health: " + ", ".join(sorted(waiting)))
    if running:
        lines.append("jobs running: " + ", ".join(sorted(running)))
    if failed:
        lines.append("failed: " + ", ".join(sorted(failed)))
    return "\n\n".join(cut(line, 1000) for line in lines)


def supervision_details(status: Any) -> str:
    """Current details of a supervisor or a recovery: its state and message, the attempt and when the next one
    runs, what it is blocked on, the last verdict of the watch, restarts so far.

    ``status`` is a ``SupervisorStatus`` (read by attribute, so this module needs no contracts import)."""
    state = str(getattr(status.state, "value", status.state)).replace("_", " ")
    lines = [cut(f"**{state}**" + (f": {status.message}" if status.message else ""), 500)]
    if status.max_attempts:
        line = f"attempt {status.attempt} of {status.max_attempts}"
        if status.next_attempt_at is not None:
            line += f"; next attempt at {status.next_attempt_at.isoformat(timespec='seconds')}"
        lines.append(line)
    if status.blocked_on:
        lines.append("blocked on: " + ", ".join(status.blocked_on))
    verdict = status.last_verdict
    if verdict is not None:
        lines.append(
            cut(f"last verdict: {verdict.verdict}" + (f" ({verdict.message})" if verdict.message else ""), 300)
        )
    if status.last_error:
        lines.append(cut(f"last error: {status.last_error}", 300))
    if status.restarts_total or status.recoveries_total:
        lines.append(f"restarts: {status.restarts_total}, recoveries: {status.recoveries_total}")
    return "\n\n".join(lines)
