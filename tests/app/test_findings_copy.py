"""Long series still go by COPY, inside the same transaction as the run's findings and run row."""

from __future__ import annotations

from datetime import datetime, timezone

from app.findings import COPY_MIN_ROWS, InstanceRef, record_run
from collectors.spec import Finding, QueryStat, Result, Sample, Severity


async def test_long_series_are_copied_with_the_run(clean_store):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    async with clean_store.raw() as conn:
        iid = await conn.fetchval(
            "insert into instances (name, engine, host, port, dbname, \"user\", tls_mode, tags) "
            "values ('pg-copy', 'postgres', 'h', 5432, 'app', 'postgres', 'prefer', '{}') returning id")
        inst = InstanceRef(iid, "pg-copy", "postgres", {})
        n = COPY_MIN_ROWS + 7
        result = Result(
            findings=[Finding("slow_query", "q1", Severity.warning, "slow")],
            samples=[Sample("m", float(i), f"o{i}") for i in range(n)],
            query_stats=[QueryStat(f"q{i}", "app", "shop", calls=i, total_ms=i / 2, rows=i, text=f"select {i}")
                         for i in range(n)])
        out = await record_run(conn, inst, "query_stats", result, now, 3.0)
        assert (out.opened, out.open_total) == (1, 1)
        assert await conn.fetchval("select count(*) from samples where instance_id = $1", iid) == n
        assert await conn.fetchval("select sum(calls) from query_stats where instance_id = $1", iid) == sum(range(n))
        assert await conn.fetchval("select count(*) from query_texts where instance_id = $1", iid) == n
        assert await conn.fetchval("select status from collector_runs where instance_id = $1", iid) == "ok"
