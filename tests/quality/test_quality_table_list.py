"""The runner lists an instance's tables at most once per TABLES_TTL_S: a table made in between
is checked once the list is read again, and the list comes from pg_catalog (views included,
system schemas not)."""

from __future__ import annotations

import time

from app.quality import runner as runner_module
from app.quality.runner import QualityRunner
from tests.quality.conftest import define, pg_exec, register


async def test_a_new_table_is_checked_once_the_list_is_read_again(qstore, settings, pg_db):
    db = await pg_db("create table public.load_a (id int primary key, loaded_at timestamptz not null);"
                     "create index on public.load_a (loaded_at); insert into load_a values (1, now());"
                     "create view public.load_v as select * from load_a")
    iid = await register(qstore, "loads", "postgres", db)
    await define(qstore, {"name": "loads_fresh", "kind": "freshness", "tables": ["public.load_*"],
                          "loaded_at_field": "loaded_at"})
    runner = QualityRunner(qstore, settings)
    try:
        first = await runner.run()
        await pg_exec(db, "create table public.load_b (id int primary key, loaded_at timestamptz not null)",
                      "create index on public.load_b (loaded_at)", "insert into load_b values (1, now())")
        within = await runner.run()
        read_at, tables = runner._tables[iid]
        runner._tables[iid] = (time.monotonic() - runner_module.TABLES_TTL_S - 1, tables)  # the list is now old
        after = await runner.run()
    finally:
        await runner.close()
    assert sorted(o.object for o in first.outcomes) == ["public.load_a", "public.load_v"]
    assert sorted(o.object for o in within.outcomes) == ["public.load_a", "public.load_v"]
    assert sorted(o.object for o in after.outcomes) == ["public.load_a", "public.load_b", "public.load_v"]
    assert all(o.state == "pass" for o in after.outcomes)
    assert not any(t.schema in ("pg_catalog", "information_schema") for t in runner._tables[iid][1])
