"""PagerDuty Events API v2 against a loopback peer that checks what the real service requires."""

from __future__ import annotations

import json
import os
from collections import deque

import pytest
from alerting_helpers import alert

from app.alerting.sinks import PermanentError, RetryableError
from app.alerting.sinks.pagerduty import PagerDutyConfig, PagerDutySink

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"


def pagerduty_check(req) -> str | None:
    """The fields Events API v2 rejects an event without (developer.pagerduty.com, Send an Alert Event)."""
    if req.path != "/v2/enqueue":
        return f"unknown path {req.path}"
    if len(req.body) > 512 * 1024:
        return "event over 512 KB"
    e = req.json
    if e.get("routing_key") != ROUTING_KEY:
        return "invalid routing key"
    if e.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        return "bad event_action"
    if not e.get("dedup_key") or len(e["dedup_key"]) > 255:
        return "bad dedup_key"
    if e["event_action"] == "trigger":
        p = e.get("payload") or {}
        if not p.get("summary") or len(p["summary"]) > 1024 or not p.get("source"):
            return "payload.summary and payload.source are required"
        if p.get("severity") not in ("critical", "error", "warning", "info"):
            return "bad severity"
    return None


@pytest.fixture
def sink_for(receiver_factory):
    os.environ["DBF_AL_PD_KEY"] = ROUTING_KEY
    made = []

    def make(**kw):
        peer = receiver_factory(default=202, check=pagerduty_check, **kw)
        sink = PagerDutySink(PagerDutyConfig(type="pagerduty", name="pd", routing_key_ref="env:DBF_AL_PD_KEY",
                                             url=peer.url + "/v2/enqueue"))
        made.append(sink)
        return peer, sink

    yield make


async def test_trigger_then_resolve_with_one_dedup_key(sink_for, make_notification):
    peer, sink = sink_for()
    await sink.send(make_notification("firing"))
    await sink.send(make_notification("resolved"))
    assert peer.errors == []
    trigger, resolve = (r.json for r in peer.accepted)
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"]
    assert trigger["payload"]["severity"] == "critical" and trigger["payload"]["source"] == "db1"
    assert "replication_lag" in trigger["payload"]["summary"]


async def test_acknowledge_carries_only_the_dedup_key(sink_for, make_notification):
    peer, sink = sink_for()
    await sink.send(make_notification("firing"))
    await sink.send(make_notification("firing", kind="acknowledge", note="Acknowledged in dbfleet by alice"))
    assert peer.errors == []
    trigger, ack = (r.json for r in peer.accepted)
    assert ack == {"routing_key": ROUTING_KEY, "event_action": "acknowledge", "dedup_key": trigger["dedup_key"]}


async def test_limits_are_respected_for_huge_groups(sink_for, make_notification):
    peer, sink = sink_for()
    big = [alert(f"a{i}") for i in range(300)]
    for a in big:
        a["annotations"]["description"] = "x" * 5000
        a["annotations"]["summary"] = "s" * 3000
    await sink.send(make_notification("firing", alerts=big))
    assert peer.errors == [] and len(peer.accepted) == 1
    details = peer.accepted[0].json["payload"]["custom_details"]
    assert details["truncated_alerts"] > 0 and len(details["alerts"]) + details["truncated_alerts"] == 300


async def test_rejections_are_permanent_and_never_show_the_routing_key(sink_for, make_notification):
    os.environ["DBF_AL_PD_KEY"] = ROUTING_KEY
    peer, sink = sink_for()
    sink.config = sink.config.model_copy(update={"routing_key_ref": "env:DBF_AL_PD_WRONG"})
    os.environ["DBF_AL_PD_WRONG"] = "WRONGKEY-abcdefgh"
    peer.check = lambda req: f"invalid routing key {json.loads(req.body)['routing_key']}"
    with pytest.raises(PermanentError) as e:
        await sink.send(make_notification())
    assert "HTTP 400" in str(e.value) and "WRONGKEY-abcdefgh" not in str(e.value)


async def test_throttling_is_retryable(sink_for, make_notification):
    peer, sink = sink_for(script=deque([(429, 0)]))
    with pytest.raises(RetryableError):
        await sink.send(make_notification())
    await sink.send(make_notification())
    assert len(peer.accepted) == 1


async def test_a_missing_secret_is_permanent(sink_for, make_notification):
    _, sink = sink_for()
    sink.config = sink.config.model_copy(update={"routing_key_ref": "env:DBF_AL_NOT_SET"})
    with pytest.raises(PermanentError, match="DBF_AL_NOT_SET"):
        await sink.send(make_notification())
