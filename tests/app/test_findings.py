"""The findings lifecycle on the real store: upsert by fingerprint, auto-resolve, outbox, series."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from app.findings import QUERY_TEXT_MAX, InstanceRef, fingerprint, finding_json, record_failure, record_run
from collectors.spec import Finding, QueryStat, Result, Sample, Severity

T0 = datetime.now(timezone.utc).replace(microsecond=0)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
async def inst(clean_store) -> InstanceRef:
    async with clean_store.raw() as conn:
        iid = await conn.fetchval(
            "insert into instances (name, engine, host, port, dbname, \"user\", tls_mode, tags) "
            "values ('pg-a', 'postgres', 'h', 5432, 'app', 'postgres', 'prefer', '{\"env\": \"prod\"}') returning id")
    return InstanceRef(iid, "pg-a", "postgres", {"env": "prod"})


@pytest.fixture
async def db(clean_store):
    async with clean_store.raw() as conn:
        yield conn


def F(check: str = "unused_index", obj: str = "public.orders_idx", severity: Severity = Severity.warning,
      title: str = "Index public.orders_idx is never used", **details) -> Finding:
    return Finding(check, obj, severity, title, details or {"scans": 0}, "DROP INDEX CONCURRENTLY public.orders_idx;")


async def findings(db) -> dict[tuple[str, str], dict]:
    rows = await db.fetch('select * from findings order by id')
    return {(r["check"], r["object"]): dict(r) for r in rows}


async def outbox(db) -> list[dict]:
    return [dict(r) for r in await db.fetch("select * from outbox order by id")]


@pytest.mark.parametrize("a, b, same", [
    ((1, "unused_index", "public.i"), (1, "unused_index", "public.i"), True),
    ((1, "unused_index", "public.i"), (2, "unused_index", "public.i"), False),
    ((1, "unused_index", "public.i"), (1, "duplicate_index", "public.i"), False),
    ((1, "unused_index", "public.i"), (1, "unused_index", "public.j"), False),
    # The separator keeps (check, object) pairs from running into each other.
    ((1, "a", "bc"), (1, "ab", "c"), False),
])
def test_fingerprint_is_stable_and_distinct(a, b, same):
    assert (fingerprint(*a) == fingerprint(*b)) is same
    assert len(fingerprint(*a)) == 64 and fingerprint(*a) == fingerprint(*a)


async def test_new_findings_open_with_a_firing_outbox_row_and_a_run_row(db, inst):
    out = await record_run(db, inst, "indexes", Result(findings=[F(), F(obj="public.b_idx")]), at(0), 12.5)
    assert (out.opened, out.resolved, out.open_total) == (2, 0, 2)
    rows = await findings(db)
    f = rows[("unused_index", "public.orders_idx")]
    assert f["fingerprint"] == fingerprint(inst.id, "unused_index", "public.orders_idx")
    assert (f["state"], f["severity"], f["collector"]) == ("open", "warning", "indexes")
    assert f["first_seen"] == f["last_seen"] == f["opened_at"] == at(0)
    assert f["details"] == {"scans": 0}
    ob = await outbox(db)
    assert [(o["status"], o["severity"]) for o in ob] == [("firing", "warning")] * 2
    labels = ob[0]["labels"]
    assert labels == {"env": "prod", "alertname": "unused_index", "severity": "warning", "instance": "pg-a",
                      "engine": "postgres", "object": "public.orders_idx"}
    assert ob[0]["finding_id"] == f["id"] and ob[0]["fingerprint"] == f["fingerprint"]
    assert (ob[0]["starts_at"], ob[0]["ends_at"], ob[0]["processed_at"]) == (at(0), None, None)
    assert ob[0]["annotations"]["recommendation"].startswith("DROP INDEX")
    run = await db.fetchrow("select * from collector_runs")
    assert (run["collector"], run["status"], run["findings"], run["duration_ms"], run["error"]) == \
        ("indexes", "ok", 2, 12.5, None)


async def test_reseeing_updates_last_seen_not_first_seen_and_sends_nothing(db, inst):
    await record_run(db, inst, "indexes", Result(findings=[F()]), at(0), 1)
    out = await record_run(db, inst, "indexes", Result(findings=[F(title="still unused", scans=0)]), at(5), 1)
    assert (out.opened, out.resolved, out.open_total) == (0, 0, 1)
    f = (await findings(db))[("unused_index", "public.orders_idx")]
    assert (f["first_seen"], f["last_seen"], f["opened_at"], f["state"]) == (at(0), at(5), at(0), "open")
    assert f["title"] == "still unused"
    assert len(await outbox(db)) == 1
    assert await db.fetchval("select count(*) from findings") == 1


async def test_severity_change_writes_a_firing_row(db, inst):
    await record_run(db, inst, "indexes", Result(findings=[F()]), at(0), 1)
    out = await record_run(db, inst, "indexes", Result(findings=[F(severity=Severity.critical)]), at(1), 1)
    assert out.opened == 1
    ob = await outbox(db)
    assert [(o["status"], o["severity"]) for o in ob] == [("firing", "warning"), ("firing", "critical")]
    assert (await findings(db))[("unused_index", "public.orders_idx")]["severity"] == "critical"


async def test_a_successful_run_that_no_longer_sees_it_resolves_it(db, inst):
    await record_run(db, inst, "indexes", Result(findings=[F(), F(obj="public.b_idx")]), at(0), 1)
    out = await record_run(db, inst, "indexes", Result(findings=[F(obj="public.b_idx")]), at(5), 1)
    assert (out.opened, out.resolved, out.open_total) == (0, 1, 1)
    gone = (await findings(db))[("unused_index", "public.orders_idx")]
    assert (gone["state"], gone["resolved_at"], gone["state_by"], gone["state_note"]) == \
        ("resolved", at(5), "dbfleet", "no longer seen")
    assert (await findings(db))[("unused_index", "public.b_idx")]["state"] == "open"
    resolved = [o for o in await outbox(db) if o["status"] == "resolved"]
    assert len(resolved) == 1
    assert (resolved[0]["fingerprint"], resolved[0]["starts_at"], resolved[0]["ends_at"]) == \
        (gone["fingerprint"], at(0), at(5))
    assert resolved[0]["labels"]["object"] == "public.orders_idx"


async def test_an_empty_successful_run_resolves_everything_of_that_collector_only(db, inst):
    await record_run(db, inst, "indexes", Result(findings=[F()]), at(0), 1)
    await record_run(db, inst, "health", Result(findings=[F("xid_wraparound", "app")]), at(0), 1)
    out = await record_run(db, inst, "indexes", Result(), at(1), 1)
    assert out.resolved == 1
    rows = await findings(db)
    assert rows[("unused_index", "public.orders_idx")]["state"] == "resolved"
    assert rows[("xid_wraparound", "app")]["state"] == "open"


async def test_a_failed_run_resolves_nothing(db, inst):
    await record_run(db, inst, "indexes", Result(findings=[F()]), at(0), 1)
    await record_failure(db, inst, "indexes", "error", "QueryCanceledError: " + "x" * 5000, at(1), 3.0)
    f = (await findings(db))[("unused_index", "public.orders_idx")]
    assert (f["state"], f["last_seen"]) == ("open", at(0))
    assert [o["status"] for o in await outbox(db)] == ["firing"]
    run = await db.fetchrow("select * from collector_runs where status <> 'ok'")
    assert (run["status"], run["findings"], len(run["error"])) == ("error", 0, 2000)
    assert run["error"].startswith("QueryCanceledError")


async def test_a_resolved_finding_that_reappears_reopens(db, inst):
    await record_run(db, inst, "indexes", Result(findings=[F()]), at(0), 1)
    await record_run(db, inst, "indexes", Result(), at(1), 1)
    out = await record_run(db, inst, "indexes", Result(findings=[F()]), at(2), 1)
    assert out.opened == 1
    f = (await findings(db))[("unused_index", "public.orders_idx")]
    assert (f["state"], f["first_seen"], f["opened_at"], f["last_seen"], f["resolved_at"]) == \
        ("open", at(0), at(2), at(2), None)
    assert [o["status"] for o in await outbox(db)] == ["firing", "resolved", "firing"]
    assert (await outbox(db))[-1]["starts_at"] == at(2)
    assert await db.fetchval("select count(*) from findings") == 1


async def test_an_acknowledged_finding_stays_acknowledged_while_seen(db, inst):
    await record_run(db, inst, "indexes", Result(findings=[F()]), at(0), 1)
    await db.execute("update findings set state = 'acknowledged', state_by = 'alice'")
    await record_run(db, inst, "indexes", Result(findings=[F()]), at(1), 1)
    f = (await findings(db))[("unused_index", "public.orders_idx")]
    assert (f["state"], f["state_by"], f["last_seen"]) == ("acknowledged", "alice", at(1))
    await record_run(db, inst, "indexes", Result(), at(2), 1)
    assert (await findings(db))[("unused_index", "public.orders_idx")]["state"] == "resolved"


async def test_duplicate_findings_in_one_result_count_once(db, inst):
    out = await record_run(db, inst, "indexes", Result(findings=[F(), F()]), at(0), 1)
    assert out.open_total == 1 and await db.fetchval("select count(*) from findings") == 1


async def test_samples_and_query_stats_are_copied_and_query_text_stored_once(db, inst):
    long_text = "select " + "x, " * 6000 + "1"
    stats = [QueryStat("q1", "app", "shop", calls=10, total_ms=55.5, rows=100, shared_blks_hit=7, interval_s=60,
                       text="select * from orders where id = $1"),
             QueryStat("q2", "app", "shop", calls=1, total_ms=1.0, rows=1, text=long_text)]
    result = Result(samples=[Sample("up", 1.0), Sample("xid_age", 1234.0, "shop")], query_stats=stats)
    await record_run(db, inst, "query_stats", result, at(0), 1)
    await record_run(db, inst, "query_stats", result, at(1), 1)
    samples = await db.fetch("select ts, collector, metric, object, value from samples where instance_id = $1 "
                             "order by ts, metric", inst.id)
    assert [tuple(r) for r in samples[:2]] == [(at(0), "query_stats", "up", "", 1.0),
                                               (at(0), "query_stats", "xid_age", "shop", 1234.0)]
    assert len(samples) == 4
    qs = await db.fetch("select query_id, username, dbname, calls, total_ms, rows, shared_blks_hit, interval_s "
                        "from query_stats where instance_id = $1 and ts = $2 order by query_id", inst.id, at(0))
    assert tuple(qs[0]) == ("q1", "app", "shop", 10, 55.5, 100, 7, 60.0)
    assert await db.fetchval("select count(*) from query_stats where instance_id = $1", inst.id) == 4
    texts = {r["query_id"]: r["text"] for r in await db.fetch("select * from query_texts")}
    assert texts["q1"] == "select * from orders where id = $1"
    assert len(texts["q2"]) == QUERY_TEXT_MAX
    assert await db.fetchval("select count(*) from query_texts") == 2


async def test_finding_json_shape(db, inst, clean_store):
    from sqlalchemy import select

    from app.models import Finding as FindingRow

    await record_run(db, inst, "indexes", Result(findings=[F()]), at(0), 1)
    async with clean_store.sessions() as session:
        row = (await session.execute(select(FindingRow))).scalar_one()
    data = finding_json(row, "pg-a")
    assert {"instance", "check", "object", "severity", "state", "title", "details", "recommendation",
            "first_seen", "last_seen"} <= set(data)
    assert (data["instance"], data["check"], data["object"], data["severity"], data["state"]) == \
        ("pg-a", "unused_index", "public.orders_idx", "warning", "open")
    assert data["details"] == {"scans": 0}
    assert datetime.fromisoformat(data["first_seen"]) == at(0)
    assert json.loads(json.dumps(data)) == data
