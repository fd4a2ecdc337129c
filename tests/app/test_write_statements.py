"""The write statements' table against the migrated store, and the two ways of running them."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from app import write_statements as ws
from app.collector_state import StateWrite
from app.findings import InstanceRef, RunRecord, fingerprint, record_runs
from app.last_seen import Written
from collectors.spec import Finding, QueryStat, Result, Sample, Severity

T0 = datetime.now(UTC).replace(microsecond=0)
# Columns of the written tables that no input fills, each with the reason. A column added by a
# migration fails test_every_store_column_is_written_or_left_on_purpose until it is placed here
# or given a field.
LEFT_ALONE = {
    "collector_runs": {"id"},  # identity
    "findings": {"id", "severity_rank",  # identity, generated
                 "state_until", "state_severity"},  # set by acknowledge/silence (API), cleared there
    "outbox": {"id", "created_at", "processed_at"},  # defaults; the dispatcher stamps processed_at
    "query_texts": {"first_seen"},  # default now()
    "collector_state": set(),
    "collector_state_patches": set(),
    "samples": set(),
    "query_stats": set(),
}
_COMPATIBLE = {"text": {"text", "character varying"}, "int8": {"bigint", "integer", "smallint"},
               "float8": {"double precision"}, "timestamptz": {"timestamp with time zone"},
               "jsonb": {"jsonb", "json"}, "bool": {"boolean"}}


async def _schema(conn: asyncpg.Connection) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for r in await conn.fetch("select table_name, column_name, data_type from information_schema.columns "
                              "where table_schema = 'public'"):
        out.setdefault(r["table_name"], {})[r["column_name"]] = r["data_type"]
    return out


def _statement_columns(table: str) -> set[str]:
    """Columns the statements' own SQL names for `table` (insert lists, update set clauses)."""
    out = set()
    for s in ws.STATEMENTS:
        for _, sql in s.steps:
            if m := re.search(rf"insert into {table}\b(?: as \w+)? \(([^)]*)\)", sql):
                out |= {c.strip().strip('"') for c in m.group(1).split(",")}
            if m := re.search(rf"update {table}\b(?: \w+)? set (.*?)\bfrom\b", sql, re.DOTALL):
                out |= set(re.findall(r"(\w+) =", m.group(1)))
    return out


async def test_every_field_is_a_store_column_of_a_matching_type(store):
    async with store.raw() as conn:
        schema = await _schema(conn)
    for kind in ws.INPUTS:
        assert [c.field for c in ws.columns(kind)] == [f.name for f in fields(kind)]
        for c in ws.columns(kind):
            live = schema.get(c.table, {}).get(c.column)
            assert live is not None, f"{kind.__name__}.{c.field}: no column {c.table}.{c.column} in the store"
            assert live in _COMPATIBLE[c.sql_type], f"{kind.__name__}.{c.field} is {c.sql_type}, {c.table}.{c.column} is {live}"


async def test_every_store_column_is_written_or_left_on_purpose(store):
    async with store.raw() as conn:
        schema = await _schema(conn)
    for table, left in LEFT_ALONE.items():
        filled = {c.column for kind in ws.INPUTS for c in ws.columns(kind) if c.table == table}
        filled |= _statement_columns(table)
        assert set(schema[table]) - filled == left, table
        assert not (left & filled), f"{table}: {left & filled} is filled after all"


def test_every_input_kind_is_read_by_a_statement_and_drives_one():
    read = {k for s in ws.STATEMENTS for k in ws.uses(" ".join(sql for _, sql in s.steps))}
    assert read == set(ws.INPUTS)
    assert {s.driven_by for s in ws.STATEMENTS} == set(ws.INPUTS)
    assert len({s.name for s in ws.STATEMENTS}) == len(ws.STATEMENTS)


@pytest.mark.parametrize("statement", ws.STATEMENTS, ids=lambda s: s.name)
def test_each_separate_statement_numbers_its_arguments_from_one_without_gaps(statement):
    sql, order = ws.separate(statement)
    used = sorted({int(n) for n in re.findall(r"\$(\d+)", sql)})
    assert used == list(range(1, len(order) + 1))


def test_composed_statement_uses_every_argument():
    sql, order = ws.composed()
    assert sorted({int(n) for n in re.findall(r"\$(\d+)", sql)}) == list(range(1, len(order) + 1))
    assert order[:2] == ["instance_id", "instance_labels"]


def test_as_json_keys_are_field_names_and_json_text_goes_in_as_it_is():
    rows = [ws.StatePatch("query_stats", 3, '{"s":{"a":1}}', 13)]
    assert json.loads(ws.as_json(rows)) == [{"collector": "query_stats", "seq": 3, "patch": {"s": {"a": 1}},
                                             "patch_bytes": 13}]
    assert json.loads(ws.as_json([ws.StateBase("q", 1, None)])) == [{"collector": "q", "seq": 1, "base": None}]
    assert ws.as_json([]) == "[]"
    run = ws.CollectorRun("health", T0, 1.5, "ok", None, 2)
    assert set(json.loads(ws.as_json([run]))[0]) == {f.name for f in fields(ws.CollectorRun)}


def test_copy_records_follow_the_table():
    series = ws.SampleSeries("health", T0, ["a", "b"], ["", "x"], [1.0, float("nan")])
    table, columns, records = ws.copy_records(series, 7)
    assert (table, columns) == ("samples", ["instance_id", "collector", "ts", "metric", "object", "value"])
    assert records[0] == (7, "health", T0, "a", "", 1.0) and records[1][:5] == (7, "health", T0, "b", "x")


# --- the composed statement and the transaction of separate statements store the same ------------

def _scenario(rnd: int) -> list[tuple[str, Result, bool]]:
    """(collector, result, resolves) per run of round `rnd`: open, re-see, re-grade, resolve, reopen."""
    idx = [Finding("unused_index", f"public.i{k}", Severity.warning, f"i{k} unused", {"scans": 0}, "DROP INDEX")
           for k in range(3)]
    health = [Finding("long_transaction", "pid", Severity.critical if rnd == 2 else Severity.warning, "long",
                      {"s": 90})] if rnd != 3 else []
    stats = [QueryStat(f"q{k}", "app", "shop", calls=k + rnd, total_ms=1.5 * k, rows=k, interval_s=60,
                       text=f"select {k}") for k in range(4)]
    return [("index_advice", Result(findings=idx[: 3 - (rnd == 1)]), True),
            ("health", Result(findings=health, samples=[Sample("up", 1.0), Sample("lag", 0.5 * rnd, "s1")]), True),
            ("query_stats", Result(query_stats=stats, state={"n": rnd}), rnd > 0)]


async def _store_contents(conn: asyncpg.Connection, iid: int) -> dict:
    def norm(rows):
        return sorted(json.dumps({k: v for k, v in dict(r).items() if k not in ("id", "finding_id", "instance_id",
                                  "fingerprint", "created_at", "first_seen")}, default=str, sort_keys=True)
                      for r in rows)
    q = {"findings": "select * from findings where instance_id = $1",
         "outbox": "select o.* from outbox o join findings f on f.id = o.finding_id where f.instance_id = $1",
         "runs": "select * from collector_runs where instance_id = $1",
         "samples": "select * from samples where instance_id = $1",
         "query_stats": "select * from query_stats where instance_id = $1",
         "texts": "select * from query_texts where instance_id = $1",
         "state": "select collector, seq, base_seq, base, patch_bytes from collector_state where instance_id = $1",
         "patches": "select collector, seq, patch from collector_state_patches where instance_id = $1"}
    return {name: norm(await conn.fetch(sql, iid)) for name, sql in q.items()}


async def _new_instance(conn: asyncpg.Connection, name: str) -> InstanceRef:
    iid = await conn.fetchval(
        "insert into instances (name, engine, host, port, dbname, \"user\", tls_mode, tags) "
        "values ($1, 'postgres', 'h', 5432, 'app', 'postgres', 'prefer', '{\"env\": \"prod\"}') returning id", name)
    return InstanceRef(iid, name, "postgres", {"env": "prod"})


async def _play(conn: asyncpg.Connection, inst: InstanceRef, as_transaction: bool) -> list[tuple[int, int]]:
    written: dict[str, Written] = {}
    seq: dict[str, int] = {}
    totals = []
    for rnd in range(5):
        at = T0 + timedelta(minutes=rnd)
        runs = []
        for collector, result, resolves in _scenario(rnd):
            state = None
            if result.state is not None:
                seq[collector] = seq.get(collector, 0) + 1
                state = (StateWrite(collector, 1, base=json.dumps(result.state)) if seq[collector] == 1 else
                         StateWrite(collector, seq[collector], patch=json.dumps({"s": result.state})))
            runs.append(RunRecord(collector, at, 2.0, result, known=written.get(collector), resolves=resolves,
                                  state=state))
        runs.append(RunRecord("replication", at, 1.0, None, "error", "QueryCanceledError"))
        totals.append(await record_runs(conn, inst, runs, as_transaction=as_transaction))
        written.update((r.collector, Written(r.started_at, r.seen)) for r in runs if r.result is not None)
    return totals


async def test_composed_and_transaction_store_the_same(clean_store):
    async with clean_store.raw() as conn:
        a, b = await _new_instance(conn, "pg-a"), await _new_instance(conn, "pg-b")
        totals_a = await _play(conn, a, as_transaction=False)
        totals_b = await _play(conn, b, as_transaction=True)
        assert totals_a == totals_b
        # round 0 opens 4; 1 resolves an index finding; 2 reopens it and re-grades health; 3
        # resolves health; 4 reopens it.
        assert totals_a == [(4, 0), (0, 1), (2, 0), (0, 1), (1, 0)]
        contents_a, contents_b = await _store_contents(conn, a.id), await _store_contents(conn, b.id)
        for name in contents_a:
            assert contents_a[name] == [x.replace("pg-b", "pg-a") for x in contents_b[name]], name
        assert len(contents_a["runs"]) == 20 and len(contents_a["patches"]) == 4
        last_seen = await conn.fetchval("select max(last_seen) from findings where instance_id = $1 "
                                        "and collector = 'index_advice'", a.id)
        assert last_seen == T0 + timedelta(minutes=4)  # the bumps of rounds 2 and 4 moved it


@pytest.mark.parametrize("as_transaction", [False, True])
async def test_a_bump_that_no_longer_matches_is_written_in_full_and_the_run_once(clean_store, as_transaction):
    async with clean_store.raw() as conn:
        inst = await _new_instance(conn, "pg-a")
        f = Finding("unused_index", "public.i", Severity.warning, "unused", {"scans": 0})
        first = RunRecord("index_advice", T0, 1.0, Result(findings=[f]))
        await record_runs(conn, inst, [first], as_transaction=as_transaction)
        await conn.execute("update findings set state = 'resolved', state_by = 'alice'")  # resolved by hand
        again = RunRecord("index_advice", T0 + timedelta(minutes=1), 1.0, Result(findings=[f]),
                          known=Written(first.started_at, first.seen))
        assert await record_runs(conn, inst, [again], as_transaction=as_transaction) == (1, 0)
        row = await conn.fetchrow("select state, last_seen, opened_at from findings")
        assert tuple(row) == ("open", T0 + timedelta(minutes=1), T0 + timedelta(minutes=1))
        assert await conn.fetchval("select count(*) from collector_runs") == 2
        assert [r[0] for r in await conn.fetch("select status from outbox order by id")] == ["firing", "firing"]


@pytest.mark.parametrize("as_transaction", [False, True])
async def test_a_write_that_fails_leaves_nothing_of_the_run(clean_store, as_transaction):
    async with clean_store.raw() as conn:
        inst = await _new_instance(conn, "pg-a")
        ok = RunRecord("index_advice", T0, 1.0, Result(findings=[
            Finding("unused_index", "public.i", Severity.warning, "unused")], samples=[Sample("up", 1.0)]))
        bad = RunRecord("x" * 80, T0, 1.0, Result(samples=[Sample("up", 1.0)]))  # collector is varchar(64)
        with pytest.raises(asyncpg.StringDataRightTruncationError):
            await record_runs(conn, inst, [ok, bad], as_transaction=as_transaction)
        for table in ("findings", "outbox", "collector_runs", "samples"):
            assert await conn.fetchval(f"select count(*) from {table}") == 0, table


async def test_a_finding_that_moves_to_another_collector_is_not_resolved_by_the_old_one(clean_store):
    async with clean_store.raw() as conn:
        inst = await _new_instance(conn, "pg-a")
        f = Finding("unused_index", "public.i", Severity.warning, "unused")
        await record_runs(conn, inst, [RunRecord("indexes_v1", T0, 1.0, Result(findings=[f]))])
        later = T0 + timedelta(minutes=1)
        await record_runs(conn, inst, [RunRecord("indexes_v1", later, 1.0, Result()),
                                       RunRecord("indexes_v2", later, 1.0, Result(findings=[f]))])
        row = await conn.fetchrow("select collector, state, fingerprint from findings")
        assert (row["collector"], row["state"]) == ("indexes_v2", "open")
        assert row["fingerprint"] == fingerprint(inst.id, "unused_index", "public.i")


async def test_a_bump_raced_by_a_concurrent_writer_is_written_in_full_after_the_rest(clean_store):
    """Resolved by hand while the write waits for the row: the statement saw it live, the bump
    finds it resolved, and the finding is written in full right after (reopened, firing)."""
    async with clean_store.raw() as conn, clean_store.raw() as other:
        inst = await _new_instance(conn, "pg-a")
        f = Finding("unused_index", "public.i", Severity.warning, "unused", {"scans": 0})
        first = RunRecord("index_advice", T0, 1.0, Result(findings=[f]))
        await record_runs(conn, inst, [first])
        tx = other.transaction()
        await tx.start()
        await other.execute("update findings set state = 'resolved', state_by = 'alice'")
        again = RunRecord("index_advice", T0 + timedelta(minutes=1), 1.0, Result(findings=[f]),
                          known=Written(first.started_at, first.seen))
        sent: list[str] = []

        def logger(record) -> None:
            sent.append(record.query)

        conn.add_query_logger(logger)
        write = asyncio.ensure_future(record_runs(conn, inst, [again]))
        while not await other.fetchval("select count(*) from pg_locks where not granted"):
            await asyncio.sleep(0.02)  # the bump is waiting for the row
        await tx.commit()
        assert await write == (1, 0)
        conn.remove_query_logger(logger)
        assert sent == [ws.composed()[0], ws.separate(ws.by_name("upsert_findings"))[0]]
        assert await conn.fetchval("select state from findings") == "open"
        assert [r[0] for r in await conn.fetch("select status from outbox order by id")] == ["firing", "firing"]
        assert await conn.fetchval("select count(*) from collector_runs") == 2
