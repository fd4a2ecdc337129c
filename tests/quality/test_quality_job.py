"""The worker's quality job: the config's checks are stored (origin config), run on the first
tick after their phase in their period, and not again within it; a config check that would scan is
not stored."""

from __future__ import annotations

from app.quality.job import quality_checks_job
from app.settings import Settings
from app.shard import Shard
from tests.quality.conftest import register


async def test_config_checks_are_stored_and_run_at_their_schedule(qstore, pg_db):
    db = await pg_db("create table orders (id int, loaded_at timestamptz); create index on orders (loaded_at);"
                     "insert into orders values (1, now() - interval '20 minutes');"
                     "create table big (id int, loaded_at timestamptz);"
                     "insert into big select g, now() from generate_series(1, 110000) g; analyze big")
    await register(qstore, "shop-db", "postgres", db, {"source": "shop"})
    settings = Settings(worker={"backoff_base_s": 0, "connect_timeout_s": 2}, checks=[
        {"name": "orders_fresh", "kind": "freshness", "tables": ["orders"], "loaded_at_field": "loaded_at",
         "every": {"count": 10, "period": "minute"}},
        {"name": "big_fresh", "kind": "freshness", "tables": ["big"], "loaded_at_field": "loaded_at"}])
    job = quality_checks_job(qstore, settings, Shard())
    assert (job["id"], job["seconds"]) == ("quality-checks", 30)
    await job["func"]()  # stores the config's checks; a new check waits for its slot in the period
    async with qstore.raw() as conn:
        assert await conn.fetchval("select count(*) from collector_runs where collector = 'quality:orders_fresh'") == 0
        # Defined more than one period (10 minutes) ago: its slot has begun since.
        await conn.execute("update quality_checks set updated_at = now() - interval '11 minutes'")
    await job["func"]()
    await job["func"]()  # not again in the same slot
    async with qstore.raw() as conn:
        stored = [tuple(r) for r in await conn.fetch("select name, origin from quality_checks order by name")]
        runs = await conn.fetchval("select count(*) from collector_runs where collector = 'quality:orders_fresh'")
        state = await conn.fetchval("select state from findings where collector = 'quality:orders_fresh'")
    assert stored == [("orders_fresh", "config")]
    assert runs == 1 and state == "open"
