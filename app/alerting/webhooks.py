"""Webhooks from PagerDuty and Opsgenie: is this request really theirs, and which acknowledgements
does it carry. The dedup key they send back is the group's (notification.dedup_key), which
finding_states.acknowledge_group maps to the findings behind the group.

- PagerDuty webhooks v3: `X-PagerDuty-Signature: v1=<hex HMAC-SHA256 of the raw body>`, several
  signatures comma-separated while a secret is rotated; event `incident.acknowledged` with
  `data.incident_key` (our dedup key) and `agent.summary` (who).
- Opsgenie webhook integration: no signature, so a custom header carrying a shared token; action
  `Acknowledge` with `alert.alias` (our dedup key) and `alert.username` (who).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.inventory.credentials import resolve_credential

PAGERDUTY_SIGNATURE = "X-PagerDuty-Signature"


@dataclass(frozen=True)
class Acknowledgement:
    dedup_key: str
    who: str  # state_by: pagerduty:<user> or opsgenie:<user>
    note: str


def pagerduty_signed(secret: str, body: bytes, header: str) -> bool:
    want = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    given = [s.strip()[3:] for s in header.split(",") if s.strip().startswith("v1=")]
    return any(hmac.compare_digest(g.encode(), want.encode()) for g in given)


def pagerduty_acknowledgements(body: Mapping[str, Any]) -> list[Acknowledgement]:
    event = body.get("event") or {}
    data = event.get("data") or {}
    if event.get("event_type") != "incident.acknowledged" or not data.get("incident_key"):
        return []  # other events (triggered, resolved, annotated...) change nothing here
    who = (event.get("agent") or {}).get("summary") or "unknown"
    incident = data.get("number") or data.get("id") or "?"
    return [Acknowledgement(str(data["incident_key"]), f"pagerduty:{who}",
                            f"acknowledged in PagerDuty (incident {incident})")]


def opsgenie_acknowledgements(body: Mapping[str, Any]) -> list[Acknowledgement]:
    alert = body.get("alert") or {}
    if body.get("action") != "Acknowledge" or not alert.get("alias"):
        return []
    who = alert.get("username") or "unknown"
    return [Acknowledgement(str(alert["alias"]), f"opsgenie:{who}",
                            f"acknowledged in Opsgenie (alert {alert.get('tinyId') or alert.get('alertId') or '?'})")]


async def _pagerduty_verified(config: Any, headers: Mapping[str, str], body: bytes) -> bool:
    secret = await resolve_credential(config.webhook_secret_ref)
    return bool(secret) and pagerduty_signed(secret, body, headers.get(PAGERDUTY_SIGNATURE, ""))


async def _opsgenie_verified(config: Any, headers: Mapping[str, str], body: bytes) -> bool:
    token = await resolve_credential(config.webhook_token_ref)
    given = headers.get(config.webhook_token_header, "")
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


@dataclass(frozen=True)
class Provider:
    secret_field: str  # the receiver config field holding the secret reference
    verified: Callable[[Any, Mapping[str, str], bytes], Any]
    acknowledgements: Callable[[Mapping[str, Any]], list[Acknowledgement]]


PROVIDERS = {
    "pagerduty": Provider("webhook_secret_ref", _pagerduty_verified, pagerduty_acknowledgements),
    "opsgenie": Provider("webhook_token_ref", _opsgenie_verified, opsgenie_acknowledgements),
}


def provider_for(config: Any) -> Provider | None:
    """The receiver's webhook provider, or None when it takes no webhooks (type, or no secret set)."""
    provider = PROVIDERS.get(config.type)
    return provider if provider and getattr(config, provider.secret_field, None) else None
