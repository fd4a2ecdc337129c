"""Generic webhook: Alertmanager webhook v4 JSON, signed with HMAC-SHA256 over timestamp + body."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, Literal

from pydantic import model_validator

from app.alerting.notification import Notification
from app.alerting.sinks.base import PermanentError, SinkConfig, http_client, post, secret

SIGNATURE_HEADER = "X-Dbfleet-Signature"
TIMESTAMP_HEADER = "X-Dbfleet-Timestamp"


class WebhookConfig(SinkConfig):
    type: Literal["webhook"]
    url: str | None = None
    url_ref: str | None = None  # when the URL itself carries a token
    hmac_secret_ref: str | None = None
    verify_tls: bool = True
    max_alerts: int = 0  # 0 = all; Alertmanager's max_alerts with truncatedAlerts
    external_url: str = ""

    @model_validator(mode="after")
    def _one_url(self) -> WebhookConfig:
        if bool(self.url) == bool(self.url_ref):
            raise ValueError("give exactly one of url or url_ref")
        return self


def sign(secret_value: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of `timestamp.body`; receivers recompute it and reject stale timestamps."""
    return hmac.new(secret_value.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def payload(n: Notification, max_alerts: int = 0, external_url: str = "") -> dict[str, Any]:
    alerts = n.alerts[:max_alerts] if max_alerts else n.alerts
    return {
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": len(n.alerts) - len(alerts),
        "status": n.status,
        "receiver": n.receiver,
        "groupLabels": n.group_labels,
        "commonLabels": n.common("labels"),
        "commonAnnotations": n.common("annotations"),
        "externalURL": external_url,
        "alerts": [{
            "status": a["status"], "labels": a["labels"], "annotations": a["annotations"],
            "startsAt": a["starts_at"], "endsAt": a.get("ends_at") or "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": a["fingerprint"],
        } for a in alerts],
        "dbfleet": {"kind": n.kind, "note": n.note, "dedupKey": n.dedup_key},
    }


class WebhookSink:
    def __init__(self, config: WebhookConfig):
        self.config = config
        self.client = http_client(config.timeout_s, config.verify_tls)

    async def send(self, n: Notification) -> None:
        url = self.config.url or await secret(self.config.url_ref, f"webhook {self.config.name}")
        body = json.dumps(payload(n, self.config.max_alerts, self.config.external_url)).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": n.idempotency_key}
        key = None
        if self.config.hmac_secret_ref:
            key = await secret(self.config.hmac_secret_ref, f"webhook {self.config.name}")
            ts = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = ts
            headers[SIGNATURE_HEADER] = "sha256=" + sign(key, ts, body)
        if not url.startswith(("http://", "https://")):
            raise PermanentError(f"webhook {self.config.name}: the URL is not http(s)")
        await post(self.client, url, f"webhook {self.config.name}", [key], content=body, headers=headers)

    async def aclose(self) -> None:
        await self.client.aclose()
