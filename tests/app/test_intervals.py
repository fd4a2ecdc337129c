"""Per-instance intervals (`overrides.<collector>.interval_s`): the worker's job runs at the shortest
one asked for, and each scheduled sweep skips the instances not yet due."""

from __future__ import annotations

from app.inventory.schemas import InstanceIn
from app.inventory.store import upsert_instances
from app.scheduler import collector_intervals, job_intervals
from app.settings import Settings
from app.sweep import Sweeper


async def partitions_runs(store) -> dict[str, int]:
    async with store.raw() as conn:
        rows = await conn.fetch("select i.name, count(*) as n from collector_runs r join instances i on i.id = r.instance_id "
                                "where r.collector = 'partitions' group by i.name")
    return {r["name"]: r["n"] for r in rows}


async def test_scheduled_sweeps_skip_an_instance_until_its_own_interval_passed(clean_store, target_db):
    db = await target_db()
    async with clean_store.sessions() as session, session.begin():
        await upsert_instances(session, [
            InstanceIn(name="often", engine="postgres", host="127.0.0.1", port=5432, dbname=db, user="postgres"),
            InstanceIn(name="hourly", engine="postgres", host="127.0.0.1", port=5432, dbname=db, user="postgres",
                       overrides={"partitions": {"interval_s": 3600}}),
        ], actor="test")
    settings = Settings(worker={"backoff_base_s": 0}, collectors={"partitions": {"interval_s": 5}})
    sweeper = Sweeper(clean_store, settings)
    try:
        for _ in range(3):
            await sweeper.sweep(["partitions"], due_only=True)
            sweeper._started = {k: v - 10 for k, v in sweeper._started.items()}  # 10 s pass between ticks
        await sweeper.sweep(["partitions"])  # a sweep asked for by hand runs everything
    finally:
        await sweeper.close()
    assert await partitions_runs(clean_store) == {"often": 4, "hourly": 2}


async def test_the_job_runs_as_often_as_the_shortest_instance_interval(clean_store, target_db):
    db = await target_db()
    async with clean_store.sessions() as session, session.begin():
        await upsert_instances(session, [
            InstanceIn(name="fast", engine="postgres", host="127.0.0.1", port=5432, dbname=db, user="postgres",
                       overrides={"partitions": {"interval_s": 15}, "query_stats": {"enabled": False}}),
        ], actor="test")
    settings = Settings(collectors={"partitions": {"interval_s": 60}})
    intervals = await job_intervals(clean_store, settings)
    assert intervals["partitions"] == 15
    assert intervals["query_stats"] == collector_intervals(settings)["query_stats"]  # no interval of its own
