"""What in a service definition makes a host run code, and who may author it.

A service's *exec surface* is every field that decides which program a worker runs, with what environment,
in which directory, as which user and on which host: a ``process`` driver's command and environment, every
command of the ``command`` driver, an ``exec`` probe. Creating or changing it needs ``services:exec``
(only ``admin`` holds it by default); every other field (labels, restart policy, probe timing, http and tcp
probes, monitoring) needs only ``configs:write``. Pure functions: no I/O.
"""

from __future__ import annotations

from typing import Any

from windflow.domain.errors import Forbidden
from windflow.domain.models import CommandConfig, ExecHealth, ProcessConfig, ServiceSpec

EXEC_PERMISSION = "services:exec"

#: process fields that do not change what runs (how it is stopped, how its logs rotate)
_PROCESS_HARMLESS = frozenset({"stop_signal", "stop_grace", "log_max_bytes"})
#: probe timing: changes when an exec probe runs, not what it runs
_PROBE_TIMING = frozenset({"interval", "timeout", "failure_threshold", "success_threshold", "start_period"})


def exec_surface(spec: ServiceSpec | None) -> dict[str, Any]:
    """The parts of ``spec`` that make a host run something (empty: the service runs no code on a host)."""
    if spec is None:
        return {}
    out: dict[str, Any] = {}
    if isinstance(spec.config, ProcessConfig):
        out["config"] = spec.config.model_dump(mode="json", exclude=set(_PROCESS_HARMLESS))
    elif isinstance(spec.config, CommandConfig):
        out["config"] = spec.config.model_dump(mode="json")
    for name in ("health", "readiness", "liveness"):
        probe = getattr(spec, name)
        if isinstance(probe, ExecHealth):
            out[name] = probe.model_dump(mode="json", exclude=set(_PROBE_TIMING))
    if out:
        out["host"] = spec.host  # the same command on another host is new code for that host
    return out


def exec_changes(old: ServiceSpec | None, new: ServiceSpec | None) -> list[str]:
    """Names of the exec-surface parts that differ between ``old`` and ``new`` (``[]``: none)."""
    a, b = exec_surface(old), exec_surface(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def check_exec(old: ServiceSpec | None, new: ServiceSpec | None, *, may_exec: bool) -> None:
    """Raise :class:`Forbidden` (403, naming the permission) when ``new`` changes what a host runs and the caller
    may not author that."""
    if may_exec:
        return
    changed = exec_changes(old, new)
    if changed:
        spec = new or old
        sid = spec.id if spec is not None else ""
        raise Forbidden(
            f"permission {EXEC_PERMISSION!r} required: this changes what a host runs "
            f"({', '.join(changed)} of service {sid!r})",
            details={"required": EXEC_PERMISSION, "service_id": sid, "changed": changed},
        )
