"""How windflow signs a webhook delivery: the Standard Webhooks scheme (standardwebhooks.com).

Every delivery is a ``POST`` of ``Content-Type: application/json`` whose body is the event envelope
``{"event_id", "event_type", "timestamp", "data"}``. It carries the three Standard Webhooks headers:

``webhook-id``
    The delivery id: the same on every retry of one delivery, so a receiver can drop a repeat it already
    processed (a manual redelivery is a new delivery with a new id; the event's own ``event_id`` stays). It is
    part of what is signed.
``webhook-timestamp``
    Unix time in seconds when this attempt was signed.
``webhook-signature``
    ``v1,<base64 HMAC-SHA256>`` over ``<webhook-id>.<webhook-timestamp>.<the exact body bytes>``, keyed with the
    secret's bytes: the base64 after ``whsec_``. Any Standard Webhooks library verifies it with the secret as
    windflow shows it (``Webhook(secret).verify(body, headers)``).

and ``X-Windflow-Event`` (the event type, ``PING`` for a ping) for routing without parsing the body.

The signature and the key are computed by the ``standardwebhooks`` package itself, so windflow signs exactly
as its verifiers check. Secrets windflow generates are ``whsec_`` + base64 of 32 random bytes.

Legacy headers, kept for receivers written before the standard headers (deprecated; to be removed):
``X-Windflow-Delivery`` (= ``webhook-id``), ``X-Windflow-Timestamp`` (= ``webhook-timestamp``) and
``X-Windflow-Signature``: ``sha256=<hex HMAC-SHA256>`` keyed with the secret's UTF-8 text over
``<timestamp>.<body>``. It does not cover the delivery id; move receivers to ``webhook-signature``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

ID_HEADER = "webhook-id"
STANDARD_TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"
EVENT_HEADER = "X-Windflow-Event"
# legacy (see the module docstring)
SIGNATURE_HEADER = "X-Windflow-Signature"
TIMESTAMP_HEADER = "X-Windflow-Timestamp"
DELIVERY_HEADER = "X-Windflow-Delivery"
SCHEME = "sha256"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
DEFAULT_TOLERANCE = 300


def new_secret() -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` + base64 of 256 random bits."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def standard_secret_problem(secret: str) -> str | None:
    """Why a Standard Webhooks verifier could not load ``secret`` (None: it can)."""
    try:
        Webhook(secret)
    except Exception as exc:  # the library raises binascii.Error or its own errors
        return f"not a Standard Webhooks secret ({exc}): use whsec_ followed by base64, or omit it to get one"
    return None


def _webhook(secret: str) -> Webhook:
    """The library's signer; a stored secret it cannot load (from before the standard scheme) signs with its
    UTF-8 bytes as the key, which a receiver can check by hand. Rotating the secret fixes it."""
    try:
        return Webhook(secret)
    except Exception:  # binascii.Error or EmptyWebhookSecretError
        return Webhook(secret.encode("utf-8") or b"\0")


def standard_signature(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64>``."""
    return _webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body)


def signed_material(timestamp: int | str, body: bytes) -> bytes:
    return str(timestamp).encode("ascii") + b"." + body


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """The legacy ``X-Windflow-Signature`` value for ``body`` signed at ``timestamp``."""
    digest = hmac.new(secret.encode("utf-8"), signed_material(timestamp, body), hashlib.sha256).hexdigest()
    return f"{SCHEME}={digest}"


def sign(
    secret: str, body: bytes, *, event_type: str, delivery_id: str, timestamp: int | None = None
) -> dict[str, str]:
    """The headers of one delivery attempt."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        ID_HEADER: delivery_id,
        STANDARD_TIMESTAMP_HEADER: str(ts),
        STANDARD_SIGNATURE_HEADER: standard_signature(secret, msg_id=delivery_id, timestamp=ts, body=body),
        EVENT_HEADER: event_type,
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: signature(secret, ts, body),
    }


def verify_standard(secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """True when the Standard Webhooks headers sign ``body`` with ``secret`` within five minutes of now (the
    ``standardwebhooks`` library's check)."""
    try:
        _webhook(secret).verify(body, dict(headers), json_parse=False)
    except WebhookVerificationError:
        return False
    return True


def verify(
    secret: str,
    body: bytes,
    *,
    timestamp: str | None,
    signature_header: str | None,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """The legacy check: True when ``signature_header`` (``X-Windflow-Signature``) signs ``body`` at
    ``timestamp`` with ``secret``, and the timestamp lies within ``tolerance`` seconds of ``now``."""
    if not timestamp or not signature_header or not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signature_header.strip())
