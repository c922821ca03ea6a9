"""Notification channels: webhook (JSON), Slack-compatible incoming webhook, and the log.

Each adapter implements :class:`windflow.notify.base.NotificationChannel`; :func:`build_channels` turns
configs into channels. Adapters never raise for a failed delivery: they return a ``DeliveryResult``.
"""

from __future__ import annotations

from collections.abc import Iterable

from windflow.domain.notifications import ChannelConfig, ChannelKind
from windflow.notify.base import NotificationChannel
from windflow.outbound import OutboundPolicy

__all__ = ["NotificationChannel", "build_channel", "build_channels"]


def build_channel(config: ChannelConfig, outbound: OutboundPolicy | None = None) -> NotificationChannel:
    """The adapter of ``config``; HTTP channels connect only where ``outbound`` allows (default: the
    documented policy for notifications)."""
    if config.kind == ChannelKind.WEBHOOK:
        from windflow.notify.webhook import WebhookChannel

        return WebhookChannel(config, outbound)
    if config.kind == ChannelKind.SLACK:
        from windflow.notify.slack import SlackChannel

        return SlackChannel(config, outbound)
    from windflow.notify.log import LogChannel

    return LogChannel(config)


def build_channels(configs: Iterable[ChannelConfig], outbound: OutboundPolicy | None = None,
                   ) -> dict[str, NotificationChannel]:
    """Channels by name; a later config with the same name replaces an earlier one."""
    return {c.name: build_channel(c, outbound) for c in configs}
