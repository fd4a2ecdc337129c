"""Threshold rules on samples (e.g. replication_lag_seconds > 300 for 5m) → outbox rows.

Like a Prometheus alerting rule: a series fires once its condition has held on every sample for
`for`, and resolves when a sample no longer breaches or the series stops reporting. Only
transitions reach the outbox; rule_alerts keeps the state. One dispatcher evaluates at a time.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

import asyncpg

from app import store_codec
from app.alerting.config import AlertingConfig, ThresholdRule

STALE_AFTER = timedelta(minutes=10)  # a series with no sample this long is treated as gone

# {op} comes from the rule's Literal[">", ">=", "<", "<="], never from free text.
_SERIES = """
with s as (
  select instance_id, object, ts, value, value {op} $2 as bad
  from samples where metric = $1 and ts > $3 and ts <= $4
), agg as (
  select instance_id, object, max(ts) as latest_at, max(ts) filter (where not bad) as ok_at
  from s group by instance_id, object
)
select agg.instance_id, agg.object, agg.latest_at,
       (select min(ts) from s where s.instance_id = agg.instance_id and s.object = agg.object and s.bad
          and s.ts > coalesce(agg.ok_at, '-infinity')) as bad_since,
       (select value from s where s.instance_id = agg.instance_id and s.object = agg.object
          order by ts desc limit 1) as latest_value
from agg
"""
_INSTANCES = "select id, name, engine, tags from instances where id = any($1::int[])"
_STATE = "select instance_id, object, status, since from rule_alerts where rule = $1"
_SET_STATE = """
insert into rule_alerts (rule, instance_id, object, status, since, changed_at) values ($1, $2, $3, $4, $5, $6)
on conflict (rule, instance_id, object) do update set status = excluded.status, since = excluded.since,
  changed_at = excluded.changed_at
"""
_OUTBOX = """
insert into outbox (finding_id, fingerprint, status, severity, labels, annotations, starts_at, ends_at)
values (null, $1, $2, $3, $4::jsonb, $5::jsonb, $6, $7)
"""


def rule_fingerprint(rule: str, instance_id: int, obj: str) -> str:
    return hashlib.sha256(f"rule\x1f{rule}\x1f{instance_id}\x1f{obj}".encode()).hexdigest()


def _labels(rule: ThresholdRule, inst: dict, obj: str) -> dict[str, str]:
    tags = store_codec.decoded(inst["tags"]) or {}
    return {**{k: str(v) for k, v in tags.items()}, "alertname": rule.name, "severity": rule.severity,
            "instance": inst["name"], "engine": inst["engine"], "object": obj, "metric": rule.metric}


def _annotations(rule: ThresholdRule, value: float | None, since: datetime) -> dict[str, str]:
    condition = f"{rule.metric} {rule.op} {rule.threshold:g} for {rule.for_}"
    return {"summary": rule.summary or condition,
            "description": f"{rule.metric} = {value if value is not None else 'no data'}; "
                           f"condition {condition} held since {since.isoformat()}",
            "recommendation": rule.recommendation}


async def evaluate_rule(conn: asyncpg.Connection, rule: ThresholdRule, now: datetime) -> int:
    """Evaluate one rule; returns the number of outbox rows written."""
    series = await conn.fetch(_SERIES.format(op=rule.op), rule.metric, rule.threshold,
                              now - rule.for_ - STALE_AFTER, now)
    state = {(r["instance_id"], r["object"]): r for r in await conn.fetch(_STATE, rule.name)}
    # bad_since is the first breaching sample after the last healthy one, so it is set only while
    # the newest sample breaches.
    firing_now = {(s["instance_id"], s["object"]): s for s in series
                  if s["bad_since"] is not None and s["latest_at"] >= now - STALE_AFTER
                  and now - s["bad_since"] >= rule.for_}
    opened = [k for k in firing_now if state.get(k) is None or state[k]["status"] != "firing"]
    closed = [k for k, st in state.items() if st["status"] == "firing" and k not in firing_now]
    if not opened and not closed:
        return 0
    ids = sorted({k[0] for k in opened + closed})
    instances = {r["id"]: dict(r) for r in await conn.fetch(_INSTANCES, ids)}
    written = 0
    for key in opened + closed:
        inst = instances.get(key[0])
        if inst is None:
            continue  # the instance was removed; its rule state goes with it below
        firing = key in firing_now
        since = firing_now[key]["bad_since"] if firing else state[key]["since"]
        value = firing_now[key]["latest_value"] if firing else None
        await conn.execute(_OUTBOX, rule_fingerprint(rule.name, *key), "firing" if firing else "resolved",
                           rule.severity, json.dumps(_labels(rule, inst, key[1])),
                           json.dumps(_annotations(rule, value, since)), since, None if firing else now)
        await conn.execute(_SET_STATE, rule.name, key[0], key[1], "firing" if firing else "resolved", since, now)
        written += 1
    return written


async def evaluate_rules(conn: asyncpg.Connection, config: AlertingConfig, now: datetime) -> int:
    if not config.rules:
        return 0
    async with conn.transaction():
        if not await conn.fetchval("select pg_try_advisory_xact_lock(hashtext('dbfleet.alerting.rules'))"):
            return 0  # another dispatcher is evaluating right now
        return sum([await evaluate_rule(conn, rule, now) for rule in config.rules])
