"""windflow's error hierarchy. Each error is classified once; adapters map them to HTTP or Temporal."""

from __future__ import annotations

from typing import Any


class WindflowError(Exception):
    """Base class. ``code`` is the stable machine-readable name used in the API envelope."""

    code = "internal_error"
    status_code = 500
    retryable = False

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigInvalid(WindflowError):
    code = "config_invalid"
    status_code = 422


class ConfigNotStored(WindflowError):
    """A workflow asked a worker to save or run a config the store does not hold (not accepted by the API)."""

    code = "config_not_stored"
    status_code = 422


class NotFound(WindflowError):
    code = "not_found"
    status_code = 404


class Forbidden(WindflowError):
    """The caller is signed in but lacks a permission the act needs (``details.required`` names it)."""

    code = "forbidden"
    status_code = 403


class Conflict(WindflowError):
    code = "conflict"
    status_code = 409


class VersionConflict(Conflict):
    code = "version_conflict"


class DependencyCycle(ConfigInvalid):
    code = "dependency_cycle"


class DriverUnavailable(WindflowError):
    code = "driver_unavailable"
    status_code = 503
    retryable = True


class DriverFailed(WindflowError):
    """A driver ran and the target said no (non-zero exit, wrong status). Not retried blindly."""

    code = "driver_failed"
    status_code = 502


class HealthCheckFailed(WindflowError):
    code = "health_check_failed"
    status_code = 502


class ServiceUnavailable(WindflowError):
    code = "service_unavailable"
    status_code = 503
    retryable = True
