"""What the API process holds for its lifetime: settings, store, Temporal client, event bus."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from windflow.events.base import EventBus
from windflow.events.relay import OutboxRelay
from windflow.outbound import Outbound
from windflow.persistence.db import Database
from windflow.settings import Settings
from windflow.temporal.client import LazyClient


@dataclass
class Resources:
    settings: Settings
    db: Database
    temporal: LazyClient
    bus: EventBus
    jwt_key: str
    relay: OutboxRelay | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def outbound(self) -> Outbound:
        """Where probes, the http driver, webhooks and channels may send requests (checked when saved)."""
        return Outbound.from_settings(self.settings)
