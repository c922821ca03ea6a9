"""Generic webhook: POST the notification as JSON (``Notification.model_dump(mode="json")``)."""

from __future__ import annotations

from windflow.domain.notifications import ChannelConfig, DeliveryResult, Notification
from windflow.escalation._http import post_json
from windflow.outbound import OutboundPolicy


class WebhookChannel:
    def __init__(self, config: ChannelConfig, outbound: OutboundPolicy | None = None) -> None:
        self.config = config
        self.outbound = outbound

    @property
    def name(self) -> str:
        return self.config.name

    async def send(self, notification: Notification) -> DeliveryResult:
        return await post_json(self.config, notification.model_dump(mode="json"), outbound=self.outbound)
