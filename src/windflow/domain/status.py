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
RECOVERY: frozenset[str] = frozenset({ServiceState.RECOVERING, ServiceState.BACKING_OFF, ServiceState.BLOCKED,
                                      ServiceState.GAVE_UP})


def service_status(*, desired: str | None, observed: str) -> str:
    """The status to show for a service whose desired state is ``desired`` and whose last observation (or a
    supervisor's verdict, through :data:`SUPERVISION_STATUS`) is ``observed``.

    - desired ``stopped``: ``stopped`` once the process is gone, ``stopping`` until then (an observation that
      it still runs — healthy, starting, a recovery's restart — does not make it "healthy" again);
    - otherwise what was observed: ``starting``, ``healthy``, ``unhealthy``, ``recovering``, ``backing_off``,
      ``blocked``, ``gave_up``, ``failed``, ``not_ready``, ``completed``; ``unknown`` when nothing was.
    """
    if desired == "stopped":
        return ServiceState.STOPPED if observed in (ServiceState.STOPPED, ServiceState.GAVE_UP) \
            else ServiceState.STOPPING
    return observed or ServiceState.UNKNOWN
