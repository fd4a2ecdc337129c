"""Flush due groups: mute (time intervals) → silence → inhibit → finding mute (acknowledged and
silenced findings) → dedup, then enqueue a notification (durable send queue) and write the
notification log in the same transaction. Groups are claimed SKIP LOCKED."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from app import store_codec
from app.alerting.config import AlertingConfig
from app.alerting.ingest import as_dict
from app.alerting.notification import Notification
from app.alerting.pipeline.dedup import LogEntry, needs_update
from app.alerting.pipeline.finding_mute import (
    Muting,
    acknowledge_note,
    owes_resolve,
    split,
    to_acknowledge,
    told_firing,
)
from app.alerting.pipeline.inhibit import Inhibitor
from app.alerting.pipeline.mute import muted
from app.alerting.pipeline.silence import ActiveSilence, active_silences, silenced_by
from app.alerting.routing import Route, RoutingTree

_CLAIM = """
select group_key, route_id, receiver, labels from alert_groups
where next_flush_at <= $1 order by next_flush_at limit $2 for update skip locked
"""
# The finding behind each alert (same fingerprint; threshold-rule alerts have none) comes along:
# its acknowledgement or silence mutes the alert (pipeline/finding_mute.py).
_MEMBERS = """
select m.group_key, a.fingerprint, a.status, a.severity, a.labels, a.annotations, a.starts_at, a.ends_at,
       a.changed_at, f.state as finding_state, f.state_until, f.state_severity, f.state_by, f.state_note
from alert_group_members m join alerts a using (fingerprint)
left join findings f on f.fingerprint = a.fingerprint
where m.group_key = any($1::text[])
"""
_ENQUEUE = """
insert into notifications (receiver, group_key, dedup_key, kind, status, payload, state, next_attempt_at,
                           oldest_change_at)
select r, k, d, 'alert', s, p, 'pending', $6, o
from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $7::timestamptz[]) as t(r, k, d, s, p, o)
"""
_LOG = """
insert into notification_log (group_key, receiver, firing, resolved, muted, sent_at)
select * , $6 from unnest($1::text[], $2::text[], $3::jsonb[], $4::jsonb[], $5::jsonb[])
on conflict (group_key, receiver) do update set firing = excluded.firing, resolved = excluded.resolved,
  muted = excluded.muted, sent_at = excluded.sent_at
"""
# Only alerts still resolved now leave the group: one that re-fired meanwhile stays.
_DROP_RESOLVED = """
delete from alert_group_members m using unnest($1::text[], $2::text[]) as t(k, f), alerts a
where m.group_key = t.k and m.fingerprint = t.f and a.fingerprint = t.f and a.status = 'resolved'
"""
_DROP_EMPTY = """
delete from alert_groups g where g.group_key = any($1::text[])
and not exists (select 1 from alert_group_members m where m.group_key = g.group_key)
"""
_RESCHEDULE = """
update alert_groups g set next_flush_at = t.n, last_flush_at = $3
from unnest($1::text[], $2::timestamptz[]) as t(k, n) where g.group_key = t.k
"""


@dataclass
class FlushPlan:
    """Everything one batch of group flushes writes, applied with a handful of set-based statements."""

    notifications: list[Notification] = field(default_factory=list)
    oldest_change: list[datetime | None] = field(default_factory=list)
    log: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    drop_resolved: list[tuple[str, str]] = field(default_factory=list)
    reschedule: list[tuple[str, datetime]] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    leave: list[tuple[str, str]] = field(default_factory=list)  # members routed elsewhere now


def alert_json(a: dict[str, Any]) -> dict[str, Any]:
    return {"fingerprint": a["fingerprint"], "status": a["status"], "labels": as_dict(a["labels"]),
            "annotations": as_dict(a["annotations"]), "starts_at": a["starts_at"].isoformat(),
            "ends_at": a["ends_at"].isoformat() if a["ends_at"] else None}


class Flusher:
    def __init__(self, config: AlertingConfig, tree: RoutingTree):
        self.config = config
        self.tree = tree
        self.receivers = {r.name: r for r in config.receivers}
        self.intervals = {t.name: t for t in config.time_intervals}

    def plan_group(self, plan: FlushPlan, group: dict[str, Any], alerts: list[dict[str, Any]],
                   entry: LogEntry | None, silences: list[ActiveSilence], inhibitor: Inhibitor,
                   now: datetime) -> None:
        key, receiver = group["group_key"], group["receiver"]
        route = self.tree.by_id.get(group["route_id"])
        rcfg = self.receivers.get(receiver)
        # After a config change an alert may belong elsewhere; reconcile put it into its new group.
        belongs = [a for a in alerts if key in {r.group_key(a["labels"]) for r in self.tree.match(a["labels"])}]
        if route is None or route.receiver != receiver or rcfg is None or (alerts and not belongs):
            plan.stale.append(key)
            self._close_stale(plan, group, alerts, entry)
            return
        plan.leave += [(key, a["fingerprint"]) for a in alerts if a not in belongs]
        alerts = belongs
        plan.reschedule.append((key, now + route.group_interval))
        if muted(route, self.intervals, now):
            return  # keep resolved alerts so the receiver still hears they resolved after the window
        unsilenced = [a for a in alerts if a["status"] == "firing" and not silenced_by(a["labels"], silences)
                      and not inhibitor.inhibited_by(a["fingerprint"], a["labels"])]
        self._plan_notification(plan, group, route, rcfg, alerts, split(unsilenced, entry, now), entry, now)

    def _plan_notification(self, plan: FlushPlan, group: dict[str, Any], route: Route, rcfg: Any,
                           alerts: list[dict[str, Any]], muting: Muting, entry: LogEntry | None,
                           now: datetime) -> None:
        key, receiver, firing = group["group_key"], group["receiver"], muting.firing
        told = told_firing(entry)
        resolved = [a for a in alerts if a["status"] == "resolved" and a["fingerprint"] in told]
        fset, rset = {a["fingerprint"] for a in firing}, {a["fingerprint"] for a in resolved}
        plan.drop_resolved += [(key, a["fingerprint"]) for a in alerts if a["status"] == "resolved"]
        if not (needs_update(entry, fset, rset, route.repeat_interval, rcfg.send_resolved, now)
                or owes_resolve(entry, rset)):
            return
        plan.log.append((key, receiver, json.dumps(sorted(fset)), json.dumps(sorted(rset)),
                         json.dumps(sorted(muting.muted))))
        shown = firing + (resolved if rcfg.send_resolved else [])
        if not shown:
            # All silenced or muted, or resolved with send_resolved off: recorded, nothing to say,
            # unless the receiver's incident should be acknowledged.
            self._acknowledge(plan, group, to_acknowledge(muting, rcfg))
            return
        plan.notifications.append(Notification(
            receiver=receiver, group_key=key, status="firing" if firing else "resolved",
            group_labels=as_dict(group["labels"]), alerts=[alert_json(a) for a in shown]))
        changed = [a["changed_at"] for a in shown
                   if a["fingerprint"] not in (entry.firing if a["status"] == "firing" else entry.resolved)] \
            if entry else [a["changed_at"] for a in shown]
        plan.oldest_change.append(min(changed) if changed else None)

    def _acknowledge(self, plan: FlushPlan, group: dict[str, Any], alerts: list[dict[str, Any]]) -> None:
        if alerts:
            plan.notifications.append(Notification(
                receiver=group["receiver"], group_key=group["group_key"], status="firing", kind="acknowledge",
                group_labels=as_dict(group["labels"]), alerts=[alert_json(a) for a in alerts],
                note=acknowledge_note(alerts)))
            plan.oldest_change.append(None)

    def _close_stale(self, plan: FlushPlan, group: dict[str, Any], alerts: list[dict[str, Any]],
                     entry: LogEntry | None) -> None:
        """Tell the receiver the old group is over, so no incident stays open under a dead dedup key."""
        told = [alert_json(a) for a in alerts if a["fingerprint"] in told_firing(entry)]
        if not told or group["receiver"] not in self.receivers:
            return
        for a in told:
            a["status"] = "resolved"
        plan.notifications.append(Notification(
            receiver=group["receiver"], group_key=group["group_key"], status="resolved",
            group_labels=as_dict(group["labels"]), alerts=told,
            note="The routing configuration changed: these alerts now belong to another group."))
        plan.oldest_change.append(None)

    async def flush_due(self, conn: asyncpg.Connection, now: datetime) -> tuple[int, int]:
        """Flush one batch of due groups; returns (groups flushed, notifications enqueued)."""
        async with conn.transaction():
            await conn.execute("set local plan_cache_mode = force_custom_plan")  # see send.py
            groups = [dict(g) for g in await conn.fetch(_CLAIM, now, self.config.batch_size)]
            if not groups:
                return 0, 0
            keys = [g["group_key"] for g in groups]
            members: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
            for r in await conn.fetch(_MEMBERS, keys):
                a = dict(r)
                a["labels"] = as_dict(a["labels"])
                members[a["group_key"]].append(a)
            log = {r["group_key"]: LogEntry(set(_list(r["firing"])), set(_list(r["resolved"])), r["sent_at"],
                                            set(_list(r["muted"])))
                   for r in await conn.fetch("select * from notification_log where group_key = any($1::text[])",
                                             keys)}
            silences = await active_silences(conn, now)
            inhibitor = await Inhibitor(self.config.inhibit_rules).load(conn)
            plan = FlushPlan()
            for g in groups:
                self.plan_group(plan, g, members[g["group_key"]], log.get(g["group_key"]), silences, inhibitor, now)
            await self._apply(conn, plan, now)
            return len(groups), len(plan.notifications)

    async def _apply(self, conn: asyncpg.Connection, plan: FlushPlan, now: datetime) -> None:
        if plan.notifications:
            ns = plan.notifications
            await conn.execute(_ENQUEUE, [n.receiver for n in ns], [n.group_key for n in ns],
                               [n.dedup_key for n in ns], [n.status for n in ns],
                               [json.dumps(n.to_json()) for n in ns], now, plan.oldest_change)
        if plan.log:
            await conn.execute(_LOG, *map(list, zip(*plan.log)), now)
        if plan.drop_resolved:
            await conn.execute(_DROP_RESOLVED, *map(list, zip(*plan.drop_resolved)))
        if plan.leave:
            await conn.execute("delete from alert_group_members m using unnest($1::text[], $2::text[]) as t(k, f) "
                               "where m.group_key = t.k and m.fingerprint = t.f", *map(list, zip(*plan.leave)))
        if plan.stale:
            await conn.execute("delete from alert_groups where group_key = any($1::text[])", plan.stale)
        if plan.reschedule:
            keys, times = map(list, zip(*plan.reschedule))
            await conn.execute(_RESCHEDULE, keys, times, now)
            await conn.execute(_DROP_EMPTY, keys)


def _list(value: Any) -> list[str]:
    return list(store_codec.decoded(value) or [])
