"""Completeness over the latest window by default: by loaded_at_field the last hour (or `every`, if
longer), without one the newest window_rows rows by primary key; `window: all` reads the whole
table. Old rows full of NULLs are outside the default window, so they do not count."""

from __future__ import annotations

import pytest

from collectors.quality import sql
from collectors.quality.checks import parse_check
from tests.quality.conftest import define, run_checks

# 100 old rows without e-mail (ids 1-100, loaded 3 hours ago), 100 recent complete ones (ids 101-200,
# loaded in the last 20 minutes).
PG_ROWS = ("create table customers (id int primary key, email text, loaded_at timestamptz not null);"
           "insert into customers select g, null, now() - interval '3 hours' from generate_series(1, 100) g;"
           "insert into customers select g, 'x@y', now() - interval '20 minutes' from generate_series(101, 200) g;"
           "create table no_key (email text); insert into no_key values (null), ('a')")
MARIA_ROWS = ("create table customers (id int primary key, email varchar(50), loaded_at datetime not null)",
              "insert into customers select seq, null, utc_timestamp() - interval 3 hour from seq_1_to_100",
              "insert into customers select seq, 'x@y', utc_timestamp() - interval 20 minute from seq_101_to_200",
              "create table no_key (email varchar(10))", "insert into no_key values (null), ('a')")


def test_the_default_window_is_the_longer_of_every_and_an_hour():
    base = {"name": "c", "kind": "completeness", "tables": ["t"], "columns": ["a"]}
    assert parse_check({**base, "loaded_at_field": "at"}).window_seconds == 3600
    hours2, day = {"count": 2, "period": "hour"}, {"count": 1, "period": "day"}
    assert parse_check({**base, "loaded_at_field": "at", "every": hours2}).window_seconds == 7200
    assert parse_check({**base, "loaded_at_field": "at", "window": day}).window_seconds == 86400
    rows = parse_check(base)
    assert (rows.window_seconds, rows.window_rows, rows.whole_table) == (None, 10_000, False)
    assert parse_check({**base, "loaded_at_field": "at", "window": "all"}).window_seconds is None


@pytest.mark.parametrize("family", ["postgres", "mysql"])
def test_the_row_window_reads_the_newest_rows_by_the_key(family):
    text = sql.completeness_sql(family, "t", ["a", "a"], False, None, "b = 1", ["id"], 500)
    q = sql.quote_ident
    assert text == (f"/* dbfleet:quality:completeness */ select count(*) as total, sum(case when {q(family, 'a')} "
                    f"is null then 1 else 0 end) as missing_0, sum(case when {q(family, 'a')} is null then 1 else 0 "
                    f"end) as missing_1 from (select {q(family, 'a')} from t where (b = 1) order by {q(family, 'id')} "
                    f"desc limit 500) as dbfleet_w")
    import sqlglot

    assert len(sqlglot.parse(text, read=family)) == 1


async def _shares(store, settings, engine, db, **check) -> tuple[str, float, str]:
    async with store.raw() as conn:
        await conn.execute("truncate quality_checks, collector_runs, findings restart identity cascade")
    table = "customers" if engine == "postgres" else f"{db}.customers"
    await define(store, {"name": "emails", "kind": "completeness", "tables": [check.pop("table", table)],
                         "columns": ["email"], "max_null_share": 0.1, **check})
    [o] = (await run_checks(store, settings)).outcomes
    async with store.raw() as conn:
        window = await conn.fetchval("select details->>'window' from quality_check_results")
    return o.state, o.value, window


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
async def test_completeness_reads_the_latest_window_unless_asked_for_all(qstore, settings, pg_qc_db, maria_qc_db,
                                                                         engine):
    from tests.quality.conftest import register

    db = await (pg_qc_db(PG_ROWS) if engine == "postgres" else maria_qc_db(*MARIA_ROWS))
    await register(qstore, "crm", engine, db)
    # By loaded_at_field: the default hour holds only the recent, complete rows.
    assert await _shares(qstore, settings, engine, db, loaded_at_field="loaded_at") == (
        "pass", 0.0, "rows whose loaded_at is in the last 1 hour")
    # A window that reaches back to the old rows sees their NULLs.
    state, share, _ = await _shares(qstore, settings, engine, db, loaded_at_field="loaded_at",
                                    window={"count": 4, "period": "hour"})
    assert (state, share) == ("warn", 0.5)
    # Without loaded_at_field: the newest window_rows rows by primary key.
    assert await _shares(qstore, settings, engine, db, window_rows=100) == (
        "pass", 0.0, "the newest 100 rows by id")
    state, share, _ = await _shares(qstore, settings, engine, db, window_rows=150)
    assert (state, round(share, 4)) == ("warn", round(50 / 150, 4))
    # The whole table when asked for, or when there is no key to read the newest rows by.
    assert await _shares(qstore, settings, engine, db, window="all") == ("warn", 0.5, "the whole table")
    no_key = "no_key" if engine == "postgres" else f"{db}.no_key"
    assert await _shares(qstore, settings, engine, db, table=no_key) == (
        "warn", 0.5, "the whole table (it has no primary key)")
