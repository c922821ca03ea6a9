"""Escalation notifications: where they go (channels) and what they say.

Pure pydantic: the workflows build :class:`Notification` s (with ``workflow.now()`` and a
workflow-provided ``id``), the ``notify`` activity delivers them through the adapters in
``windflow.escalation``. Channels come from settings and from the system file's ``notifications`` key.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from windflow.domain.durations import Duration
from windflow.domain.models import SERVICE_ID_PATTERN
from windflow.domain.redaction import REDACTED, redact, redact_text, restore_secrets


class NotificationKind(StrEnum):
    ESCALATED = "escalated"  # a recovery gave up and asks for a human
    GAVE_UP = "gave_up"  # the service is left stopped
    NEEDS_DECISION = "needs_decision"  # on_give_up=ask: waiting for approve / keep_stopped
    RECOVERED = "recovered"  # healthy again after an escalation
    BLOCKED = "blocked"  # not restarted: a dependency is unhealthy


class ChannelKind(StrEnum):
    WEBHOOK = "webhook"  # POST the notification as JSON
    SLACK = "slack"  # Slack-compatible incoming webhook ({"text", "blocks"})
    LOG = "log"  # a structured line on the "windflow.escalation" logger


ChannelName = Annotated[
    str,
    Field(
        pattern=SERVICE_ID_PATTERN,
        min_length=1,
        max_length=64,
        examples=["ops-slack"],
        description="Slug: lower-case letters, digits, '-' and '_'",
    ),
]


class ChannelConfig(BaseModel):
    """One notification channel. Unknown keys are errors (a typo must not silently drop alerts)."""

    model_config = ConfigDict(extra="forbid")

    name: ChannelName
    kind: ChannelKind
    url: str | None = Field(
        None,
        validate_default=True,
        pattern=r"^https?://",
        description="Target of webhook and slack channels (a slack URL is a secret: redacted in API output)",
        examples=["https://hooks.slack.com/services/T000/B000/XXXX"],
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers; secret values (Authorization, tokens) are redacted"
    )
    timeout: Duration = Field(5.0, gt=0, le=300, description="Per-request timeout")
    events: list[NotificationKind] = Field(
        default_factory=lambda: list(NotificationKind), description="Notification kinds this channel wants"
    )

    @field_validator("url")
    @classmethod
    def _url_for_kind(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind in (ChannelKind.WEBHOOK, ChannelKind.SLACK) and not value:
            raise ValueError(f"a {kind.value} channel needs a url")
        if kind == ChannelKind.LOG and value:
            raise ValueError("a log channel takes no url")
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, item in value.items():
            if not name or any(c in name for c in " :\r\n\x00") or any(c in item for c in "\r\n\x00"):
                raise ValueError(f"invalid header {name!r}")
        return value

    @field_validator("events")
    @classmethod
    def _unique_events(cls, value: list[NotificationKind]) -> list[NotificationKind]:
        return list(dict.fromkeys(value))

    def wants(self, kind: NotificationKind | str) -> bool:
        return NotificationKind(kind) in self.events


class NotificationsSection(BaseModel):
    """The system file's top-level ``notifications`` key."""

    model_config = ConfigDict(extra="forbid")

    channels: list[ChannelConfig] = Field(default_factory=list)


class Notification(BaseModel):
    """What is sent. ``id`` is provided by the workflow and identifies the notification across retries."""

    id: str = Field(min_length=1, max_length=200, description="Stable across activity retries (dedup key)")
    kind: NotificationKind
    service_id: str
    title: str
    text: str = ""
    details: dict[str, Any] = Field(default_factory=dict)
    workflow_id: str | None = None
    timestamp: datetime


class DeliveryResult(BaseModel):
    channel: str
    delivered: bool
    status_code: int | None = None
    error: str | None = None
    attempts: int = Field(1, ge=0, description="Sends to this channel for this notification so far")


# --------------------------------------------------------------------------- redaction


def redact_url(url: str | None, kind: ChannelKind | str) -> str | None:
    """Slack URLs carry their token in the path; webhook URLs may carry one in the query or userinfo."""
    if not url:
        return url
    parts = urlsplit(url)
    if ChannelKind(kind) == ChannelKind.SLACK:
        return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], f"/{REDACTED}", "", ""))
    text = redact_text(url)
    if parts.query:
        text = urlunsplit((*urlsplit(text)[:3], REDACTED, ""))
    return text


def redact_channel(doc: dict[str, Any]) -> dict[str, Any]:
    """A JSON-dumped :class:`ChannelConfig` as API output may show it."""
    out: dict[str, Any] = redact(doc)
    if doc.get("url") and doc.get("kind"):
        out["url"] = redact_url(doc["url"], doc["kind"])
    return out


def restore_channel(
    new: dict[str, Any], old: dict[str, Any] | None
) -> tuple[dict[str, Any], list[tuple[list[str | int], str]]]:
    """Where a client sent back a redacted export, keep the stored secrets of the same channel, as long as the
    channel still sends to the same scheme, host and port (else: problems naming what to re-enter)."""
    if old is None or new.get("kind") != old.get("kind"):
        old = {}
    url = new.get("url")
    if isinstance(url, str) and REDACTED in url and old.get("url") and redact_url(old["url"], old["kind"]) == url:
        url = old["url"]
    doc = {**new, "url": url} if "url" in new else new
    return restore_secrets(doc, old)
