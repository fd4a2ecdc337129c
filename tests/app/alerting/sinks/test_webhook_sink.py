"""Generic webhook: Alertmanager v4 shape, HMAC over timestamp + body, truncation."""

from __future__ import annotations

import hashlib
import hmac
import os

from alerting_helpers import alert

from app.alerting.sinks.webhook import WebhookConfig, WebhookSink


def test_hmac_is_over_timestamp_dot_body():
    from app.alerting.sinks.webhook import sign

    assert sign("k", "1700000000", b"{}") == hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()


async def test_v4_payload_signed_and_truncated(receiver_factory, make_notification):
    os.environ["DBF_AL_WH_SECRET"] = "whsec-0123456789"
    peer = receiver_factory()
    sink = WebhookSink(WebhookConfig(type="webhook", name="hook", url=peer.url + "/in",
                                     hmac_secret_ref="env:DBF_AL_WH_SECRET", max_alerts=2, verify_tls=False))
    n = make_notification("firing", alerts=[alert(f"a{i}") for i in range(5)], receiver="hook")
    await sink.send(n)
    req = peer.accepted[0]
    ts = req.headers["x-dbfleet-timestamp"]
    expected = hmac.new(b"whsec-0123456789", ts.encode() + b"." + req.body, hashlib.sha256).hexdigest()
    assert req.headers["x-dbfleet-signature"] == "sha256=" + expected
    assert req.headers["idempotency-key"] == n.idempotency_key
    body = req.json
    assert body["version"] == "4" and body["truncatedAlerts"] == 3 and len(body["alerts"]) == 2
    assert body["commonLabels"]["alertname"] == "replication_lag"
    assert body["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"  # Alertmanager's zero time while firing
