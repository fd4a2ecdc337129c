"""Threshold rules over the samples table: fire after `for`, resolve on recovery or silence."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from alerting_helpers import T0, ensure_samples_partition

from app.alerting.config import load_config
from app.alerting.dispatcher import dispatch_once
from app.alerting.rules import evaluate_rules, rule_fingerprint

CFG = load_config({"rules": [{"name": "replication_lag_high", "metric": "replication_lag_seconds", "op": ">",
                              "threshold": 300, "for": "5m", "severity": "critical",
                              "summary": "Replication lag over 5 minutes"}]})


@pytest.fixture
async def fleet(store):
    async with store.raw() as conn:
        await ensure_samples_partition(conn)
        await conn.execute("insert into instances (id, name, engine, host, port, dbname, \"user\", tls_mode, tags) values "
                           "(1, 'db1', 'postgres', '127.0.0.1', 5432, 'postgres', 'dbfleet', 'prefer', $1::jsonb)", json.dumps({"env": "prod"}))
    return store


async def samples(store, obj: str, points: list[tuple[int, float]]) -> None:
    """points: (minutes relative to T0, value)."""
    async with store.raw() as conn:
        await conn.executemany(
            "insert into samples (ts, instance_id, collector, metric, object, value) "
            "values ($1, 1, 'replication', 'replication_lag_seconds', $2, $3)",
            [(T0 + timedelta(minutes=m), obj, v) for m, v in points])


async def outbox(store) -> list[dict]:
    async with store.raw() as conn:
        return [dict(r) for r in await conn.fetch("select * from outbox order by id")]


async def evaluate(store, minutes: int = 0) -> int:
    async with store.raw() as conn:
        return await evaluate_rules(conn, CFG, T0 + timedelta(minutes=minutes))


async def test_fires_after_for_and_resolves_on_recovery(fleet):
    await samples(fleet, "standby1", [(m, 10 if m < -6 else 900) for m in range(-10, 1)])  # breaching 6 min
    await samples(fleet, "standby2", [(m, 10 if m < -3 else 900) for m in range(-10, 1)])  # only 3 min
    assert await evaluate(fleet) == 1
    [row] = await outbox(fleet)
    labels = json.loads(row["labels"]) if isinstance(row["labels"], str) else row["labels"]
    assert row["status"] == "firing" and row["fingerprint"] == rule_fingerprint("replication_lag_high", 1, "standby1")
    assert labels == {"env": "prod", "alertname": "replication_lag_high", "severity": "critical", "instance": "db1",
                      "engine": "postgres", "object": "standby1", "metric": "replication_lag_seconds"}
    assert row["starts_at"] == T0 - timedelta(minutes=6)
    assert await evaluate(fleet) == 0  # no transition, no new row
    await samples(fleet, "standby1", [(1, 20)])
    await samples(fleet, "standby2", [(1, 900), (2, 900)])
    assert await evaluate(fleet, 2) == 2  # standby1 recovered; standby2 has now breached 5 min
    rows = await outbox(fleet)
    assert [(r["status"], r["ends_at"] is not None, r["labels"]["object"]) for r in rows[1:]] == [
        ("firing", False, "standby2"), ("resolved", True, "standby1")]


async def test_a_series_that_stops_reporting_resolves(fleet):
    await samples(fleet, "standby1", [(m, 900) for m in range(-8, 1)])
    assert await evaluate(fleet) == 1
    assert await evaluate(fleet, 11) == 1  # no sample for over 10 minutes
    assert [r["status"] for r in await outbox(fleet)] == ["firing", "resolved"]


async def test_rule_alerts_flow_through_the_dispatcher(fleet):
    await samples(fleet, "standby1", [(m, 900) for m in range(-8, 1)])
    report = await dispatch_once(fleet, CFG, T0)
    assert report.rule_changes == 1 and report.ingested == 1
    async with fleet.raw() as conn:
        assert await conn.fetchval("select status from alerts") == "firing"
