"""PagerDuty Events API v2: trigger, acknowledge and resolve by a stable dedup_key derived from the
group key. Acknowledgements made in PagerDuty come back through webhooks v3 (app/alerting/webhooks.py)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from app.alerting.notification import Notification
from app.alerting.sinks.base import SinkConfig, http_client, post, secret, truncate

SUMMARY_MAX = 1024
PAYLOAD_MAX = 512 * 1024  # PagerDuty rejects events over 512 KB
PD_SEVERITIES = ("critical", "error", "warning", "info")


class PagerDutyConfig(SinkConfig):
    type: Literal["pagerduty"]
    routing_key_ref: str
    url: str = "https://events.pagerduty.com/v2/enqueue"
    source: str = "dbfleet"
    severity_map: dict[str, Literal["critical", "error", "warning", "info"]] = Field(
        default_factory=lambda: {"critical": "critical", "warning": "warning", "info": "info"})
    client_url: str = ""
    sync_acknowledgements: bool = True  # acknowledge the incident when dbfleet's findings are all muted
    # The signing secret of a webhooks v3 subscription (incident.acknowledged) posting to
    # /api/v1/receivers/<name>/webhook: PagerDuty acknowledgements then acknowledge the findings.
    webhook_secret_ref: str | None = None


def event(n: Notification, routing_key: str, config: PagerDutyConfig) -> dict[str, Any]:
    if n.status == "resolved" and n.kind == "alert":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": n.dedup_key}
    if n.kind == "acknowledge":
        return {"routing_key": routing_key, "event_action": "acknowledge", "dedup_key": n.dedup_key}
    labels = n.common("labels")
    body = {
        "routing_key": routing_key, "event_action": "trigger", "dedup_key": n.dedup_key,
        "client": "dbfleet", "client_url": config.client_url,
        "payload": {
            "summary": truncate(n.title(), SUMMARY_MAX),
            "source": labels.get("instance") or config.source,
            "severity": config.severity_map.get(n.severity, "warning"),
            "component": labels.get("object", ""), "group": labels.get("cluster", labels.get("env", "")),
            "class": labels.get("alertname", ""),
            "custom_details": {"note": n.note, "group_labels": n.group_labels, "alerts": n.alerts},
        },
    }
    _fit(body)
    return body


def _fit(body: dict[str, Any]) -> None:
    """Drop alerts from custom_details until the event fits PagerDuty's size limit."""
    details = body["payload"]["custom_details"]
    while len(json.dumps(body)) > PAYLOAD_MAX and details["alerts"]:
        keep = max(0, len(details["alerts"]) // 2)
        details["truncated_alerts"] = details.get("truncated_alerts", 0) + len(details["alerts"]) - keep
        details["alerts"] = details["alerts"][:keep]


class PagerDutySink:
    def __init__(self, config: PagerDutyConfig):
        self.config = config
        self.client = http_client(config.timeout_s)

    async def send(self, n: Notification) -> None:
        what = f"pagerduty {self.config.name}"
        key = await secret(self.config.routing_key_ref, what)
        await post(self.client, self.config.url, what, [key], ok=(200, 201, 202), json=event(n, key, self.config))

    async def aclose(self) -> None:
        await self.client.aclose()
