"""/metrics stays bounded: after real sweeps, only the expected label names, never SQL or query ids.

Prometheus keeps one series per label combination forever (until retention), so a label holding a
query id or statement text would grow with every new query on every instance.
"""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from app import telemetry
from app.inventory.schemas import InstanceIn
from app.inventory.store import upsert_instances
from app.sweep import Sweeper

# Per-instance labels are bounded by the inventory, the rest by code (collector, check, severity...).
EXPECTED = {"instance", "engine", "standby", "severity", "check", "collector", "status", "receiver", "le"}
FORBIDDEN = {"query", "queryid", "query_id", "sql", "statement", "text", "digest", "object", "fingerprint"}
SQLISH = re.compile(r"\b(select|insert|update|delete|from|where)\b|\$\d|^-?\d{6,}$", re.I)


def test_telemetry_declares_no_query_labels():
    for metric in vars(telemetry).values():
        names = set(getattr(metric, "_labelnames", ()))
        assert not names & FORBIDDEN, f"{metric}: {names & FORBIDDEN}"
        assert names <= EXPECTED, f"{metric}: unexpected labels {names - EXPECTED}"


async def test_metrics_after_a_sweep_have_only_expected_labels(clean_store, client, target_db, settings):
    heavy = ";".join(f"create table t{i} (id int primary key, v text); create index on t{i} (v)" for i in range(5))
    db = await target_db(heavy, prefix="dbf_bench_metrics")
    async with clean_store.sessions() as session, session.begin():
        await upsert_instances(session, [
            InstanceIn(name="metrics-1", engine="postgres", host="127.0.0.1", port=5432, dbname=db, user="postgres",
                       tls_mode="disable"),
            InstanceIn(name="metrics-down", engine="postgres", host="127.0.0.1", port=1, dbname=db, user="postgres",
                       tls_mode="disable")], actor="test")
    sweeper = Sweeper(clean_store, settings)
    try:
        for _ in range(2):
            await sweeper.sweep()
    finally:
        await sweeper.close()

    response = await client.get("/metrics")
    assert response.status_code == 200
    families = list(text_string_to_metric_families(response.text))
    dbfleet = [f for f in families if f.name.startswith("dbfleet_")]
    seen: set[str] = set()
    for family in dbfleet:
        for sample in family.samples:
            seen |= set(sample.labels)
            for key, value in sample.labels.items():
                assert key not in FORBIDDEN, f"{sample.name} has label {key}"
                if key not in ("le",):
                    assert not SQLISH.search(value), f"{sample.name}{{{key}={value!r}}} looks like SQL or a query id"
    assert seen <= EXPECTED, f"unexpected label names {seen - EXPECTED}"
    # The sweep did show up: run durations per collector and both instances' up gauges.
    names = {s.name for f in dbfleet for s in f.samples}
    assert "dbfleet_collector_run_duration_seconds_count" in names
    up = {s.labels["instance"]: s.value for f in dbfleet for s in f.samples if s.name == "dbfleet_instance_up"}
    assert up.get("metrics-1") == 1 and up.get("metrics-down") == 0
