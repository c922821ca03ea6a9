"""Slack-compatible incoming webhook: ``{"text": fallback, "blocks": [header, section, context]}``.

Mattermost, Rocket.Chat and Discord's ``/slack`` endpoints accept the same shape.
"""

from __future__ import annotations

from typing import Any

from windflow.domain.notifications import ChannelConfig, DeliveryResult, Notification, NotificationKind
from windflow.escalation._http import post_json
from windflow.outbound import OutboundPolicy

ICONS = {
    NotificationKind.ESCALATED: ":rotating_light:",
    NotificationKind.GAVE_UP: ":x:",
    NotificationKind.NEEDS_DECISION: ":raising_hand:",
    NotificationKind.RECOVERED: ":white_check_mark:",
    NotificationKind.BLOCKED: ":construction:",
}
HEADER_MAX = 150  # Slack's limit for plain_text in a header block
SECTION_MAX = 3000  # ... and for a section's text
FIELDS_MAX = 10


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(notification: Notification) -> dict[str, Any]:
    icon = ICONS.get(notification.kind, ":bell:")
    fallback = f"{icon} [{notification.kind.value}] {notification.service_id}: {notification.title}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(f"{notification.title}", HEADER_MAX), "emoji": True},
        },
    ]
    if notification.text:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(notification.text, SECTION_MAX)}})
    fields = [
        {"type": "mrkdwn", "text": f"*Service*\n`{notification.service_id}`"},
        {"type": "mrkdwn", "text": f"*Kind*\n{icon} {notification.kind.value}"},
    ]
    for key, value in list(notification.details.items())[: FIELDS_MAX - len(fields)]:
        fields.append({"type": "mrkdwn", "text": _cut(f"*{key}*\n{value}", 2000)})
    blocks.append({"type": "section", "fields": fields})
    context = f"{notification.timestamp.isoformat()}"
    if notification.workflow_id:
        context += f" · workflow `{notification.workflow_id}`"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": _cut(fallback, SECTION_MAX), "blocks": blocks}


class SlackChannel:
    def __init__(self, config: ChannelConfig, outbound: OutboundPolicy | None = None) -> None:
        self.config = config
        self.outbound = outbound

    @property
    def name(self) -> str:
        return self.config.name

    async def send(self, notification: Notification) -> DeliveryResult:
        return await post_json(self.config, slack_payload(notification), outbound=self.outbound)
