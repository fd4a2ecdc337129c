"""Acknowledged and silenced findings mute their alerts (app/alerting/pipeline/finding_mute.py), against
the real store and loopback receivers. Findings are written by the sweep's write path (record_run) and
changed by the API's own state change, so fingerprints, labels and states are the real ones."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote

import pytest
from alerting_helpers import Receiver

from app.alerting.config import load_config
from app.alerting.dispatcher import dispatch_once
from app.alerting.ingest import as_dict
from app.api.findings import _change_state
from app.db import Store
from app.findings import InstanceRef, record_run
from collectors.spec import Finding, Result, Severity

BASE = datetime.now(timezone.utc).replace(microsecond=0)  # state changes are stamped with the real clock


@pytest.fixture(autouse=True)
def _base_is_now():
    """Each test's BASE is its own start: a BASE from collection time falls behind the real clock
    that stamps state changes when the suite runs long before this module."""
    global BASE
    BASE = datetime.now(timezone.utc).replace(microsecond=0)


def lag(obj: str, severity: Severity = Severity.critical) -> Finding:
    return Finding("replication_lag", obj, severity, f"{obj} is 900 s behind", {"lag_seconds": 900},
                   "check the standby's replay")


async def sweep(store: Store, at: datetime, *found: Finding, instance: str = "db1") -> dict[str, int]:
    """One health run on `instance` as a sweep writes it; returns object -> finding id."""
    async with store.raw() as conn:
        iid = await conn.fetchval("select id from instances where name = $1", instance) or await conn.fetchval(
            "insert into instances (name, engine, host, port, dbname, \"user\", tls_mode, tags) "
            "values ($1, 'postgres', 'h', 5432, '', '', 'prefer', '{\"env\": \"prod\"}') returning id", instance)
        await record_run(conn, InstanceRef(iid, instance, "postgres", {"env": "prod"}), "health",
                         Result(findings=list(found)), at, 1.0)
        rows = await conn.fetch("select object, id from findings where instance_id = $1", iid)
    return {r["object"]: r["id"] for r in rows}


async def change(store: Store, finding_id: int, state: str, **kw) -> dict:
    """The API's own state change (:ack, :silence, :resolve), committed as a request would be."""
    async with store.sessions() as session, session.begin():
        return await _change_state(session, finding_id, state, "alice", "on it", **kw)


async def told(store: Store, cfg, *found: Finding) -> dict[str, int]:
    """Findings swept at BASE and, once group_wait has passed, sent to the receiver."""
    ids = await sweep(store, BASE, *found)
    await dispatch_once(store, cfg, BASE)
    await dispatch_once(store, cfg, BASE + timedelta(seconds=31))
    return ids


def webhook_config(url: str, **route) -> object:
    return load_config({
        "route": {"receiver": "ops", "group_by": ["alertname", "instance"], "group_wait": "30s",
                  "group_interval": "5m", "repeat_interval": "1h", **route},
        "receivers": [{"type": "webhook", "name": "ops", "url": url + "/hook"}],
    })


def firing_objects(req) -> list[str]:
    return sorted(a["labels"]["object"] for a in req.json["alerts"] if a["status"] == "firing")


async def test_a_silenced_finding_is_not_reminded_on_repeat_interval(store, receiver_factory):
    hook: Receiver = receiver_factory()
    cfg = webhook_config(hook.url)
    ids = await sweep(store, BASE, lag("standby1"))
    await dispatch_once(store, cfg, BASE)
    assert (await dispatch_once(store, cfg, BASE + timedelta(seconds=31))).sent == 1
    await change(store, ids["standby1"], "silenced")
    for hours in (1, 2, 5):  # every repeat_interval, and long after
        assert (await dispatch_once(store, cfg, BASE + timedelta(hours=hours, minutes=6))).sent == 0
    assert len(hook.accepted) == 1


async def test_after_the_silence_ends_the_finding_reopens_and_its_alert_fires_at_once(store, receiver_factory):
    hook = receiver_factory()
    cfg = webhook_config(hook.url)
    ids = await told(store, cfg, lag("standby1"))
    silenced = await change(store, ids["standby1"], "silenced", until=BASE + timedelta(hours=2))
    assert silenced["state_until"] == (BASE + timedelta(hours=2)).isoformat()
    assert (await dispatch_once(store, cfg, BASE + timedelta(hours=1, minutes=56))).sent == 0  # next tick 2h01
    r = await dispatch_once(store, cfg, BASE + timedelta(hours=2, seconds=30))  # not a tick: flushed at once
    assert (r.silences_ended, r.sent) == (1, 1)
    assert firing_objects(hook.accepted[-1]) == ["standby1"] and len(hook.accepted) == 2
    async with store.raw() as conn:
        state = await conn.fetchrow("select state, state_by, state_until from findings where id = $1", ids["standby1"])
        audit = await conn.fetch("select actor, action, details from audit_log order by id")
    assert tuple(state) == ("open", "dbfleet", None)
    assert [(a["actor"], a["action"]) for a in audit] == [("alice", "finding.silenced"), ("dbfleet", "finding.open")]
    assert as_dict(audit[0]["details"])["until"] == (BASE + timedelta(hours=2)).isoformat()


async def test_an_acknowledged_finding_is_muted_until_it_escalates(store, receiver_factory):
    hook = receiver_factory()
    cfg = webhook_config(hook.url)
    ids = await told(store, cfg, lag("standby1", Severity.warning))
    await change(store, ids["standby1"], "acknowledged")
    assert (await dispatch_once(store, cfg, BASE + timedelta(minutes=1))).sent == 0
    assert (await dispatch_once(store, cfg, BASE + timedelta(hours=1, minutes=6))).sent == 0  # no reminder
    await sweep(store, BASE + timedelta(hours=1, minutes=7), lag("standby1", Severity.critical))  # worse now
    assert (await dispatch_once(store, cfg, BASE + timedelta(hours=1, minutes=11))).sent == 1
    escalated = hook.accepted[-1].json
    assert escalated["status"] == "firing" and escalated["alerts"][0]["labels"]["severity"] == "critical"


async def test_a_mixed_group_sends_only_its_unmuted_alert(store, receiver_factory):
    hook = receiver_factory()
    cfg = webhook_config(hook.url)
    ids = await sweep(store, BASE, lag("standby1"), lag("standby2"))
    await dispatch_once(store, cfg, BASE)
    await change(store, ids["standby1"], "acknowledged")  # before the receiver ever heard of it
    await dispatch_once(store, cfg, BASE + timedelta(seconds=31))
    assert [firing_objects(r) for r in hook.accepted] == [["standby2"]]
    await dispatch_once(store, cfg, BASE + timedelta(hours=1, minutes=6))  # repeat_interval
    assert [firing_objects(r) for r in hook.accepted] == [["standby2"], ["standby2"]]
    await sweep(store, BASE + timedelta(hours=1, minutes=7), lag("standby2"))  # standby1 resolves
    assert (await dispatch_once(store, cfg, BASE + timedelta(hours=1, minutes=11))).sent == 0  # never told of it


async def test_a_muted_alert_the_receiver_was_told_about_still_resolves(store, receiver_factory):
    hook = receiver_factory()
    cfg = webhook_config(hook.url)
    ids = await told(store, cfg, lag("standby1"), lag("standby2"))
    await change(store, ids["standby1"], "silenced")
    await change(store, ids["standby2"], "acknowledged")
    assert (await dispatch_once(store, cfg, BASE + timedelta(minutes=1))).sent == 0  # all muted: nothing to say
    assert (await dispatch_once(store, cfg, BASE + timedelta(hours=1, minutes=6))).sent == 0
    await sweep(store, BASE + timedelta(hours=1, minutes=7), lag("standby2"))  # standby1 resolves
    assert (await dispatch_once(store, cfg, BASE + timedelta(hours=1, minutes=11))).sent == 1
    last = hook.accepted[-1].json
    assert last["status"] == "resolved" and [a["labels"]["object"] for a in last["alerts"]] == ["standby1"]


async def test_a_reopened_finding_fires_at_the_next_flush(store, receiver_factory):
    hook = receiver_factory()
    cfg = webhook_config(hook.url)
    ids = await told(store, cfg, lag("standby1"))
    await change(store, ids["standby1"], "acknowledged")
    await dispatch_once(store, cfg, BASE + timedelta(minutes=1))
    await change(store, ids["standby1"], "open")
    assert (await dispatch_once(store, cfg, BASE + timedelta(minutes=2))).sent == 1  # group not due till 6m
    assert firing_objects(hook.accepted[-1]) == ["standby1"]


PD_KEY = "R0UT1NGKEY0123456789abcdef012345"


def pagerduty_check(req) -> str | None:
    e = req.json
    if e.get("routing_key") != PD_KEY or e.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        return "invalid event"
    return None if e.get("dedup_key") else "dedup_key is required"


def pagerduty_config(url: str, **receiver) -> object:
    os.environ["DBF_AL_MUTE_PD_KEY"] = PD_KEY
    return load_config({
        "route": {"receiver": "pd", "group_by": ["alertname", "instance"], "group_wait": "30s",
                  "group_interval": "5m", "repeat_interval": "1h"},
        "receivers": [{"type": "pagerduty", "name": "pd", "routing_key_ref": "env:DBF_AL_MUTE_PD_KEY",
                       "url": url + "/v2/enqueue", **receiver}],
    })


async def test_acknowledging_in_dbfleet_acknowledges_the_pagerduty_incident(store, receiver_factory):
    pd = receiver_factory(default=202, check=pagerduty_check)
    cfg = pagerduty_config(pd.url)
    ids = await told(store, cfg, lag("standby1"), lag("standby2"))
    await change(store, ids["standby1"], "acknowledged")
    assert (await dispatch_once(store, cfg, BASE + timedelta(minutes=1))).sent == 0  # standby2 still needs someone
    await change(store, ids["standby2"], "silenced", until=BASE + timedelta(days=1))
    assert (await dispatch_once(store, cfg, BASE + timedelta(minutes=1, seconds=5))).sent == 1  # at once
    assert (await dispatch_once(store, cfg, BASE + timedelta(hours=2))).sent == 0  # acknowledged once
    await sweep(store, BASE + timedelta(hours=3))  # both resolve
    await dispatch_once(store, cfg, BASE + timedelta(hours=3, minutes=1))
    assert pd.errors == []
    events = [r.json for r in pd.accepted]
    assert [e["event_action"] for e in events] == ["trigger", "acknowledge", "resolve"]
    assert len({e["dedup_key"] for e in events}) == 1


async def test_an_acknowledgement_from_pagerduty_is_not_echoed_back(store, receiver_factory):
    from app.alerting.finding_states import acknowledge_group
    from app.alerting.notification import dedup_key

    pd = receiver_factory(default=202, check=pagerduty_check)
    cfg = pagerduty_config(pd.url)
    await told(store, cfg, lag("standby1"))
    async with store.raw() as conn:
        key = await conn.fetchval("select group_key from alert_groups")
        acked = await acknowledge_group(conn, "pd", dedup_key(key, "pd"), "pagerduty:John Doe", "from PD",
                                        BASE + timedelta(minutes=1))
    assert len(acked) == 1
    assert (await dispatch_once(store, cfg, BASE + timedelta(minutes=6))).sent == 0
    assert (await dispatch_once(store, cfg, BASE + timedelta(hours=2))).sent == 0  # muted: no reminder either
    assert [r.json["event_action"] for r in pd.accepted] == ["trigger"]


@pytest.mark.parametrize("sync", [True, False])
async def test_acknowledging_in_dbfleet_acknowledges_the_opsgenie_alert(store, receiver_factory, sync):
    og = receiver_factory(default=202)
    os.environ["DBF_AL_MUTE_OG_KEY"] = "11111111-2222-3333-4444-555555555555"
    cfg = load_config({
        "route": {"receiver": "og", "group_by": ["instance"], "group_wait": "30s", "group_interval": "5m"},
        "receivers": [{"type": "opsgenie", "name": "og", "api_key_ref": "env:DBF_AL_MUTE_OG_KEY", "url": og.url,
                       "sync_acknowledgements": sync}],
    })
    ids = await told(store, cfg, lag("standby1"))
    await change(store, ids["standby1"], "acknowledged")
    await dispatch_once(store, cfg, BASE + timedelta(minutes=1))
    paths = [r.path.split("?")[0].rsplit("/", 1)[-1] for r in og.accepted]
    assert paths == (["alerts", "acknowledge"] if sync else ["alerts"])
    if sync:
        ack = og.accepted[-1]
        assert ack.path.endswith("/acknowledge?identifierType=alias")
        assert unquote(ack.path.split("/")[3]) == og.accepted[0].json["alias"]
        assert "Acknowledged in dbfleet by alice: on it" in ack.json["note"]
