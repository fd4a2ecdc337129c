"""Fault: `dbfleet worker` killed with SIGKILL in the middle of writing a run. The test holds a
lock on the outbox, so the worker's run statements (findings, outbox and run row together) are
sent but stuck in the server, kills the worker there, then lets the orphaned statements either
finish (round A) or terminates them (round B). After each kill the store must hold each run whole or not at all;
after a restart the outbox must match the findings and every alert must arrive once."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.collectors.postgres.conftest import free_port
from tests.faults.conftest import monitored_databases, pg_instance, register
from tests.faults.fault_kit import (
    Receiver,
    Worker,
    wait_for,
    worker_config,
    write_figures,
)

pytestmark = pytest.mark.faults
HEALTHY, DOWN, NEW = 8, 4, 3
PILED_UP = DOWN + NEW  # at least every unreachable instance's run write of one sweep

# A run statement of the sweep (it writes collector_runs and outbox together) stopped on our lock.
_WAITING_RUN_WRITES = """
select pid from pg_stat_activity
where datname = current_database() and pid <> pg_backend_pid() and application_name = 'dbfleet-store'
  and wait_event_type = 'Lock' and query ilike '%collector_runs%' and query ilike '%outbox%'
"""

_PER_INSTANCE = """
select i.name,
       exists (select 1 from collector_runs r where r.instance_id = i.id and r.collector = 'connectivity') as run,
       exists (select 1 from findings f where f.instance_id = i.id) as finding,
       exists (select 1 from outbox o join findings f on f.id = o.finding_id where f.instance_id = i.id) as outbox
from instances i where i.name = any($1::text[])
"""

# Every live finding was last seen by a run that is in the store, and the newest outbox row of
# every finding says what the finding says.
_MISMATCHES = """
select f.fingerprint,
       not exists (select 1 from collector_runs r where r.instance_id = f.instance_id and r.collector = f.collector
                   and r.started_at = f.last_seen and r.status = 'ok') as orphan,
       (select o.status from outbox o where o.finding_id = f.id order by o.id desc limit 1) as last_alert,
       f.state
from findings f
"""


async def kill_mid_write(store_url: str, worker: Worker, finish: bool) -> dict[str, int]:
    """Stop the worker's run writes in the server on a lock, SIGKILL it, then let them finish or end them."""
    locker = await asyncpg.connect(store_url)
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("lock table outbox in share row exclusive mode")
        waiting = await wait_for(lambda: _activity(locker, _WAITING_RUN_WRITES), 30,
                                 "a run write waiting on the lock", every_s=0.05)
        while len(now := await _activity(locker, _WAITING_RUN_WRITES)) > len(waiting) or len(waiting) < PILED_UP:
            waiting = now  # the sweep's other instances reach their writes too
            await asyncio.sleep(1.0)
        worker.kill()
        if not finish:
            for r in waiting:
                await locker.execute("select pg_terminate_backend($1)", r["pid"])
        await tx.rollback()
        # The orphans finish (or fail) on their own once the lock is gone.
        await wait_for(lambda: _none_left(locker, [r["pid"] for r in waiting]), 30, "orphaned writes ended")
        return {"writes_cut": len(waiting)}
    finally:
        await locker.close()


async def _activity(conn: asyncpg.Connection, sql: str, *args) -> list:
    """pg_stat_activity as it is now: inside a transaction it is read once and then kept."""
    await conn.execute("select pg_stat_clear_snapshot()")
    return await conn.fetch(sql, *args)


async def _none_left(conn: asyncpg.Connection, pids: list[int]) -> bool:
    await conn.execute("select pg_stat_clear_snapshot()")
    return not await conn.fetchval("select count(*) from pg_stat_activity where pid = any($1::int[]) "
                                   "and state = 'active'", pids)


async def whole_or_none(store, names: list[str]) -> tuple[int, int, int]:
    """(whole, none, partial) over the instances' first connectivity runs."""
    async with store.raw() as conn:
        rows = await conn.fetch(_PER_INSTANCE, names)
    parts = [(r["run"], r["finding"], r["outbox"]) for r in rows]
    return (sum(all(p) for p in parts), sum(not any(p) for p in parts), sum(any(p) and not all(p) for p in parts))


async def test_worker_killed_mid_write(fault_store, monitored_cluster, tmp_path):
    dbs = await monitored_databases(monitored_cluster, HEALTHY)
    hook = Receiver().start()
    await register(fault_store, [pg_instance(f"pg-{i}", monitored_cluster.port, db) for i, db in enumerate(dbs)]
                   + [pg_instance(f"down-{i}", free_port()) for i in range(DOWN)])
    config = worker_config(tmp_path / "dbfleet.yaml", hook.url)
    worker = Worker(fault_store.url, config, tmp_path / "worker.log").start()
    figures: dict = {}
    rounds = {"a": [f"new-a{i}" for i in range(NEW)], "b": [f"new-b{i}" for i in range(NEW)]}
    try:
        told = [f"down-{i}" for i in range(DOWN)]
        for name, finish in (("a", True), ("b", False)):
            # Only once the worker is sweeping and dispatching: its start-up upkeep also writes the outbox.
            await wait_for(lambda told=told: _told(hook, told), 60, "the alerts so far")
            told = told + rounds[name]
            await register(fault_store, [pg_instance(n, free_port()) for n in rounds[name]])
            cut = await kill_mid_write(fault_store.url, worker, finish)
            whole, none, partial = await whole_or_none(fault_store, rounds[name])
            figures[f"round_{name}"] = {"orphans": "finished" if finish else "terminated", **cut,
                                        "runs_whole": whole, "runs_none": none, "runs_partial": partial}
            assert partial == 0 and whole + none == NEW
            worker = Worker(fault_store.url, config, tmp_path / "worker.log").start()
        everyone = [f"down-{i}" for i in range(DOWN)] + rounds["a"] + rounds["b"]
        await wait_for(lambda: _told(hook, everyone), 60, "every alert after the restarts")
        await asyncio.sleep(3)  # a duplicate would be sent within a group interval or two
        async with fault_store.raw() as conn:
            rows = [dict(r) for r in await conn.fetch(_MISMATCHES)]
            firing_rows = await conn.fetchval("select max(n) from (select count(*) as n from outbox "
                                              "where status = 'firing' group by finding_id) c")
    finally:
        worker.stop()
        hook.stop()
    expected_alert = {"open": "firing", "acknowledged": "firing", "silenced": "firing", "resolved": "resolved"}
    figures |= {
        "findings": len(rows), "findings_without_their_run": sum(r["orphan"] for r in rows if r["state"] != "resolved"),
        "outbox_mismatches": sum(r["last_alert"] != expected_alert[r["state"]] for r in rows),
        "outbox_firing_rows_per_finding_max": firing_rows,
        "alerts_lost": len(set(everyone) - hook.told_firing("instance_unreachable")),
        "alerts_duplicated": hook.duplicates()}
    write_figures("worker_sigkill", figures)
    assert figures["findings_without_their_run"] == 0 and figures["outbox_mismatches"] == 0
    assert firing_rows == 1 and figures["alerts_lost"] == 0 and hook.duplicates() == 0


async def _told(hook: Receiver, names: list[str]) -> bool:
    return hook.told_firing("instance_unreachable") >= set(names)
