"""The ``notify`` activity: deliver one notification to every channel that wants it, and record each outcome.

Idempotent per ``Notification.id``: a retried activity skips channels already logged as delivered for that
id and sends only to the ones that failed. When any channel failed it raises a retryable
``ApplicationError`` (type ``NotificationNotDelivered``) *after* recording, so Temporal's retry policy
(bounded, set by the workflow) drives the re-sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from windflow.domain.contracts import NotifyInput, NotifyResult
from windflow.domain.notifications import ChannelConfig, DeliveryResult, Notification
from windflow.escalation import build_channel
from windflow.escalation.base import NotificationChannel
from windflow.persistence.notifications import NotificationChannelRepository, NotificationLogRepository
from windflow.persistence.repositories import AuditRepository
from windflow.temporal import names

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from windflow.persistence.db import Database

log = logging.getLogger("windflow.activities.notifications")

channel_repo = NotificationChannelRepository()
log_repo = NotificationLogRepository()
audit_repo = AuditRepository()

NOT_DELIVERED = "NotificationNotDelivered"


class NotificationActivities:
    def __init__(
        self,
        db: Database,
        settings_channels: Sequence[ChannelConfig] = (),
        *,
        channel_factory: Callable[[ChannelConfig], NotificationChannel] | None = None,
        outbound: Any = None,
    ) -> None:
        """``outbound``: the :class:`windflow.outbound.OutboundPolicy` HTTP channels connect under (None: the
        default policy for notifications)."""
        self.db = db
        self.settings_channels = list(settings_channels)
        self.channel_factory = channel_factory or (lambda config: build_channel(config, outbound))

    def merged(self, stored: Sequence[ChannelConfig]) -> list[ChannelConfig]:
        """Settings channels first; a system-file channel with the same name as one of them is ignored."""
        names = {c.name for c in self.settings_channels}
        shadowed = [c.name for c in stored if c.name in names]
        if shadowed:
            log.warning("system-file notification channel(s) %s shadowed by settings", ", ".join(shadowed))
        return [*self.settings_channels, *(c for c in stored if c.name not in names)]

    @activity.defn(name=names.NOTIFY)  # called by name: registered only when channels are configured
    async def notify(self, req: NotifyInput) -> NotifyResult:
        notification = req.notification
        async with self.db.read() as session:
            stored = await channel_repo.get_all(session=session)
            sends = await log_repo.sends(session=session, notification_id=notification.id)
        configs = self.merged(stored)
        if req.channels is not None:
            wanted = set(req.channels)
            missing = sorted(wanted - {c.name for c in configs})
            if missing:
                log.warning("notification %s names unknown channel(s): %s", notification.id, ", ".join(missing))
            configs = [c for c in configs if c.name in wanted]
        configs = [c for c in configs if c.wants(notification.kind)]

        results: dict[str, DeliveryResult] = {}
        pending: list[tuple[ChannelConfig, int]] = []
        for config in configs:
            count, delivered = sends.get(config.name, (0, False))
            if delivered:  # an earlier attempt of this activity got through: do not send twice
                results[config.name] = DeliveryResult(channel=config.name, delivered=True, attempts=count)
            else:
                pending.append((config, count))
        sent = await asyncio.gather(*(self._send(config, notification) for config, _ in pending))
        for (config, count), result in zip(pending, sent, strict=True):
            results[config.name] = result.model_copy(update={"channel": config.name, "attempts": count + 1})

        if pending:
            async with self.db.write() as session:
                for config, _ in pending:
                    await self._record(session, notification, results[config.name])
        outcome = NotifyResult(results=[results[c.name] for c in configs])
        failed = [r for r in outcome.results if not r.delivered]
        if failed:
            summary = "; ".join(f"{r.channel}: {r.error or 'not delivered'}" for r in failed)
            raise ApplicationError(
                f"notification {notification.id} not delivered to {len(failed)} of {len(outcome.results)} "
                f"channel(s): {summary}",
                outcome.model_dump(mode="json"),
                type=NOT_DELIVERED,
                non_retryable=False,
            )
        return outcome

    async def _send(self, config: ChannelConfig, notification: Notification) -> DeliveryResult:
        try:
            channel = self.channel_factory(config)
            async with asyncio.timeout(config.timeout * 3 + 1):
                return await channel.send(notification)
        except TimeoutError:
            return DeliveryResult(channel=config.name, delivered=False, error=f"timed out after {config.timeout:g}s")
        except Exception as exc:  # an adapter bug must not stop the other channels
            log.exception("notification channel %s failed", config.name)
            return DeliveryResult(channel=config.name, delivered=False, error=f"{type(exc).__name__}: {exc}"[:500])

    async def _record(self, session: AsyncSession, notification: Notification, result: DeliveryResult) -> None:
        await log_repo.add(session=session, notification=notification, result=result)
        await audit_repo.add(
            session=session,
            actor="system",
            action="notification.delivered" if result.delivered else "notification.failed",
            target=notification.service_id,
            outcome="success" if result.delivered else "failure",
            details={
                "channel": result.channel,
                "kind": notification.kind.value,
                "notification_id": notification.id,
                "workflow_id": notification.workflow_id,
                "status_code": result.status_code,
                "error": result.error,
                "attempt": result.attempts,
            },
        )
