"""A service's status: one pure function of its desired state, what was observed and the recovery in flight.

The store's ``services.state`` column (the read model the API, the events, the metrics, the CLI and the
dashboard show) is written only through :func:`service_status`, so that every writer — an initialization, an
operator's start or stop, a rollout, a supervisor — derives it the same way.
"""

from __future__ import annotations

from windflow.domain.contracts import SupervisionState
from windflow.domain.models import ServiceState

#: the status a supervisor's state stands for (a supervisor that only watches says nothing new: healthy)
SUPERVISION_STATUS: dict[SupervisionState, ServiceState] = {
    SupervisionState.WATCHING: ServiceState.HEALTHY,
    SupervisionState.RECOVERING: ServiceState.RECOVERING,
    SupervisionState.BACKING_OFF: ServiceState.BACKING_OFF,
    SupervisionState.BLOCKED: ServiceState.BLOCKED,
    SupervisionState.WAITING_BUDGET: ServiceState.BACKING_OFF,
    SupervisionState.WAITING_DECISION: ServiceState.GAVE_UP,
    SupervisionState.GAVE_UP: ServiceState.GAVE_UP,
}

#: statuses in which the service has no process of windflow's (its pid is cleared)
NO_PROCESS: frozenset[str] = frozenset({ServiceState.STOPPED, ServiceState.GAVE_UP})

#: statuses a recovery in flight decides, whatever else was observed meanwhile
RECOVERY: frozenset[str] = frozenset(
    {ServiceState.RECOVERING, ServiceState.BACKING_OFF, ServiceState.BLOCKED, ServiceState.GAVE_UP}
)


def service_status(*, desired: str | None, observed: str) -> str:
    """The status to show for a service whose desired state is ``desired`` and whose last observation (or a
    supervisor's verdict, through :data:`SUPERVISION_STATUS`) is ``observed``.

    - desired ``stopped``: ``stopped`` once the process is gone, ``stopping`` until then (an observation that
      it still runs — healthy, starting, a recovery's restart — does not make it "healthy" again);
    - otherwise what was observed: ``starting``, ``healthy``, ``unhealthy``, ``recovering``, ``backing_off``,
      ``blocked``, ``gave_up``, ``failed``, ``not_ready``, ``completed``; ``unknown`` when nothing was.
    """
    if desired == "stopped":
        return (
            ServiceState.STOPPED if observed in (ServiceState.STOPPED, ServiceState.GAVE_UP) else ServiceState.STOPPING
        )
    return observed or ServiceState.UNKNOWN


#: which replica's status speaks for a replicated service that is not healthy: the first found in this order
_SET_PRIORITY: tuple[str, ...] = (
    ServiceState.GAVE_UP,
    ServiceState.FAILED,
    ServiceState.RECOVERING,
    ServiceState.BACKING_OFF,
    ServiceState.BLOCKED,
    ServiceState.UNHEALTHY,
    ServiceState.STOPPING,
    ServiceState.STARTING,
    ServiceState.NOT_READY,
    ServiceState.UNKNOWN,
    ServiceState.STOPPED,
)


def replica_set_status(*, desired: str | None, replicas: list[str], min_ready: int) -> tuple[str, int]:
    """The status of a replicated service from its replicas' statuses, and how many of them are ready.

    ``healthy`` only when at least ``min_ready`` replicas are (and it has replicas); ``stopped`` when it is
    desired stopped and every replica has stopped; otherwise the most telling status among the replicas (a
    replica that gave up or recovers before one that starts). Shown with the count, e.g. ``3/4 healthy``."""
    ready = sum(1 for s in replicas if s == ServiceState.HEALTHY)
    if desired == "stopped" or not replicas:
        observed = ServiceState.STOPPED if all(s in NO_PROCESS for s in replicas) else ServiceState.STOPPING
        return service_status(desired=desired, observed=observed), ready
    if ready >= max(min_ready, 1):
        return ServiceState.HEALTHY, ready
    present = set(replicas)
    for state in _SET_PRIORITY:
        if state in present:
            return state, ready
    return ServiceState.UNKNOWN, ready
