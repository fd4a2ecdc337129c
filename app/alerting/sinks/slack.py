"""Slack incoming webhook: a block message saying what, where, how bad and what to do."""

from __future__ import annotations

from typing import Any, Literal

from app.alerting.notification import Notification
from app.alerting.sinks.base import SinkConfig, http_client, post, secret, truncate

ICONS = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}
MAX_ALERT_BLOCKS = 10  # Slack allows 50 blocks; a page of alerts is enough, the rest is counted


class SlackConfig(SinkConfig):
    type: Literal["slack"]
    webhook_url_ref: str
    channel: str | None = None


def message(n: Notification, channel: str | None = None) -> dict[str, Any]:
    icon = ":white_check_mark:" if n.status == "resolved" else ICONS.get(n.severity, ":bell:")
    shown = (n.firing or n.alerts)[:MAX_ALERT_BLOCKS]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(f"{n.title()}", 150)}},
    ]
    if n.note:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": truncate(n.note, 3000)}})
    for a in shown:
        labels, ann = a["labels"], a["annotations"]
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*What*\n{truncate(ann.get('summary') or labels.get('alertname', ''), 900)}"},
            {"type": "mrkdwn", "text": f"*Where*\n{labels.get('instance', '?')} {labels.get('object', '')}"},
            {"type": "mrkdwn", "text": f"*How bad*\n{icon} {labels.get('severity', '?')} ({a['status']})"},
            {"type": "mrkdwn", "text": f"*What to do*\n{truncate(ann.get('recommendation') or '-', 900)}"},
        ]})
    if len(n.firing or n.alerts) > len(shown):
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"and {len(n.firing or n.alerts) - len(shown)} more"}]})
    body: dict[str, Any] = {"text": truncate(f"{icon} {n.title()}", 3000), "blocks": blocks}
    if channel:
        body["channel"] = channel
    return body


class SlackSink:
    def __init__(self, config: SlackConfig):
        self.config = config
        self.client = http_client(config.timeout_s)

    async def send(self, n: Notification) -> None:
        what = f"slack {self.config.name}"
        url = await secret(self.config.webhook_url_ref, what)
        await post(self.client, url, what, [url], ok=(200,), json=message(n, self.config.channel))

    async def aclose(self) -> None:
        await self.client.aclose()
