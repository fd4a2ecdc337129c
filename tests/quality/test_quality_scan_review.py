"""The definition-time scan review beyond freshness: a completeness, volume or assertion check whose
statement EXPLAIN says would read a large table in full is refused, naming the table, the estimate
and (where one column would fix it) the CREATE INDEX; `allow_scan: true` overrides it; the windowed
or indexed form of the same check is accepted. PostgreSQL and MariaDB."""

from __future__ import annotations

import pytest

from app.quality.definitions import parse_definitions
from app.quality.refusals import define_checks
from tests.quality.conftest import maria_exec, pg_exec, register

ROWS = 150_000
ORPHANS = "select e.id from events e left join customers c on c.id = e.id where c.id is null"


async def _review(store, settings, **raw):
    checks, problems = parse_definitions([{"name": "costly", **raw}])
    assert problems == []
    return await define_checks(store, settings, checks, "api", "test")


def _refused(defined, *words: str) -> str:
    assert defined.saved == [] and len(defined.refused) == 1, defined.refused
    [why] = defined.refused
    assert why.startswith("events-db: check costly: ") and "allow_scan: true" in why, why
    for word in words:
        assert word in why, (word, why)
    return why


def _accepted(defined) -> None:
    assert defined.refused == [] and defined.saved == ["costly"], defined.refused


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
async def test_costly_completeness_volume_and_assertion_checks_are_refused(qstore, settings, pg_qc_db, maria_qc_db,
                                                                         engine):
    if engine == "postgres":
        db = await pg_qc_db(f"create table events (id int primary key, loaded_at timestamptz not null, email text);"
                            f"insert into events select g, now() - g * interval '1 second', 'x' "
                            f"from generate_series(1, {ROWS}) g; analyze events;"
                            f"create table customers (id int primary key); insert into customers values (1)")
        table, recent = "public.events", "e.loaded_at > now() - interval '1 hour'"
        index = 'CREATE INDEX CONCURRENTLY "ix_events_loaded_at" ON "public"."events" ("loaded_at");'
    else:
        db = await maria_qc_db("create table events (id int primary key, loaded_at datetime not null, "
                               "email varchar(10))",
                               f"insert into events select seq, now() - interval seq second, 'x' from seq_1_to_{ROWS}",
                               "analyze table events", "create table customers (id int primary key)",
                               "insert into customers values (1)")
        table, recent = f"{db}.events", "e.loaded_at > now() - interval 1 hour"
        index = f"CREATE INDEX `ix_events_loaded_at` ON `{db}`.`events` (`loaded_at`) ALGORITHM=INPLACE LOCK=NONE;"
    await register(qstore, "events-db", engine, db)
    completeness = {"kind": "completeness", "tables": [table], "columns": ["email"]}
    volume = {"kind": "volume", "tables": [table], "loaded_at_field": "loaded_at"}

    # completeness: the whole table is refused; the default window (newest rows by primary key) is not.
    why = _refused(await _review(qstore, settings, **completeness, window="all"), table, "rows", "window: all")
    assert "NULL share of email over the whole table" in why
    _accepted(await _review(qstore, settings, **completeness, window="all", allow_scan=True))
    _accepted(await _review(qstore, settings, **completeness))
    # ... and a time window on an unindexed loaded_at_field names the index.
    _refused(await _review(qstore, settings, **completeness, loaded_at_field="loaded_at"), index)

    # volume: count(*) over the period on an unindexed loaded_at_field; the insert counters never scan.
    _refused(await _review(qstore, settings, **volume), index, "count(*) of rows in the last 1 hour")
    _accepted(await _review(qstore, settings, **volume, allow_scan=True))
    _accepted(await _review(qstore, settings, **{**volume, "method": "inserts", "loaded_at_field": None}))

    # assertion: the orphan anti-join reads all of events; restricted to recent rows it needs the index.
    why = _refused(await _review(qstore, settings, kind="assertion", query=ORPHANS), "events", "Restrict the query")
    assert "CREATE INDEX" not in why
    _accepted(await _review(qstore, settings, kind="assertion", query=ORPHANS, allow_scan=True))
    restricted = {"kind": "assertion", "query": f"{ORPHANS} and {recent}"}
    if engine == "postgres":  # MySQL's EXPLAIN does not show the scan's condition
        _refused(await _review(qstore, settings, **restricted), index)
    else:
        _refused(await _review(qstore, settings, **restricted), "events")

    if engine == "postgres":
        await pg_exec(db, "create index on events (loaded_at)")
    else:
        await maria_exec(db, "create index ix_loaded on events (loaded_at)")
    _accepted(await _review(qstore, settings, **completeness, loaded_at_field="loaded_at"))
    _accepted(await _review(qstore, settings, **volume))
    _accepted(await _review(qstore, settings, **restricted))
