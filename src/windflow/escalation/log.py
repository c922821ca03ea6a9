"""The log channel: one structured (JSON) line on the ``windflow.escalation`` logger; always delivered."""

from __future__ import annotations

import json
import logging

from windflow.domain.notifications import ChannelConfig, DeliveryResult, Notification, NotificationKind

logger = logging.getLogger("windflow.escalation")


class LogChannel:
    def __init__(self, config: ChannelConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    async def send(self, notification: Notification) -> DeliveryResult:
        data = {"event": "notification", "channel": self.config.name, **notification.model_dump(mode="json")}
        level = logging.INFO if notification.kind == NotificationKind.RECOVERED else logging.WARNING
        logger.log(level, json.dumps(data, separators=(",", ":"), default=str), extra={"notification": data})
        return DeliveryResult(channel=self.config.name, delivered=True)
