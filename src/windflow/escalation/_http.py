"""One JSON POST with the channel's headers and timeout; 2xx is delivered, anything else is not."""

from __future__ import annotations

from typing import Any

import httpx2

from windflow.domain.notifications import ChannelConfig, DeliveryResult
from windflow.domain.redaction import redact_text
from windflow.outbound import OutboundPolicy, guarded_client

BODY_EXCERPT = 300
USER_AGENT = "windflow-notify/1"


def transport_error(exc: BaseException, timeout: float) -> str:
    """A short, redacted reason for a failed HTTP call (timeout, refused, or the error's own text)."""
    if isinstance(exc, httpx2.TimeoutException | TimeoutError):
        return f"timed out after {timeout:g}s"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    return redact_text(str(exc) or type(exc).__name__)


async def post_json(config: ChannelConfig, payload: Any, *, outbound: OutboundPolicy | None = None) -> DeliveryResult:
    """POST ``payload`` to the channel's URL. Notifications are rare: one short-lived client per send, whose
    connections the outbound policy checks (default: no loopback, private, link-local or metadata address)."""
    assert config.url is not None
    headers = {"User-Agent": USER_AGENT, **config.headers}
    try:
        async with guarded_client(outbound or OutboundPolicy.notify_default(), timeout=config.timeout) as client:
            response = await client.post(config.url, json=payload, headers=headers)
    except (httpx2.HTTPError, OSError, TimeoutError) as exc:
        return DeliveryResult(channel=config.name, delivered=False, error=transport_error(exc, config.timeout))
    if 200 <= response.status_code < 300:
        return DeliveryResult(channel=config.name, delivered=True, status_code=response.status_code)
    excerpt = response.text[:BODY_EXCERPT].strip()
    error = f"HTTP {response.status_code}" + (f": {excerpt}" if excerpt else "")
    return DeliveryResult(
        channel=config.name, delivered=False, status_code=response.status_code, error=redact_text(error)
    )
