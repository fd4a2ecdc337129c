"""Query statistics and replication lag through the API, from what the write path stored."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from app.findings import InstanceRef, record_run
from collectors.spec import QueryStat, Result, Sample

NOW = datetime.now(timezone.utc)


async def _instance(client, auth, name: str) -> InstanceRef:
    r = await client.post("/api/v1/instances", json={"name": name, "engine": "postgres", "host": "db"},
                          headers=auth["admin"])
    return InstanceRef(r.json()["id"], name, "postgres", {})


def _stat(qid: str, calls: int, total_ms: float, rows: int = 0, read: int = 0, text: str | None = None) -> QueryStat:
    return QueryStat(query_id=qid, user="app", database="shop", calls=calls, total_ms=total_ms, rows=rows,
                     shared_blks_read=read, interval_s=60, text=text)


@pytest.fixture
async def stored(client, auth, clean_store):
    a, b = await _instance(client, auth, "pg-a"), await _instance(client, auth, "pg-b")
    async with clean_store.raw() as conn:
        await record_run(conn, a, "query_stats", Result(query_stats=[
            _stat("1", 10, 5000.0, rows=10, text="select * from orders where id = $1"),
            _stat("2", 1000, 100.0, rows=5000, read=900, text="select 1")]), NOW - timedelta(minutes=2), 1.0)
        await record_run(conn, a, "query_stats", Result(query_stats=[_stat("2", 1000, 100.0, text="ignored, stored once")]),
                         NOW - timedelta(minutes=1), 1.0)
        await record_run(conn, b, "query_stats", Result(query_stats=[_stat("9", 1, 9000.0)]), NOW - timedelta(minutes=1), 1.0)
        await record_run(conn, a, "replication", Result(samples=[
            Sample("replication_lag_seconds", 4.0, "standby-1"), Sample("replication_lag_bytes", 2048, "standby-1")]),
            NOW - timedelta(minutes=2), 1.0)
        await record_run(conn, a, "replication", Result(samples=[
            Sample("replication_lag_seconds", 42.0, "standby-1"), Sample("replication_lag_bytes", 8192, "standby-1")]),
            NOW - timedelta(seconds=5), 1.0)
    return a, b


@pytest.mark.parametrize("order, first", [("total_time", "1"), ("calls", "2"), ("rows", "2"), ("io", "2"),
                                          ("mean_time", "1")])
async def test_instance_queries_sum_the_intervals_and_order(client, auth, stored, order, first):
    r = await client.get(f"/api/v1/instances/pg-a/queries?order={order}", headers=auth["viewer"])
    assert r.status_code == 200
    rows = r.json()
    assert rows[0]["query_id"] == first
    by_id = {q["query_id"]: q for q in rows}
    assert by_id["2"]["calls"] == 2000 and by_id["2"]["total_ms"] == 200.0 and by_id["2"]["mean_ms"] == 0.1
    assert by_id["2"]["query"] == "select 1", "the first text is kept"
    assert by_id["1"]["mean_ms"] == 500.0 and "9" not in by_id


async def test_fleet_top_spans_instances_and_window_applies(client, auth, stored):
    top = (await client.get("/api/v1/queries/top?limit=1", headers=auth["viewer"])).json()
    assert [(q["instance"], q["query_id"]) for q in top] == [("pg-b", "9")]
    since = (NOW + timedelta(minutes=5)).isoformat()
    assert (await client.get("/api/v1/queries/top", params={"since": since}, headers=auth["viewer"])).status_code == 422
    empty = await client.get("/api/v1/queries/top", params={"until": (NOW - timedelta(hours=2)).isoformat()},
                             headers=auth["viewer"])
    assert empty.json() == []


async def test_unknown_instance_and_bad_order(client, auth, stored):
    assert (await client.get("/api/v1/instances/nope/queries", headers=auth["viewer"])).status_code == 404
    assert (await client.get("/api/v1/instances/pg-a/queries?order=random()", headers=auth["viewer"])).status_code == 422
    assert (await client.get("/api/v1/queries/top")).status_code == 401


async def test_replication_shows_the_latest_lag_per_standby(client, auth, stored):
    lag = (await client.get("/api/v1/replication", headers=auth["viewer"])).json()
    assert [(x["instance"], x["standby"], x["lag_seconds"], x["lag_bytes"]) for x in lag] == [
        ("pg-a", "standby-1", 42.0, 8192.0)]
    metrics = (await client.get("/metrics")).text
    assert 'dbfleet_replication_lag_seconds{instance="pg-a",standby="standby-1"} 42.0' in metrics
