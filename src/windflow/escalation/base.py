"""The port every notification channel implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from windflow.domain.notifications import ChannelConfig, DeliveryResult, Notification


@runtime_checkable
class NotificationChannel(Protocol):
    config: ChannelConfig

    @property
    def name(self) -> str: ...

    async def send(self, notification: Notification) -> DeliveryResult:
        """Deliver once. Never raises for a delivery failure: ``delivered=False`` with the error."""
        ...
