"""Fault: the store is restarted (pg_ctl restart -m fast, every session cut) twice under a running
`dbfleet worker`: once in the middle of a sweep that is finding five instances newly hung, once
while the webhook holds a notification in flight. The worker must carry on by itself; every
finding must be stored and alerted, and no alert sent twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from tests.collectors.postgres.conftest import free_port
from tests.faults.conftest import monitored_databases, pg_instance, register
from tests.faults.fault_kit import (
    BlackHole,
    Receiver,
    Worker,
    restart,
    wait_for,
    worker_config,
    write_figures,
)

pytestmark = pytest.mark.faults
HEALTHY, DOWN, VICTIMS = 10, 6, 5
# The receiver holds the notifications of the dispatch fault for HOLD_S, inside the receiver timeout.
HOLD_S, RECEIVER_TIMEOUT_S = 3.0, 5.0
# A notification in flight when the store went away is sent again only after its lease, which is
# the receiver's timeout + 5 s + 10 s: wait that long again to see any duplicate.
LEASE_S = RECEIVER_TIMEOUT_S + 15


async def open_findings(store) -> dict[str, tuple[str, str, int]]:
    """fingerprint -> (instance, check, finding id) of every live finding."""
    async with store.raw() as conn:
        return {r[0]: (r[1], r[2], r[3]) for r in await conn.fetch(
            "select f.fingerprint, i.name, f.check, f.id from findings f join instances i on i.id = f.instance_id "
            "where f.state <> 'resolved'")}


async def firing_outbox_rows(store) -> dict[int, int]:
    async with store.raw() as conn:
        return {r[0]: r[1] for r in await conn.fetch(
            "select finding_id, count(*) from outbox where status = 'firing' group by finding_id")}


async def runs_since(store, t: float) -> int:
    async with store.raw() as conn:
        return await conn.fetchval("select count(*) from collector_runs where started_at > to_timestamp($1)", t)


async def test_store_restarted_mid_sweep_and_mid_dispatch(fault_store, store_cluster, monitored_cluster, tmp_path):
    dbs = await monitored_databases(monitored_cluster, HEALTHY + VICTIMS)
    holes = [BlackHole(monitored_cluster.port) for _ in range(VICTIMS)]
    hook = Receiver().start()
    fleet = [pg_instance(f"pg-{i:02d}", monitored_cluster.port, db) for i, db in enumerate(dbs[:HEALTHY])]
    down = [pg_instance(f"down-{i}", free_port()) for i in range(DOWN)]
    victims = [pg_instance(f"victim-{i}", h.port, dbs[HEALTHY + i]) for i, h in enumerate(holes)]
    await register(fault_store, fleet + down + victims)
    worker = Worker(fault_store.url, worker_config(tmp_path / "dbfleet.yaml", hook.url, RECEIVER_TIMEOUT_S,
                                                       identity_ttl_s=0),
                    tmp_path / "worker.log").start()
    figures: dict = {}
    try:
        await wait_for(lambda: _async(_told(hook, down)), 60, "the first alerts delivered")

        # 1. Mid-sweep: the victims go silent; once a sweep is waiting on them, restart the store.
        hook.mode, hook.delay_s = "slow", HOLD_S
        for h in holes:
            h.swallow()
        await wait_for(lambda: _heard(holes), 30, "a sweep waiting on the victims", every_s=0.02)
        figures["restart_mid_sweep_s"] = round(await asyncio.to_thread(restart, store_cluster), 2)

        # 2. Mid-dispatch: a victim's alert is at the receiver (held 3 s); restart the store again.
        await wait_for(lambda: _in_flight(hook), 60, "a notification in flight", every_s=0.02)
        t_dispatch = time.time()
        figures["restart_mid_dispatch_s"] = round(await asyncio.to_thread(restart, store_cluster), 2)
        hook.mode = "up"

        await wait_for(lambda: _async(_told(hook, down + victims)), 90, "every alert delivered")
        await asyncio.sleep(LEASE_S + 3)  # a resend after the lease would show up by now
        assert worker.alive(), (tmp_path / "worker.log").read_text()[-3000:]
        figures["runs_after_restarts"] = await runs_since(fault_store, t_dispatch)
        found = await open_findings(fault_store)
        outbox = await firing_outbox_rows(fault_store)
    finally:
        worker.stop()
        hook.stop()
        for h in holes:
            h.close()
    expected = {i.name for i in down + victims}
    unreachable = {name for name, check, _ in found.values() if check == "instance_unreachable"}
    delivered = Counter(fp for d in hook.deliveries if d.status == "firing" for fp in d.fingerprints)
    log = (tmp_path / "worker.log").read_text()
    figures |= {
        "findings_expected": len(expected), "findings_lost": len(expected - unreachable),
        "false_findings": len(unreachable - expected), "findings_open": len(found),
        "outbox_firing_rows_per_finding_max": max(outbox.values()),
        "alerts_delivered": len(set(delivered) & set(found)), "alerts_lost": len(set(found) - set(delivered)),
        # A notification (one idempotency key) delivered twice; a fingerprint may rightly be in several
        # notifications of its group as other alerts join it.
        "notifications_delivered": len(hook.deliveries), "alerts_duplicated": hook.duplicates(),
        "sweep_jobs_failed_logged": sum("Sweeper.sweep" in line and "raised an exception" in line
                                        for line in log.splitlines()),
        "dispatcher_steps_failed_logged": log.count("alert dispatcher")}
    write_figures("store_restart", figures)
    assert unreachable == expected
    assert all(outbox.get(fid) == 1 for _, _, fid in found.values())  # one firing alert per finding
    assert set(delivered) == set(found)
    assert hook.duplicates() == 0
    assert figures["runs_after_restarts"] > 0  # it kept sweeping, on its own


def _told(hook: Receiver, instances: list) -> bool:
    return hook.told_firing("instance_unreachable") >= {i.name for i in instances}


async def _async(value):
    return value


async def _heard(holes: list[BlackHole]) -> bool:
    return any(h.heard_while_swallowing for h in holes)


async def _in_flight(hook: Receiver) -> bool:
    return hook.in_flight > 0
