"""The dispatcher against the real store and a loopback webhook: group_wait, group_interval,
repeat_interval, send_resolved, silences, inhibition, mute windows, reminders. Each dispatch_once
builds a fresh dispatcher, so everything carried between calls lives in PostgreSQL (restart-safe)."""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import timedelta

import pytest
from alerting_helpers import T0, put_alert

from app.alerting.config import load_config
from app.alerting.dispatcher import dispatch_once

SECRET = "s3cret-hmac-key"


def webhook_check(req) -> str | None:
    ts, sig = req.headers.get("x-dbfleet-timestamp"), req.headers.get("x-dbfleet-signature", "")
    want = hmac.new(SECRET.encode(), ts.encode() + b"." + req.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(sig, "sha256=" + want):
        return "bad signature"
    body = req.json
    missing = {"version", "groupKey", "status", "receiver", "groupLabels", "commonLabels", "alerts"} - body.keys()
    if missing or body["version"] != "4":
        return f"missing {missing}"
    for a in body["alerts"]:
        if {"status", "labels", "annotations", "startsAt", "endsAt", "fingerprint"} - a.keys():
            return "alert fields missing"
    return None


def config(url: str, **route):
    os.environ["DBF_AL_HMAC"] = SECRET
    return load_config({
        "route": {"receiver": "ops", "group_by": ["alertname", "instance"], "group_wait": "30s",
                  "group_interval": "5m", "repeat_interval": "4h", **route},
        "receivers": [{"type": "webhook", "name": "ops", "url": url + "/hook", "hmac_secret_ref": "env:DBF_AL_HMAC"}],
        "inhibit_rules": [{"source_matchers": ["alertname=instance_unreachable"],
                           "target_matchers": ["alertname!=instance_unreachable"], "equal": ["instance"]}],
        "time_intervals": [{"name": "monday-maintenance", "time_intervals": [{"weekdays": ["monday"]}]}],
        "silence_reminder": {"after": "4h", "repeat": "1d"},
    })


async def test_group_wait_interval_repeat_and_resolve(store, receiver_factory):
    hook = receiver_factory(check=webhook_check)
    cfg = config(hook.url)
    await put_alert(store, "a", object="standby1")
    await put_alert(store, "b", object="standby2")
    r = await dispatch_once(store, cfg, T0)
    assert (r.ingested, r.sent) == (2, 0)  # group_wait holds the first notification
    r = await dispatch_once(store, cfg, T0 + timedelta(seconds=31))
    assert r.sent == 1 and not hook.errors
    first = hook.accepted[0].json
    assert first["status"] == "firing" and len(first["alerts"]) == 2
    assert first["groupLabels"] == {"alertname": "replication_lag", "instance": "db1"}

    await put_alert(store, "c", object="standby3")
    assert (await dispatch_once(store, cfg, T0 + timedelta(seconds=45))).sent == 0  # waits for group_interval
    assert (await dispatch_once(store, cfg, T0 + timedelta(seconds=31, minutes=5))).sent == 1
    assert len(hook.accepted[-1].json["alerts"]) == 3
    assert (await dispatch_once(store, cfg, T0 + timedelta(seconds=31, minutes=10))).sent == 0  # nothing new
    assert (await dispatch_once(store, cfg, T0 + timedelta(hours=4, minutes=6))).sent == 1  # repeat_interval

    for fp in "abc":
        await put_alert(store, fp, status="resolved", ends_at=T0 + timedelta(hours=5), object=f"x{fp}")
    assert (await dispatch_once(store, cfg, T0 + timedelta(hours=5))).sent == 1
    last = hook.accepted[-1].json
    assert last["status"] == "resolved" and {a["status"] for a in last["alerts"]} == {"resolved"}
    assert len({r.json["dbfleet"]["dedupKey"] for r in hook.accepted}) == 1
    async with store.raw() as conn:
        assert await conn.fetchval("select count(*) from alert_groups") == 0  # emptied groups go away
    assert len(hook.accepted) == 4 and not hook.errors


async def test_a_firing_and_resolved_blip_is_not_sent(store, receiver_factory):
    hook = receiver_factory()
    cfg = config(hook.url)
    await put_alert(store, "a")
    await dispatch_once(store, cfg, T0)
    await put_alert(store, "a", status="resolved")
    await dispatch_once(store, cfg, T0 + timedelta(minutes=1))
    assert hook.requests == []


async def test_silenced_alerts_are_not_sent(store, receiver_factory):
    hook = receiver_factory()
    cfg = config(hook.url)
    async with store.raw() as conn:
        await conn.execute("insert into silences (matchers, starts_at, ends_at, created_by, comment) "
                           "values ($1::jsonb, $2, $3, 'alice', 'reindexing db1')",
                           '["instance=db1"]', T0 - timedelta(minutes=1), T0 + timedelta(hours=1))
    await put_alert(store, "a", instance="db1")
    await put_alert(store, "b", instance="db2")
    await dispatch_once(store, cfg, T0)
    await dispatch_once(store, cfg, T0 + timedelta(minutes=1))
    assert [r.json["groupLabels"]["instance"] for r in hook.accepted] == ["db2"]
    # The silence ends: db1 is told at its next group tick.
    await dispatch_once(store, cfg, T0 + timedelta(hours=1, minutes=5))
    assert sorted(r.json["groupLabels"]["instance"] for r in hook.accepted) == ["db1", "db2"]


async def test_unreachable_instance_inhibits_its_other_alerts(store, receiver_factory):
    hook = receiver_factory()
    cfg = config(hook.url)
    await put_alert(store, "u", alertname="instance_unreachable", instance="db1", object="")
    await put_alert(store, "lag", instance="db1")
    await put_alert(store, "lag2", instance="db2")
    await dispatch_once(store, cfg, T0)
    await dispatch_once(store, cfg, T0 + timedelta(minutes=1))
    sent = sorted((r.json["groupLabels"]["alertname"], r.json["groupLabels"]["instance"]) for r in hook.accepted)
    assert sent == [("instance_unreachable", "db1"), ("replication_lag", "db2")]


async def test_mute_time_interval_holds_notifications(store, receiver_factory):
    hook = receiver_factory()
    cfg = config(hook.url, mute_time_intervals=["monday-maintenance"])
    await put_alert(store, "a")
    await dispatch_once(store, cfg, T0)
    await dispatch_once(store, cfg, T0 + timedelta(minutes=1))  # Monday: muted
    assert hook.requests == []
    await dispatch_once(store, cfg, T0 + timedelta(hours=14, minutes=1))  # Tuesday 00:01
    assert len(hook.accepted) == 1


async def test_silence_hiding_a_critical_alert_too_long_sends_a_reminder(store, receiver_factory):
    hook = receiver_factory()
    cfg = config(hook.url)
    async with store.raw() as conn:
        await conn.execute("insert into silences (matchers, starts_at, ends_at, created_by, comment) "
                           "values ($1::jsonb, $2, $3, 'bob', 'noisy standby')",
                           '["instance=db1"]', T0 - timedelta(hours=5), T0 + timedelta(days=2))
    await put_alert(store, "a", instance="db1", starts_at=T0 - timedelta(hours=5))
    await put_alert(store, "w", instance="db1", severity="warning", alertname="bloat", starts_at=T0 - timedelta(hours=5))
    r = await dispatch_once(store, cfg, T0)
    assert r.reminders == 1
    body = hook.accepted[0].json
    assert body["dbfleet"]["kind"] == "reminder" and "bob" in body["dbfleet"]["note"]
    assert [a["fingerprint"] for a in body["alerts"]] == ["a"]  # only the critical one
    assert (await dispatch_once(store, cfg, T0 + timedelta(hours=1))).reminders == 0  # once per `repeat`
    assert (await dispatch_once(store, cfg, T0 + timedelta(days=1, minutes=1))).reminders == 1


async def test_runbook_url_is_added_per_check(store, receiver_factory):
    hook = receiver_factory()
    cfg = config(hook.url).model_copy(update={"runbook_urls": {"replication_lag": "https://wiki/lag"}})
    await put_alert(store, "a")
    await dispatch_once(store, cfg, T0)
    await dispatch_once(store, cfg, T0 + timedelta(minutes=1))
    assert hook.accepted[0].json["alerts"][0]["annotations"]["runbook_url"] == "https://wiki/lag"


@pytest.mark.parametrize("send_resolved,expected", [(True, ["firing", "resolved"]), (False, ["firing"])])
async def test_send_resolved(store, receiver_factory, send_resolved, expected):
    hook = receiver_factory()
    raw = config(hook.url).model_dump(by_alias=True)
    raw["receivers"][0]["send_resolved"] = send_resolved
    cfg = load_config(raw)
    await put_alert(store, "a")
    await dispatch_once(store, cfg, T0)
    await dispatch_once(store, cfg, T0 + timedelta(minutes=1))
    await put_alert(store, "a", status="resolved")
    await dispatch_once(store, cfg, T0 + timedelta(minutes=7))
    assert [r.json["status"] for r in hook.accepted] == expected


async def test_a_routing_change_closes_the_old_group_and_reroutes(store, receiver_factory):
    from app.alerting.dispatcher import Dispatcher

    hook = receiver_factory()
    old = config(hook.url)
    await put_alert(store, "a")
    await dispatch_once(store, old, T0)
    await dispatch_once(store, old, T0 + timedelta(minutes=1))
    new = config(hook.url, group_by=["instance"])  # same receiver, different groups
    await Dispatcher(store, new).reconcile(T0 + timedelta(minutes=2))
    await dispatch_once(store, new, T0 + timedelta(minutes=7))  # after the old group's group_interval
    seen = [(r.json["status"], tuple(sorted(r.json["groupLabels"]))) for r in hook.accepted]
    assert seen[0] == ("firing", ("alertname", "instance"))
    assert sorted(seen[1:]) == [("firing", ("instance",)), ("resolved", ("alertname", "instance"))]


async def test_with_no_alerting_config_the_outbox_is_drained_and_nothing_sent(store):
    import asyncio

    from app.alerting.dispatcher import run_dispatcher
    from app.settings import Settings

    await put_alert(store, "a")
    stop = asyncio.Event()
    task = asyncio.create_task(run_dispatcher(store, Settings(), stop))
    for _ in range(100):
        async with store.raw() as conn:
            if not await conn.fetchval("select count(*) from outbox where processed_at is null"):
                break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    async with store.raw() as conn:
        assert await conn.fetchval("select count(*) from outbox where processed_at is null") == 0
        assert await conn.fetchval("select status from alerts") == "firing"  # visible in GET /alerts
        assert await conn.fetchval("select count(*) from notifications") == 0
