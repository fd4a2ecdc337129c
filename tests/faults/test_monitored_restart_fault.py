"""Fault: a monitored PostgreSQL is restarted (pg_ctl restart -m fast) while `dbfleet worker` has
collector queries in flight on it (held at a loopback proxy until the restart has cut every
session). The runs cut off fail and resolve nothing; the next runs reconnect by themselves; no
finding seen before the restart is resolved and no "resolved" alert is sent for one."""

from __future__ import annotations

import asyncio
import time

import pytest

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
PROXIED, DIRECT = 3, 5

_OPEN = """
select f.fingerprint from findings f where f.state <> 'resolved' and f.collector <> 'connectivity'
"""
_RUNS_SINCE = """
select i.name, count(*) filter (where r.status = 'ok') as ok, count(*) filter (where r.status <> 'ok') as failed,
       min(r.started_at) filter (where r.status = 'ok') as first_ok
from collector_runs r join instances i on i.id = r.instance_id
where r.collector = 'health' and r.started_at > to_timestamp($1) group by i.name
"""


# identity_ttl_s 3600: the identity is read once per session, so what is in flight at the restart
# is a collector's query; 0: every sweep starts with the identity read, which is then what is cut.
@pytest.mark.parametrize("in_flight, identity_ttl_s", [("collector_query", 3600), ("identity_read", 0)])
async def test_monitored_database_restarted_mid_run(fault_store, monitored_cluster, tmp_path, in_flight,
                                                    identity_ttl_s):
    dbs = await monitored_databases(monitored_cluster, PROXIED + DIRECT)
    proxies = [BlackHole(monitored_cluster.port) for _ in range(PROXIED)]
    hook = Receiver().start()
    # Each proxied entry is a server of its own to the inventory, so each runs health itself.
    proxied = [pg_instance(f"via-proxy-{i}", p.port, dbs[i]) for i, p in enumerate(proxies)]
    direct = [pg_instance(f"pg-{i}", monitored_cluster.port, db) for i, db in enumerate(dbs[PROXIED:])]
    await register(fault_store, proxied + direct)
    worker = Worker(fault_store.url, worker_config(tmp_path / "dbfleet.yaml", hook.url, identity_ttl_s=identity_ttl_s),
                    tmp_path / "worker.log").start()
    try:
        before = await wait_for(lambda: _open(fault_store, at_least=PROXIED + 1), 60, "health findings")
        # The first sweep runs health on every entry; from the second on, once per server.
        await wait_for(lambda: _sweeps(fault_store, 3), 60, "three sweeps")
        homes = await _homes(fault_store)
        t_hold = time.time()  # runs that start from now on are cut: their queries wait at the proxies
        for p in proxies:
            p.hold()
        await wait_for(lambda: _async(any(p.held for p in proxies)), 30, "a run in flight", every_s=0.02)
        t_restart = time.time()
        restart_s = await asyncio.to_thread(restart, monitored_cluster)
        for p in proxies:
            p.release()
        runs = await wait_for(lambda: _ok_again(fault_store, t_hold, homes), 60, "every run reconnected")
        await asyncio.sleep(2)  # a resolved alert would be on its way by now
        after = await _open(fault_store)
        async with fault_store.raw() as conn:
            resolved = await conn.fetchval("select count(*) from findings where fingerprint = any($1::text[]) "
                                           "and state = 'resolved'", list(before))
            resolved_alerts = await conn.fetchval(
                "select count(*) from outbox where status = 'resolved' and fingerprint = any($1::text[])", list(before))
    finally:
        worker.stop()
        hook.stop()
        for p in proxies:
            p.close()
    told_resolved = sum(d.status == "resolved" for d in hook.deliveries)
    failed = sum(r[2] for r in runs)
    assert "raised an exception" not in (tmp_path / "worker.log").read_text()  # no sweep job died of it
    write_figures(f"monitored_restart_{in_flight}", {
        "instances": PROXIED + DIRECT, "collector_runs_cut": failed, "restart_s": round(restart_s, 2),
        "reconnected": len(runs), "reconnect_s_max": round(max(r[3].timestamp() for r in runs) - t_restart, 2),
        "findings_before": len(before), "findings_after": len(after & before), "false_resolved": resolved,
        "resolved_alerts_sent": told_resolved, "resolved_outbox_rows": resolved_alerts})
    assert failed >= 1  # the restart did cut a run
    assert before <= after and resolved == 0 and resolved_alerts == 0 and told_resolved == 0


async def _async(value):
    return value


async def _open(store, at_least: int = 0) -> set[str]:
    async with store.raw() as conn:
        found = {r[0] for r in await conn.fetch(_OPEN)}
    return found if len(found) >= at_least else set()


async def _sweeps(store, n: int) -> bool:
    async with store.raw() as conn:
        return await conn.fetchval("select count(distinct started_at) >= $1 from collector_runs r "
                                   "join instances i on i.id = r.instance_id where i.name = 'via-proxy-0' "
                                   "and r.collector = 'health'", n)


async def _homes(store) -> set[str]:
    """The entries the last sweep ran health on (one per server, once topology is known)."""
    async with store.raw() as conn:
        return {r[0] for r in await conn.fetch(
            "select distinct i.name from collector_runs r join instances i on i.id = r.instance_id "
            "where r.collector = 'health' and r.status = 'ok' and r.started_at > "
            "(select max(started_at) from collector_runs where collector = 'health') - interval '2 seconds'")}


async def _runs_since(store, t: float) -> list:
    async with store.raw() as conn:
        return [tuple(r) for r in await conn.fetch(_RUNS_SINCE, t)]


async def _ok_again(store, t: float, homes: set[str]) -> list:
    runs = await _runs_since(store, t)
    return runs if {r[0] for r in runs if r[1]} >= homes else []
