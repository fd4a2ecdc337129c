"""The last-seen cache: what it remembers, what it calls unchanged, and what the store makes of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.findings import InstanceRef, RunRecord
from app.last_seen import LastSeenCache, Written
from app.run_record import Recorder
from collectors.spec import Finding, Result, Severity

T0 = datetime.now(UTC).replace(microsecond=0)


def F(obj: str = "public.i", severity: Severity = Severity.warning, **details) -> Finding:
    return Finding("unused_index", obj, severity, f"{obj} unused", details or {"scans": 0}, "DROP INDEX")


@pytest.mark.parametrize("now, unchanged", [
    ({"a": F("a"), "b": F("b")}, ["a", "b"]),
    ({"a": F("a", Severity.critical), "b": F("b")}, ["b"]),  # re-graded: sent in full
    ({"a": F("a", scans=3)}, []),  # other evidence
    ({"c": F("c")}, []),  # new
    ({}, []),
])
def test_unchanged_is_what_equals_the_written_finding(now, unchanged):
    written = Written(T0, {"a": F("a"), "b": F("b")})
    assert written.unchanged(now) == unchanged


def test_put_get_and_forget_per_instance_and_collector():
    cache = LastSeenCache()
    cache.put(1, "index_advice", T0, {"a": F("a")})
    cache.put(1, "health", T0, {})
    cache.put(2, "index_advice", T0, {"b": F("b")})
    assert cache.get(1, "index_advice") == Written(T0, {"a": F("a")})
    assert cache.get(1, "replication") is None and cache.get(3, "index_advice") is None
    cache.put(1, "index_advice", T0 + timedelta(minutes=1), {})
    assert cache.get(1, "index_advice").at == T0 + timedelta(minutes=1)
    cache.forget(1, "health")
    assert cache.get(1, "health") is None and len(cache) == 2
    cache.forget(1)
    assert cache.get(1, "index_advice") is None and len(cache) == 1
    assert cache.get(2, "index_advice") is not None


@pytest.fixture
async def inst(clean_store) -> InstanceRef:
    async with clean_store.raw() as conn:
        iid = await conn.fetchval(
            "insert into instances (name, engine, host, port, dbname, \"user\", tls_mode, tags) "
            "values ('pg-a', 'postgres', 'h', 5432, 'app', 'postgres', 'prefer', '{}') returning id")
    return InstanceRef(iid, "pg-a", "postgres", {})


async def test_the_recorder_fills_the_cache_only_with_what_it_wrote(clean_store, inst):
    recorder = Recorder()
    async with clean_store.raw() as conn:
        await recorder.write_runs(conn, inst, [RunRecord("index_advice", T0, 1.0, Result(findings=[F()])),
                                               RunRecord("health", T0, 1.0, None, "error", "boom")])
        written = recorder.last_seen.get(inst.id, "index_advice")
        assert written is not None and written.at == T0 and list(written.findings.values()) == [F()]
        assert recorder.last_seen.get(inst.id, "health") is None  # a failed run wrote no findings
        before = await conn.fetchval("select count(*) from outbox")
        await recorder.write_runs(conn, inst, [RunRecord("index_advice", T0 + timedelta(minutes=1), 1.0,
                                                         Result(findings=[F()]))])
        row = await conn.fetchrow("select last_seen, first_seen, state from findings")
        assert tuple(row) == (T0 + timedelta(minutes=1), T0, "open")
        assert await conn.fetchval("select count(*) from outbox") == before


async def test_a_cache_older_than_the_store_costs_a_full_write_not_a_lost_one(clean_store, inst):
    """Another worker wrote the finding since: the bump misses, the finding is written in full."""
    ours, theirs = Recorder(), Recorder()
    async with clean_store.raw() as conn:
        await ours.write_runs(conn, inst, [RunRecord("index_advice", T0, 1.0, Result(findings=[F()]))])
        await theirs.write_runs(conn, inst, [RunRecord("index_advice", T0 + timedelta(minutes=1), 1.0,
                                                       Result(findings=[F(title_changed=1)]))])
        await ours.write_runs(conn, inst, [RunRecord("index_advice", T0 + timedelta(minutes=2), 1.0,
                                                     Result(findings=[F()]))])
        row = await conn.fetchrow("select last_seen, details from findings")
        assert tuple(row) == (T0 + timedelta(minutes=2), {"scans": 0})
        assert await conn.fetchval("select count(*) from collector_runs") == 3
        assert ours.last_seen.get(inst.id, "index_advice").at == T0 + timedelta(minutes=2)
