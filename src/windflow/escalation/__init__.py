"""Escalation channels: how windflow tells people that a service gave up, escalated or needs a decision:
webhook (JSON), Slack-compatible incoming webhook, and the log.

Each adapter implements :class:`windflow.escalation.base.NotificationChannel`; :func:`build_channels` turns
configs into channels. Adapters never raise for a failed delivery: they return a ``DeliveryResult``.
"""

from __future__ import annotations

from collections.abc import Iterable

from windflow.domain.notifications import ChannelConfig, ChannelKind
from windflow.escalation.base import NotificationChannel
from windflow.outbound import OutboundPolicy

__all__ = ["NotificationChannel", "build_channel", "build_channels"]


def build_channel(config: ChannelConfig, outbound: OutboundPolicy | None = None) -> NotificationChannel:
    """The adapter of ``config``; HTTP channels connect only where ``outbound`` allows (default: the
    documented policy for notifications)."""
    if config.kind == ChannelKind.WEBHOOK:
        from windflow.escalation.webhook import WebhookChannel

        return WebhookChannel(config, outbound)
    if config.kind == ChannelKind.SLACK:
        from windflow.escalation.slack import SlackChannel

        return SlackChannel(config, outbound)
    from windflow.escalation.log import LogChannel

    return LogChannel(config)


def build_channels(
    configs: Iterable[ChannelConfig],
    outbound: OutboundPolicy | None = None,
) -> dict[str, NotificationChannel]:
    """Channels by name; a later config with the same name replaces an earlier one."""
    return {c.name: build_channel(c, outbound) for c in configs}
