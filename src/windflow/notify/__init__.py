"""Notification channels: webhook (JSON), Slack-compatible incoming webhook, and the log.

Each adapter implements :class:`windflow.notify.base.NotificationChannel`; :func:`build_channels` turns
configs into channels. Adapters never raise for a failed delivery: they return a ``DeliveryResult``.
"""

from __future__ import annotations

from collections.abc import Iterable

from windflow.domain.notifications import ChannelConfig, ChannelKind
from windflow.notify.base import NotificationChannel

__all__ = ["NotificationChannel", "build_channel", "build_channels"]


def build_channel(config: ChannelConfig) -> NotificationChannel:
    if config.kind == ChannelKind.WEBHOOK:
        from windflow.notify.webhook import WebhookChannel

        return WebhookChannel(config)
    if config.kind == ChannelKind.SLACK:
        from windflow.notify.slack import SlackChannel

        return SlackChannel(config)
    from windflow.notify.log import LogChannel

    return LogChannel(config)


def build_channels(configs: Iterable[ChannelConfig]) -> dict[str, NotificationChannel]:
    """Channels by name; a later config with the same name replaces an earlier one."""
    return {c.name: build_channel(c) for c in configs}
