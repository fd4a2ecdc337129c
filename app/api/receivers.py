"""Receivers: delivery health (last success, last error, pending count), a test notification, and
the webhook through which PagerDuty and Opsgenie acknowledgements acknowledge findings."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from app.alerting.config import config_for
from app.alerting.finding_states import acknowledge_group
from app.alerting.notification import Notification
from app.alerting.pipeline.record import Outcome, record_receivers
from app.alerting.sinks import SinkError, build_sink
from app.alerting.webhooks import provider_for
from app.api import errors
from app.api.deps import OperatorDep, SettingsDep, StoreDep, ViewerDep
from app.api.params import WORD_PATTERN, ReceiverName, StrictJsonRoute
from app.inventory.credentials import CredentialError

router = APIRouter(prefix="/api/v1", tags=["receivers"], route_class=StrictJsonRoute)
log = logging.getLogger(__name__)
WEBHOOK_MAX_BYTES = 1_000_000  # PagerDuty and Opsgenie deliveries are a few KB

_STATUS = """
select r.receiver, r.last_success_at, r.last_error_at, r.last_error, r.sent_total, r.failed_total
from receiver_status r
"""
_NOTIFICATIONS = """
select id, receiver, group_key, dedup_key, kind, status, state, attempts, last_error, created_at, sent_at,
       next_attempt_at, jsonb_array_length(payload -> 'alerts') as alerts
from notifications where ($1::text is null or state = $1) and ($2::text is null or receiver = $2)
order by id desc limit $3
"""
class ReceiverOut(BaseModel):
    name: str
    type: str
    send_resolved: bool
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    sent_total: int
    failed_total: int
    pending: int = Field(description="notifications waiting to be sent")


class NotificationOut(BaseModel):
    id: int
    receiver: str
    group_key: str
    dedup_key: str | None
    kind: str
    status: str
    state: str = Field(description="pending, sent or failed")
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    next_attempt_at: datetime | None
    alerts: int | None = Field(description="alerts in the notification")


class TestSent(BaseModel):
    receiver: str
    ok: bool
    dedup_key: str


class WebhookHandled(BaseModel):
    receiver: str
    acknowledged: list[int] = Field(description="ids of the findings acknowledged")


_PENDING = "select receiver, count(*) as pending from notifications where state = 'pending' group by receiver"


@router.get("/receivers", response_model=list[ReceiverOut], responses=errors.VIEWER)
async def list_receivers(store: StoreDep, settings: SettingsDep, _: ViewerDep) -> list[dict[str, Any]]:
    config = config_for(settings)
    async with store.raw() as conn:
        health = {r["receiver"]: dict(r) for r in await conn.fetch(_STATUS)}
        pending = {r["receiver"]: r["pending"] for r in await conn.fetch(_PENDING)}
    out = []
    for r in config.receivers:  # only type and name from the config: the rest may hold secrets
        h = health.get(r.name, {})
        out.append({"name": r.name, "type": r.type, "send_resolved": r.send_resolved,
                    "last_success_at": h.get("last_success_at"), "last_error_at": h.get("last_error_at"),
                    "last_error": h.get("last_error"), "sent_total": h.get("sent_total", 0),
                    "failed_total": h.get("failed_total", 0), "pending": pending.get(r.name, 0)})
    return out


@router.get("/notifications", response_model=list[NotificationOut], responses=errors.VIEWER)
async def list_notifications(store: StoreDep, _: ViewerDep, state: Literal["pending", "sent", "failed"] | None = None,
                             receiver: Annotated[str | None, Query(pattern=WORD_PATTERN)] = None, limit: int = Query(50, ge=1, le=1000)) -> list[dict[str, Any]]:
    """The send queue and its history, newest first: permanent failures stay here with their error."""
    async with store.raw() as conn:
        rows = await conn.fetch(_NOTIFICATIONS, state, receiver, limit)
    return [dict(r) for r in rows]


@router.post("/receivers/{name}:test", response_model=TestSent,
             responses=errors.OPERATOR | errors.responses(404, 502))
async def test_receiver(name: ReceiverName, store: StoreDep, settings: SettingsDep, who: OperatorDep) -> dict[str, Any]:
    """Send a test notification now (not queued) and say whether the receiver took it."""
    rcfg = next((r for r in config_for(settings).receivers if r.name == name), None)
    if rcfg is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no receiver {name!r} in alerting.receivers")
    now = datetime.now(timezone.utc)
    n = Notification(receiver=name, group_key=f"test:{name}", status="firing", kind="test",
                     group_labels={"alertname": "dbfleet_test"}, note=f"Test notification requested by {who.name}.",
                     alerts=[{"fingerprint": "test", "status": "firing", "starts_at": now.isoformat(), "ends_at": None,
                              "labels": {"alertname": "dbfleet_test", "severity": "info", "instance": "dbfleet"},
                              "annotations": {"summary": "dbfleet test notification",
                                              "description": "If you can read this, the receiver works.",
                                              "recommendation": "Nothing to do."}}])
    sink = build_sink(rcfg)
    error = None
    try:
        await sink.send(n)
    except SinkError as e:
        error = str(e)  # sink errors are built secret-free
    finally:
        await sink.aclose()
    async with store.raw() as conn:
        await record_receivers(conn, [Outcome(0, name, "failed" if error else "sent", error)], now)
    if error:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, error)
    return {"receiver": name, "ok": True, "dedup_key": n.dedup_key}


@router.post("/receivers/{name}/webhook", response_model=WebhookHandled,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"type": "object", "description": "the provider's delivery"}}}}},
             responses=errors.responses(400, 401, 404, 413, 422, 503))
async def receiver_webhook(name: ReceiverName, request: Request, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    """PagerDuty (webhooks v3) or Opsgenie acknowledgements acknowledge the findings behind the group.
    No API key: the provider's signature (or shared token header) is the credential; 401 without it."""
    rcfg = next((r for r in config_for(settings).receivers if r.name == name), None)
    provider = provider_for(rcfg) if rcfg is not None else None
    if provider is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"receiver {name!r} takes no webhooks: a pagerduty receiver "
                                                       "needs webhook_secret_ref, an opsgenie one webhook_token_ref")
    body = await request.body()
    if len(body) > WEBHOOK_MAX_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body: over {WEBHOOK_MAX_BYTES} bytes")
    try:
        verified = await provider.verified(rcfg, request.headers, body)
    except CredentialError as e:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"{provider.secret_field}: {e}") from None
    if not verified:
        log.warning("receiver %s: webhook refused, bad signature or token", name)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"receiver {name!r}: bad or missing webhook signature")
    try:
        acks = provider.acknowledgements(json.loads(body))
    except (ValueError, AttributeError):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body: not a {rcfg.type} webhook") from None
    now = datetime.now(timezone.utc)
    acknowledged: list[int] = []
    async with store.raw() as conn, conn.transaction():
        for ack in acks:
            acknowledged += await acknowledge_group(conn, name, ack.dedup_key, ack.who, ack.note, now)
    return {"receiver": name, "acknowledged": acknowledged}
