"""instance_health (migration 0010) against the findings and runs it summarises: after every kind of
write the write path and a DBA make, the counters equal a recount from scratch."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from app.findings import InstanceRef, record_failure, record_run
from collectors.spec import Finding, Result, Severity
from tests.conftest import own_store

RECOUNT = """
select i.id as instance_id,
       count(f.id) filter (where f.severity = 'critical') as open_critical,
       count(f.id) filter (where f.severity = 'warning') as open_warning,
       count(f.id) filter (where f.severity = 'info') as open_info,
       count(f.id) filter (where f.check in ('instance_unreachable', 'login_failed', 'credential_unavailable'))
         as open_unreachable,
       (select max(started_at) from collector_runs c where c.instance_id = i.id and c.status = 'ok') as last_ok
from instances i left join findings f on f.instance_id = i.id and f.state = 'open'
group by i.id order by i.id
"""
STORED = """
select i.id as instance_id, coalesce(h.open_critical, 0) as open_critical, coalesce(h.open_warning, 0) as open_warning,
       coalesce(h.open_info, 0) as open_info, coalesce(h.open_unreachable, 0) as open_unreachable, h.last_ok
from instances i left join instance_health h on h.instance_id = i.id order by i.id
"""


@pytest.fixture
async def store():
    async with own_store(f"dbf_con15_health_{uuid.uuid4().hex[:8]}", pool_size=2, premake_days=1,
                         retention_days=2) as s:
        yield s


def _f(check: str, obj: str, sev: Severity) -> Finding:
    return Finding(check, obj, sev, f"{check} on {obj}", {}, "")


async def _instance(conn, name: str) -> InstanceRef:
    iid = await conn.fetchval("insert into instances (name, engine, host, port, dbname, \"user\", tls_mode) "
                              "values ($1, 'postgres', $2, 5432, 'app', 'postgres', 'prefer') "
                              "returning id", name, f"{name}.example")
    return InstanceRef(iid, name, "postgres", {})


async def _assert_counts_match(conn) -> list[dict]:
    stored = [dict(r) for r in await conn.fetch(STORED)]
    assert stored == [dict(r) for r in await conn.fetch(RECOUNT)]
    return stored


async def test_instance_health_follows_every_write(store):
    t0 = datetime.now(timezone.utc) - timedelta(minutes=10)
    async with store.raw() as conn:
        a, b = await _instance(conn, "hl-a"), await _instance(conn, "hl-b")
        await record_run(conn, a, "health", Result(findings=[
            _f("xid_wraparound", "db", Severity.critical), _f("connections_near_limit", "server", Severity.warning),
            _f("fk_without_index", "t1", Severity.info), _f("fk_without_index", "t2", Severity.info)]), t0, 1.0)
        await record_run(conn, b, "health", Result(findings=[_f("instance_unreachable", "server", Severity.critical)]),
                         t0, 1.0)
        first = await _assert_counts_match(conn)
        assert [(r["open_critical"], r["open_warning"], r["open_info"], r["open_unreachable"]) for r in first] == \
            [(1, 1, 2, 0), (1, 0, 0, 1)]

        # The same findings seen again: last_seen bumps only, nothing changes.
        await record_run(conn, a, "health", Result(findings=[
            _f("xid_wraparound", "db", Severity.critical), _f("connections_near_limit", "server", Severity.warning),
            _f("fk_without_index", "t1", Severity.info), _f("fk_without_index", "t2", Severity.info)]),
            t0 + timedelta(minutes=1), 1.0)
        # A severity change, one gone (auto-resolved), a failed run (resolves nothing, no last_ok).
        await record_run(conn, a, "health", Result(findings=[
            _f("xid_wraparound", "db", Severity.warning), _f("connections_near_limit", "server", Severity.warning),
            _f("fk_without_index", "t1", Severity.info)]), t0 + timedelta(minutes=2), 1.0)
        await record_failure(conn, b, "health", "error", "boom", t0 + timedelta(minutes=3), 1.0)
        after = await _assert_counts_match(conn)
        assert (after[0]["open_critical"], after[0]["open_warning"], after[0]["open_info"]) == (0, 2, 1)
        assert after[1]["last_ok"] == t0, "a failed run is no successful run"

        # A DBA's acknowledgement and resolve, in one statement over two instances.
        await conn.execute("update findings set state = case when instance_id = $1 then 'acknowledged' "
                           "else 'resolved' end where \"check\" in ('connections_near_limit', 'instance_unreachable')",
                           a.id)
        await _assert_counts_match(conn)
        await conn.execute("update findings set state = 'open' where \"check\" = 'connections_near_limit'")
        await conn.execute("delete from findings where \"check\" = 'fk_without_index'")
        await _assert_counts_match(conn)

        await conn.execute("delete from instances where id = $1", b.id)  # cascades to its findings and health
        assert await conn.fetchval("select count(*) from instance_health where instance_id = $1", b.id) == 0
        await _assert_counts_match(conn)
        await conn.execute("truncate findings cascade")
        await conn.execute("truncate collector_runs")
        assert [(r["open_warning"], r["last_ok"]) for r in await _assert_counts_match(conn)] == [(0, None)]


async def test_a_finding_seen_again_stays_a_hot_update(store):
    """Every sweep moves last_seen on every finding still seen. No index of findings covers it (nor
    anything else a bump changes), so each bump is a HOT update: no new entry in any of the table's
    indexes. An index on last_seen would make it one new entry per index per finding per sweep."""
    found = [_f("fk_without_index", f"t{n}", Severity.info) for n in range(4)]
    t0 = datetime.now(timezone.utc) - timedelta(minutes=10)
    async with store.raw() as conn:
        a = await _instance(conn, "hot-a")
        await record_run(conn, a, "health", Result(findings=found), t0, 1.0)
        async with conn.transaction():
            await record_run(conn, a, "health", Result(findings=found), t0 + timedelta(minutes=1), 1.0)
            updated, hot = await conn.fetchrow(
                "select pg_stat_get_xact_tuples_updated('findings'::regclass), "
                "pg_stat_get_xact_tuples_hot_updated('findings'::regclass)")
        assert await conn.fetchval("select count(*) from findings where last_seen = $1",
                                   t0 + timedelta(minutes=1)) == 4
    assert (updated, hot) == (4, 4)
