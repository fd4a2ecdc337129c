"""Outbox → alerts and groups: claim pending outbox rows (SKIP LOCKED), apply them to the alert
state in id order, route each alert and put it into its groups. One transaction per batch."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from app import store_codec
from app.alerting.config import AlertingConfig
from app.alerting.routing import RoutingTree

_CLAIM = """
select id, fingerprint, status, severity, labels, annotations, starts_at, ends_at, created_at
from outbox where processed_at is null order by id limit $1 for update skip locked
"""

# The guard on outbox_id keeps the newest state when two dispatchers apply rows of one alert.
_UPSERT_ALERTS = """
insert into alerts as a (fingerprint, status, severity, labels, annotations, starts_at, ends_at,
                         outbox_id, changed_at, updated_at)
select f, s, sev, l, an, st, en, oid, ch, $10
from unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[], $6::timestamptz[],
            $7::timestamptz[], $8::bigint[], $9::timestamptz[]) as t(f, s, sev, l, an, st, en, oid, ch)
on conflict (fingerprint) do update set
  status = excluded.status, severity = excluded.severity, labels = excluded.labels,
  annotations = excluded.annotations, starts_at = excluded.starts_at, ends_at = excluded.ends_at,
  outbox_id = excluded.outbox_id, changed_at = excluded.changed_at, updated_at = excluded.updated_at
where a.outbox_id < excluded.outbox_id
"""

# Rows go in group_key order so concurrent dispatchers lock groups in the same order (no deadlock);
# DO UPDATE (not DO NOTHING) waits for a flush holding the group and re-inserts it if it was deleted.
_UPSERT_GROUPS = """
insert into alert_groups as g (group_key, route_id, receiver, labels, created_at, next_flush_at)
select k, r, rc, l, $5::timestamptz, $5::timestamptz + make_interval(secs => w)
from unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $6::float8[]) as t(k, r, rc, l, w)
order by k
on conflict (group_key) do update set receiver = excluded.receiver
"""

_ADD_MEMBERS = """
insert into alert_group_members (group_key, fingerprint)
select * from unnest($1::text[], $2::text[]) order by 1, 2
on conflict do nothing
"""


def as_dict(value: Any) -> dict[str, Any]:
    """jsonb arrives decoded through the store's pool, as text through a bare asyncpg connection."""
    return dict(store_codec.decoded(value) or {})


def _latest_per_alert(rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
    latest: dict[str, asyncpg.Record] = {}
    for r in rows:  # claimed in id order, so the last one wins
        latest[r["fingerprint"]] = r
    return list(latest.values())


def _annotations(row: asyncpg.Record, labels: dict[str, Any], config: AlertingConfig) -> dict[str, Any]:
    ann = as_dict(row["annotations"])
    runbook = config.runbook_urls.get(str(labels.get("alertname", "")))
    if runbook and "runbook_url" not in ann:
        ann["runbook_url"] = runbook
    return ann


async def ingest_outbox(conn: asyncpg.Connection, config: AlertingConfig, tree: RoutingTree,
                        now: datetime) -> int:
    """Claim and apply one batch; returns the number of outbox rows processed."""
    async with conn.transaction():
        await conn.execute("set local plan_cache_mode = force_custom_plan")  # see send.py
        rows = await conn.fetch(_CLAIM, config.batch_size)
        if not rows:
            return 0
        alerts, routed = [], []
        for r in _latest_per_alert(rows):
            labels = {k: str(v) for k, v in as_dict(r["labels"]).items()}
            ann = _annotations(r, labels, config)
            alerts.append((r["fingerprint"], r["status"], r["severity"], json.dumps(labels), json.dumps(ann),
                           r["starts_at"], r["ends_at"], r["id"], r["created_at"]))
            routed.append((r["fingerprint"], labels))
        await conn.execute(_UPSERT_ALERTS, *map(list, zip(*alerts)), now)
        await route_into_groups(conn, tree, routed, now)
        await conn.execute("update outbox set processed_at = $2 where id = any($1::bigint[])",
                           [r["id"] for r in rows], now)
        return len(rows)


async def route_into_groups(conn: asyncpg.Connection, tree: RoutingTree,
                            alerts: list[tuple[str, dict[str, str]]], now: datetime) -> None:
    """Put each alert into the group of every route it reaches (new groups wait group_wait)."""
    groups, members = {}, set()
    for fingerprint, labels in alerts:
        for route in tree.match(labels):
            if route.receiver == "null":
                continue
            key = route.group_key(labels)
            groups[key] = (key, route.id, route.receiver, json.dumps(route.group_labels(labels)),
                           route.group_wait.total_seconds())
            members.add((key, fingerprint))
    if groups:
        k, rid, rc, lab, wait = zip(*sorted(groups.values()))
        await conn.execute(_UPSERT_GROUPS, list(k), list(rid), list(rc), list(lab), now, list(wait))
        gk, fp = zip(*sorted(members))
        await conn.execute(_ADD_MEMBERS, list(gk), list(fp))
