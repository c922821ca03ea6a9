"""The ``http`` driver: a service controlled through HTTP endpoints (an agent, a cloud API, a webhook relay).

* wrong status → :class:`DriverFailed` with the status and the body's length (never the body: a driver
  pointed at an internal address must not become a way to read it);
* a destination the outbound policy refuses (link-local and metadata addresses by default) →
  :class:`DriverFailed`, before any connection;
* connection failure or timeout → :class:`DriverUnavailable` (retryable);
* ``status`` endpoint: 2xx → running, any other status → stopped, no endpoint → unknown; an unreachable
  status endpoint reports unknown (an observation, not an error).

``auth_token`` is sent as ``Authorization: Bearer ...`` and never appears in a message; passwords in URLs
are redacted. Control calls are rare, so each one uses a short-lived client (no pool to go stale).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import httpx2

from windflow.domain.durations import format_duration
from windflow.domain.errors import ConfigInvalid, DriverFailed, DriverUnavailable
from windflow.domain.models import DriverKind, HttpDriverConfig, HttpEndpoint, ServiceSpec
from windflow.domain.redaction import redact_text
from windflow.domain.results import DriverResult, ExitInfo, RunStatus, ServiceStatus
from windflow.outbound import OutboundPolicy, OutboundRefused, guarded_client


def _target(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}:{port}"


def describe_transport_error(exc: BaseException, url: str, timeout: float) -> str:
    """A short, useful text for a connection-level failure (never includes credentials)."""
    target = _target(url)
    if isinstance(exc, httpx2.TimeoutException | TimeoutError):
        return f"timed out after {format_duration(timeout)} ({target})"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused {target}"
        cause = cause.__cause__ or cause.__context__
    text = str(exc) or type(exc).__name__
    return redact_text(f"{target}: {text}")


class HttpDriver:
    kind = DriverKind.HTTP

    def __init__(self, *, outbound: OutboundPolicy | None = None) -> None:
        self.outbound = outbound or OutboundPolicy()

    async def start(self, service: ServiceSpec) -> DriverResult:
        cfg = self._config(service)
        return await self._call("start", cfg.start, cfg)

    async def stop(self, service: ServiceSpec, *, grace: float | None = None) -> DriverResult:  # noqa: ARG002
        cfg = self._config(service)
        return await self._call("stop", cfg.stop, cfg)

    async def restart(self, service: ServiceSpec, *, grace: float | None = None) -> DriverResult:  # noqa: ARG002
        cfg = self._config(service)
        if cfg.restart is not None:
            return await self._call("restart", cfg.restart, cfg)
        stopped = await self._call("stop", cfg.stop, cfg)
        started = await self._call("start", cfg.start, cfg)
        return started.model_copy(update={"action": "restart", "message": f"{stopped.message}; {started.message}"})

    async def status(self, service: ServiceSpec) -> ServiceStatus:
        cfg = self._config(service)
        if cfg.status is None:
            return ServiceStatus(status=RunStatus.UNKNOWN, message="no status endpoint")
        try:
            response, elapsed = await self._send(cfg.status, cfg)
        except (DriverUnavailable, DriverFailed) as exc:
            return ServiceStatus(status=RunStatus.UNKNOWN, message=f"status endpoint unreachable: {exc.message}")
        code = response.status_code
        state = RunStatus.RUNNING if 200 <= code < 300 else RunStatus.STOPPED
        return ServiceStatus(status=state, message=f"status endpoint answered {code} in {elapsed * 1000:.0f} ms")

    async def wait_exit(self, service: ServiceSpec) -> ExitInfo | None:  # noqa: ARG002
        return None

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _config(service: ServiceSpec) -> HttpDriverConfig:
        if not isinstance(service.config, HttpDriverConfig):
            raise ConfigInvalid(f"service {service.id!r}: the http driver needs an http config")
        return service.config

    async def _send(self, endpoint: HttpEndpoint, cfg: HttpDriverConfig) -> tuple[httpx2.Response, float]:
        headers = dict(endpoint.headers)
        if cfg.auth_token:
            headers["Authorization"] = f"Bearer {cfg.auth_token}"
        kwargs: dict[str, Any] = {"headers": headers}
        if isinstance(endpoint.body, dict | list):
            kwargs["json"] = endpoint.body
        elif isinstance(endpoint.body, str | bytes):
            kwargs["content"] = endpoint.body
        elif endpoint.body is not None:
            kwargs["json"] = endpoint.body
        started = time.monotonic()
        where = f"{endpoint.method} {redact_text(endpoint.url)}"
        try:
            self.outbound.check_url(endpoint.url)
            async with guarded_client(self.outbound, verify=cfg.verify_tls, timeout=cfg.timeout) as client:
                response = await client.request(endpoint.method, endpoint.url, **kwargs)
        except OutboundRefused as exc:
            raise DriverFailed(f"{where}: {exc}") from None
        except httpx2.TransportError as exc:
            reason = describe_transport_error(exc, endpoint.url, cfg.timeout)
            raise DriverUnavailable(f"{endpoint.method} {redact_text(endpoint.url)}: {reason}") from None
        return response, time.monotonic() - started

    async def _call(self, action: str, endpoint: HttpEndpoint, cfg: HttpDriverConfig) -> DriverResult:
        response, elapsed = await self._send(endpoint, cfg)
        size = len(response.content)
        where = f"{endpoint.method} {redact_text(endpoint.url)}"
        if response.status_code not in endpoint.expect_status:
            raise DriverFailed(
                f"{action}: {where} answered {response.status_code} ({size} bytes), expected one of "
                f"{endpoint.expect_status}",
                details={"status": response.status_code, "length": size},
            )
        return DriverResult(
            ok=True,
            action=action,
            changed=True,
            output="",
            message=f"{where} answered {response.status_code} ({size} bytes) in {elapsed * 1000:.0f} ms",
        )
