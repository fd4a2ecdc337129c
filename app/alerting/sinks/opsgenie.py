"""Opsgenie Alert API: create with alias = the stable dedup key, acknowledge and close by alias.
Acknowledgements made in Opsgenie come back through its webhook integration (app/alerting/webhooks.py)."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field

from app.alerting.notification import Notification
from app.alerting.sinks.base import SinkConfig, http_client, post, secret, truncate


class OpsgenieConfig(SinkConfig):
    type: Literal["opsgenie"]
    api_key_ref: str
    url: str = "https://api.opsgenie.com"
    priority_map: dict[str, Literal["P1", "P2", "P3", "P4", "P5"]] = Field(
        default_factory=lambda: {"critical": "P1", "warning": "P3", "info": "P5"})
    responders: list[dict[str, str]] = Field(default_factory=list)
    sync_acknowledgements: bool = True  # acknowledge the alert when dbfleet's findings are all muted
    # A token the Opsgenie webhook integration sends as a custom header to /api/v1/receivers/<name>/webhook:
    # Opsgenie acknowledgements then acknowledge the findings.
    webhook_token_ref: str | None = None
    webhook_token_header: str = "X-Dbfleet-Webhook-Token"


def create_body(n: Notification, config: OpsgenieConfig) -> dict[str, Any]:
    labels = n.common("labels")
    description = "\n\n".join(
        f"{a['labels'].get('instance', '')} {a['labels'].get('object', '')}: "
        f"{a['annotations'].get('description', '')}\nWhat to do: {a['annotations'].get('recommendation', '')}"
        for a in n.firing or n.alerts)
    return {
        "message": truncate(n.title(), 130), "alias": n.dedup_key,
        "description": truncate(description, 15000),
        "priority": config.priority_map.get(n.severity, "P3"),
        "tags": sorted({f"{k}:{v}"[:50] for k, v in labels.items()})[:20],
        "details": {k: str(v)[:8000] for k, v in n.group_labels.items()},
        "entity": labels.get("instance", ""), "source": "dbfleet", "note": n.note,
        **({"responders": config.responders} if config.responders else {}),
    }


class OpsgenieSink:
    def __init__(self, config: OpsgenieConfig):
        self.config = config
        self.client = http_client(config.timeout_s)

    async def send(self, n: Notification) -> None:
        what = f"opsgenie {self.config.name}"
        key = await secret(self.config.api_key_ref, what)
        headers = {"Authorization": f"GenieKey {key}"}
        base = self.config.url.rstrip("/")
        alias = quote(n.dedup_key, safe='')
        if n.status == "resolved" and n.kind == "alert":
            url = f"{base}/v2/alerts/{alias}/close?identifierType=alias"
            await post(self.client, url, what, [key], json={"source": "dbfleet", "note": "resolved"},
                       headers=headers)
        elif n.kind == "acknowledge":
            url = f"{base}/v2/alerts/{alias}/acknowledge?identifierType=alias"
            await post(self.client, url, what, [key], headers=headers,
                       json={"source": "dbfleet", "user": "dbfleet", "note": truncate(n.note, 25000)})
        else:
            await post(self.client, f"{base}/v2/alerts", what, [key], json=create_body(n, self.config),
                       headers=headers)

    async def aclose(self) -> None:
        await self.client.aclose()
