"""How windflow signs a webhook delivery, and how a receiver checks it.

Every delivery is a ``POST`` of ``Content-Type: application/json`` whose body is the event envelope
``{"event_id", "event_type", "timestamp", "data"}``. It carries these headers:

``X-Windflow-Event``
    The event type (``SERVICE_STATUS_UPDATE``, ...; ``PING`` for a test ping).
``X-Windflow-Delivery``
    The delivery id: the same on every retry of one delivery, so a receiver can drop a repeat it already
    processed (a manual redelivery is a new delivery with a new id; the event's own ``event_id`` stays).
``X-Windflow-Timestamp``
    Unix time in seconds when this attempt was signed.
``X-Windflow-Signature``
    ``sha256=<hex>``: HMAC-SHA256, keyed with the subscription's secret (its UTF-8 bytes), over
    ``<timestamp> + "." + <the exact body bytes>``.

To verify, a receiver recomputes the HMAC over the timestamp header, a dot and the raw body (before any JSON
parsing), compares it with the header in constant time, and refuses a timestamp too far from its own clock
(five minutes is the usual tolerance): a captured request then cannot be replayed later. :func:`verify` does
exactly that.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "X-Windflow-Signature"
TIMESTAMP_HEADER = "X-Windflow-Timestamp"
EVENT_HEADER = "X-Windflow-Event"
DELIVERY_HEADER = "X-Windflow-Delivery"
SCHEME = "sha256"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300


def new_secret() -> str:
    """A fresh signing secret (256 bits of randomness)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signed_material(timestamp: int | str, body: bytes) -> bytes:
    return str(timestamp).encode("ascii") + b"." + body


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Windflow-Signature`` value for ``body`` signed at ``timestamp``."""
    digest = hmac.new(secret.encode("utf-8"), signed_material(timestamp, body), hashlib.sha256).hexdigest()
    return f"{SCHEME}={digest}"


def sign(secret: str, body: bytes, *, event_type: str, delivery_id: str,
         timestamp: int | None = None) -> dict[str, str]:
    """The headers of one delivery attempt."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        EVENT_HEADER: event_type,
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: signature(secret, ts, body),
    }


def verify(secret: str, body: bytes, *, timestamp: str | None, signature_header: str | None,
           tolerance: float = DEFAULT_TOLERANCE, now: float | None = None) -> bool:
    """True when ``signature_header`` signs ``body`` at ``timestamp`` with ``secret``, and the timestamp lies
    within ``tolerance`` seconds of ``now``."""
    if not timestamp or not signature_header or not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signature_header.strip())
