"""Sweeps over real target databases: findings for unreachable instances, runs, backoff, shards, locks."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from app.inventory.schemas import InstanceIn
from app.inventory.store import upsert_instances
from app.models import Instance
from app.settings import Settings
from app.sweep import Selector, Shard, Sweeper
from collectors import registry
from collectors.spec import CollectorSpec, Result, Sample

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SECRET = "s3cret-" + uuid.uuid4().hex


def pg(name: str, dbname: str, **kw) -> InstanceIn:
    return InstanceIn(**{"name": name, "engine": "postgres", "host": "127.0.0.1", "port": 5432, "dbname": dbname,
                         "user": "postgres", **kw})


async def register(store, *items: InstanceIn) -> None:
    async with store.sessions() as session, session.begin():
        await upsert_instances(session, list(items), actor="test")


async def fetch(store, sql: str, *args) -> list[dict]:
    async with store.raw() as conn:
        return [dict(r) for r in await conn.fetch(sql, *args)]


def settings(**worker) -> Settings:
    return Settings(worker={"backoff_base_s": 0, "connect_timeout_s": 2, **worker})


@pytest.fixture
def secret_env() -> Iterator[str]:
    os.environ["DBFLEET_CRED_TEST_SECRET"] = SECRET
    os.environ.pop("DBFLEET_CRED_TEST_MISSING", None)
    yield SECRET
    os.environ.pop("DBFLEET_CRED_TEST_SECRET", None)


@pytest.fixture
async def fleet(clean_store, target_db, secret_env) -> list[str]:
    """Three reachable databases (one with a credential), one closed port, one missing credential."""
    dbs = [await target_db() for _ in range(3)]
    await register(clean_store,
                   pg("pg-1", dbs[0], tags={"env": "prod"}),
                   pg("pg-2", dbs[1], tags={"env": "dev"}, credential="env:DBFLEET_CRED_TEST_SECRET"),
                   pg("pg-3", dbs[2], tags={"env": "prod"}),
                   pg("pg-down", "postgres", port=1, credential="env:DBFLEET_CRED_TEST_SECRET"),
                   pg("pg-nocred", dbs[0], credential="env:DBFLEET_CRED_TEST_MISSING"))
    return dbs


async def live_findings(store) -> dict[tuple[str, str], dict]:
    rows = await fetch(store, 'select i.name, f.* from findings f join instances i on i.id = f.instance_id '
                              "where f.state <> 'resolved'")
    return {(r["name"], r["check"]): r for r in rows}


async def test_sweep_records_runs_and_connectivity_findings(clean_store, fleet):
    # partitions is a database-level collector: it runs on every entry (health, server-level, runs
    # once for pg-1..3's one server).
    sweeper = Sweeper(clean_store, settings())
    try:
        summary = await sweeper.sweep(["partitions"])
    finally:
        await sweeper.close()
    assert (summary.instances, summary.ok, summary.failed, summary.skipped) == (5, 3, 2, 0)
    assert set(summary.errors) == {"pg-down", "pg-nocred"}
    found = await live_findings(clean_store)
    down = found[("pg-down", "instance_unreachable")]
    assert (down["severity"], down["object"], down["collector"]) == ("critical", "server", "connectivity")
    assert "Cannot reach pg-down" in down["title"] and "127.0.0.1:1" in down["title"]
    assert "backoff" in down["recommendation"]
    nocred = found[("pg-nocred", "credential_unavailable")]
    assert "No credential for pg-nocred" in nocred["title"]
    assert "DBFLEET_CRED_TEST_MISSING is not set" in nocred["title"]
    assert not any(check in {"instance_unreachable", "credential_unavailable"}
                   for name, check in found if name.startswith("pg-") and name[3:].isdigit())
    assert summary.findings_open == len(found)
    runs = {(r["name"], r["collector"]): r for r in await fetch(
        clean_store, "select i.name, r.* from collector_runs r join instances i on i.id = r.instance_id")}
    for name in ("pg-1", "pg-2", "pg-3"):
        assert runs[(name, "partitions")]["status"] == "ok" and runs[(name, "partitions")]["error"] is None
    assert runs[("pg-down", "partitions")]["status"] == "error"
    assert "cannot connect to 127.0.0.1:1" in runs[("pg-down", "partitions")]["error"]
    assert runs[("pg-nocred", "partitions")]["status"] == "error"
    assert runs[("pg-down", "connectivity")]["findings"] == 1


async def test_no_secret_is_written_anywhere(clean_store, fleet):
    sweeper = Sweeper(clean_store, settings())
    try:
        await sweeper.sweep(["health"])
    finally:
        await sweeper.close()
    for table in ("instances", "findings", "collector_runs", "outbox", "audit_log", "samples"):
        dump = await fetch(clean_store, f"select count(*) as n from {table} t where t::text like '%' || $1 || '%'",
                           SECRET)
        assert dump[0]["n"] == 0, table
    # The reference is kept, and the instance that used it was collected with it.
    refs = await fetch(clean_store, "select credential from instances where name = 'pg-2'")
    assert refs == [{"credential": "env:DBFLEET_CRED_TEST_SECRET"}]


async def test_backing_off_instances_are_skipped_and_recorded(clean_store, fleet):
    sweeper = Sweeper(clean_store, settings(backoff_base_s=600))
    try:
        first = await sweeper.sweep(["partitions"])
        second = await sweeper.sweep(["partitions"])
    finally:
        await sweeper.close()
    assert (first.failed, first.skipped) == (2, 0)
    assert (second.ok, second.failed, second.skipped) == (3, 0, 2)
    runs = await fetch(clean_store, "select i.name, r.status, r.error from collector_runs r "
                                    "join instances i on i.id = r.instance_id where r.collector = 'partitions' "
                                    "order by r.id")
    skipped = [r for r in runs if r["status"] == "skipped"]
    assert {r["name"] for r in skipped} == {"pg-down", "pg-nocred"}
    assert all("next attempt in" in r["error"] and "after 1 consecutive failures" in r["error"] for r in skipped)
    # Backing off is not new evidence: the connectivity findings stay as they were.
    found = await live_findings(clean_store)
    assert ("pg-down", "instance_unreachable") in found and ("pg-nocred", "credential_unavailable") in found


async def test_an_instance_that_comes_back_resolves_its_connectivity_finding(clean_store, target_db):
    name = f"dbf_t_late_{uuid.uuid4().hex[:8]}"
    await register(clean_store, pg("pg-late", name))
    first = Sweeper(clean_store, settings())
    try:
        await first.sweep(["health"])
    finally:
        await first.close()
    found = await live_findings(clean_store)
    assert f'database "{name}" does not exist' in found[("pg-late", "instance_unreachable")]["title"]
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'create database "{name}"')
    try:
        # A fresh worker (e.g. after a restart) learns of the open finding from the store.
        again = Sweeper(clean_store, settings())
        try:
            summary = await again.sweep(["health"])
        finally:
            await again.close()
        assert (summary.ok, summary.failed) == (1, 0)
        assert ("pg-late", "instance_unreachable") not in await live_findings(clean_store)
        outbox = await fetch(clean_store, "select status, labels->>'alertname' as check from outbox order by id")
        assert [(o["status"], o["check"]) for o in outbox if o["check"] == "instance_unreachable"] == \
            [("firing", "instance_unreachable"), ("resolved", "instance_unreachable")]
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


async def test_selector_disabled_and_gone_instances(clean_store, target_db):
    db = await target_db()
    await register(clean_store, pg("a", db, tags={"env": "prod", "team": "x"}), pg("b", db, tags={"env": "prod"}),
                   pg("c", db, tags={"env": "dev"}), pg("off", db, enabled=False), pg("gone", db))
    async with clean_store.raw() as conn:
        await conn.execute("update instances set gone_at = now() where name = 'gone'")
    sweeper = Sweeper(clean_store, settings())

    async def names(selector: Selector) -> list[str]:
        return [i.name for i in await sweeper.instances(selector)]

    assert sorted(await names(Selector())) == ["a", "b", "c"]
    assert sorted(await names(Selector(tags=(("env", "prod"),)))) == ["a", "b"]
    assert await names(Selector(tags=(("env", "prod"), ("team", "x")))) == ["a"]
    assert await names(Selector(names=("c", "off"))) == ["c"]
    assert await names(Selector(engine="mysql")) == []


# --- shards -----------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_shards_split_ids_disjointly_stably_and_cover_all(count: int):
    ids = range(1, 2001)
    owners = {i: [s for s in range(count) if Shard(s, count).owns(i)] for i in ids}
    assert all(len(o) == 1 for o in owners.values())
    again = {i: [s for s in range(count) if Shard(s, count).owns(i)] for i in ids}
    assert owners == again
    sizes = [sum(1 for o in owners.values() if o == [s]) for s in range(count)]
    assert sum(sizes) == 2000 and min(sizes) > 2000 / count / 2


def test_shard_assignment_does_not_depend_on_fleet_order():
    """Adding instances never moves existing ones between shards (hash of the id alone)."""
    before = {i: Shard(1, 3).owns(i) for i in range(1, 100)}
    after = {i: Shard(1, 3).owns(i) for i in reversed(range(1, 200))}
    assert all(after[i] == v for i, v in before.items())


@pytest.mark.parametrize("text, shard", [("0/1", Shard(0, 1)), ("2/3", Shard(2, 3)), (" 1/ 2", Shard(1, 2))])
def test_shard_parse(text: str, shard: Shard):
    assert Shard.parse(text) == shard


@pytest.mark.parametrize("text", ["3/3", "-1/2", "0/0", "a/b", "1", "1/2/3", ""])
def test_shard_parse_rejects(text: str):
    with pytest.raises(ValueError, match="shard"):
        Shard.parse(text)


async def test_sweeper_only_collects_its_own_shard(clean_store, target_db):
    db = await target_db()
    await register(clean_store, *(pg(f"s{i}", db) for i in range(12)))
    seen: list[str] = []
    for index in range(3):
        sweeper = Sweeper(clean_store, settings(), Shard(index, 3))
        insts = await sweeper.instances()
        assert all(Shard(index, 3).owns(i.id) for i in insts)
        seen += [i.name for i in insts]
    assert sorted(seen) == sorted(f"s{i}" for i in range(12))


# --- advisory locks, timeouts, errors: a probe collector registered for the test ----------------

def _probe_transform(rows, ctx) -> Result:
    return Result(samples=[Sample("probe", 1.0)])


@pytest.fixture
def probe_specs() -> Iterator[dict[str, CollectorSpec]]:
    specs = {
        "dbf_test_slow": CollectorSpec(name="dbf_test_slow", engine="postgres", description="sleeps to overlap sweeps",
                                       sql={90600: "select pg_sleep(0.5)"}, transform=_probe_transform, timeout_s=5),
        "dbf_test_timeout": CollectorSpec(name="dbf_test_timeout", engine="postgres", description="exceeds its timeout",
                                          sql={90600: "select pg_sleep(3)"}, timeout_s=0.2),
        "dbf_test_broken": CollectorSpec(name="dbf_test_broken", engine="postgres", description="its SQL is wrong",
                                         sql={90600: "select * from dbf_t_no_such_table"}),
    }
    registry.all_specs()
    for spec in specs.values():
        registry.register(spec)
    yield specs
    for spec in specs.values():
        registry._SPECS.pop((spec.engine, spec.name), None)


async def test_overlapping_sweepers_never_run_one_collector_on_one_instance_at_once(clean_store, target_db,
                                                                                     probe_specs):
    db = await target_db()
    await register(clean_store, *(pg(f"lock{i}", db) for i in range(4)))
    a, b = Sweeper(clean_store, settings()), Sweeper(clean_store, settings())
    try:
        s1, s2 = await asyncio.gather(a.sweep(["dbf_test_slow"]), b.sweep(["dbf_test_slow"]))
    finally:
        await a.close()
        await b.close()
    assert s1.ok + s2.ok + s1.skipped + s2.skipped == 8
    runs = await fetch(clean_store, "select instance_id, started_at, duration_ms from collector_runs "
                                    "where collector = 'dbf_test_slow' and status = 'ok' order by started_at")
    assert len(runs) == s1.ok + s2.ok >= 4
    by_instance: dict[int, list] = {}
    for r in runs:
        by_instance.setdefault(r["instance_id"], []).append(r)
    for rows in by_instance.values():
        for earlier, later in zip(rows, rows[1:]):
            end = earlier["started_at"].timestamp() + earlier["duration_ms"] / 1000
            assert later["started_at"].timestamp() >= end
    # The locks were released: a third sweep runs everything.
    c = Sweeper(clean_store, settings())
    try:
        assert (await c.sweep(["dbf_test_slow"])).ok == 4
    finally:
        await c.close()


async def test_timeouts_and_errors_are_recorded_and_do_not_stop_the_sweep(clean_store, target_db, probe_specs):
    db = await target_db()
    await register(clean_store, pg("t1", db))
    sweeper = Sweeper(clean_store, settings())
    try:
        summary = await sweeper.sweep(["dbf_test_timeout", "dbf_test_broken", "dbf_test_slow", "health"])
    finally:
        await sweeper.close()
    runs = {r["collector"]: r for r in await fetch(clean_store, "select * from collector_runs")}
    assert runs["dbf_test_timeout"]["status"] == "timeout"
    assert "timed out after 0.2s" in runs["dbf_test_timeout"]["error"]
    assert runs["dbf_test_broken"]["status"] == "error"
    assert "UndefinedTableError" in runs["dbf_test_broken"]["error"]
    assert runs["dbf_test_slow"]["status"] == "ok" and runs["health"]["status"] == "ok"
    assert (summary.ok, summary.failed) == (2, 2)
    # A collector failing is not the instance being down.
    assert ("t1", "instance_unreachable") not in await live_findings(clean_store)


# --- thresholds -------------------------------------------------------------------------------

THRESHOLD_CASES = [
    # (config thresholds, by_tag, instance tags, instance override, expected connections_warning_pct)
    ({}, {}, {}, {}, 80),
    ({"connections_warning_pct": 70}, {}, {}, {}, 70),
    ({"connections_warning_pct": 70}, {"env=prod": {"connections_warning_pct": 60}}, {"env": "prod"}, {}, 60),
    ({"connections_warning_pct": 70}, {"env=prod": {"connections_warning_pct": 60}}, {"env": "dev"}, {}, 70),
    ({"connections_warning_pct": 70}, {"env=prod": {"connections_warning_pct": 60}}, {"env": "prod"},
     {"health": {"thresholds": {"connections_warning_pct": 50}}}, 50),
    ({}, {}, {}, {"health": {"thresholds": {"connections_warning_pct": 40}}}, 40),
    ({}, {}, {}, {"other": {"thresholds": {"connections_warning_pct": 40}}}, 80),
]


@pytest.mark.parametrize("config, by_tag, tags, override, expected", THRESHOLD_CASES)
def test_threshold_precedence(config, by_tag, tags, override, expected):
    s = Settings(collectors={"health": {"thresholds": config, "by_tag": by_tag}})
    sweeper = Sweeper.__new__(Sweeper)
    sweeper.settings = s
    inst = Instance(name="x", engine="postgres", host="h", port=5432, tags=tags, overrides=override)
    spec = next(sp for sp in registry.specs_for("postgres") if sp.name == "health")
    merged = sweeper.thresholds(spec, inst)
    assert merged["connections_warning_pct"] == expected
    assert merged["xid_age_critical"] == 1_000_000_000  # untouched keys keep the spec's default


async def test_instance_threshold_override_changes_what_the_sweep_finds(clean_store, target_db):
    db = await target_db()
    await register(clean_store, pg("strict", db, overrides={"health": {"thresholds": {"connections_warning_pct": 0}}}),
                   pg("relaxed", db))
    sweeper = Sweeper(clean_store, settings())
    try:
        await sweeper.sweep(["health"])
    finally:
        await sweeper.close()
    found = await live_findings(clean_store)
    assert ("strict", "connections_near_limit") in found
    assert ("relaxed", "connections_near_limit") not in found


async def test_disabled_collectors_do_not_run(clean_store, target_db):
    db = await target_db()
    await register(clean_store, pg("on", db), pg("opted-out", db, overrides={"health": {"enabled": False}}))
    sweeper = Sweeper(clean_store, settings())
    try:
        await sweeper.sweep(["health"])
    finally:
        await sweeper.close()
    ran = {r["name"] for r in await fetch(clean_store, "select i.name from collector_runs r join instances i "
                                                       "on i.id = r.instance_id where r.collector = 'health'")}
    assert ran == {"on"}
    off = Sweeper(clean_store, Settings(worker={"backoff_base_s": 0}, collectors={"health": {"enabled": False}}))
    try:
        summary = await off.sweep(["health"])
    finally:
        await off.close()
    assert summary.ok == 0


async def test_a_connectivity_finding_opened_by_another_process_is_resolved_by_a_running_worker(clean_store):
    """The terminal's `dbfleet sweep` (or the API) saw the instance down; the long-running worker,
    which saw it up before, must still clear the finding once the instance is back."""
    name = f"dbf_t_late_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'create database "{name}"')
    await register(clean_store, pg("pg-flaky", name))
    worker, terminal = Sweeper(clean_store, settings()), Sweeper(clean_store, settings())
    try:
        assert (await worker.sweep(["health"])).ok == 1
        await admin.execute(f'drop database "{name}" with (force)')
        assert (await terminal.sweep(["health"])).failed == 1
        assert ("pg-flaky", "instance_unreachable") in await live_findings(clean_store)
        await admin.execute(f'create database "{name}"')
        assert (await worker.sweep(["health"])).ok == 1
        assert ("pg-flaky", "instance_unreachable") not in await live_findings(clean_store)
    finally:
        await worker.close()
        await terminal.close()
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


async def test_a_blackholed_port_gives_a_connect_timeout_finding(clean_store):
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # the kernel completes handshakes; nobody ever answers
        port = server.getsockname()[1]
        await register(clean_store, pg("pg-blackhole", "postgres", port=port))
        sweeper = Sweeper(clean_store, settings(connect_timeout_s=0.5))
        try:
            summary = await asyncio.wait_for(sweeper.sweep(["health"]), 30)
        finally:
            await sweeper.close()
    assert summary.failed == 1
    finding = (await live_findings(clean_store))[("pg-blackhole", "instance_unreachable")]
    assert finding["title"] == f"Cannot reach pg-blackhole: cannot connect to 127.0.0.1:{port}: connect timeout"
    [run] = await fetch(clean_store, "select status, error from collector_runs where collector = 'health'")
    assert run["status"] == "error" and "connect timeout" in run["error"]


async def test_an_instance_without_an_adapter_does_not_stop_the_sweep(clean_store, target_db):
    db = await target_db()
    await register(clean_store, pg("good", db))
    async with clean_store.raw() as conn:  # as cloud discovery or an older release might have written it
        await conn.execute("insert into instances (name, engine, host, port, dbname, \"user\", tls_mode) "
                           "values ('odd', 'db2', 'h', 50000, '', '', 'prefer')")
    sweeper = Sweeper(clean_store, settings())
    try:
        summary = await sweeper.sweep(["health"])
    finally:
        await sweeper.close()
    assert (summary.instances, summary.ok) == (2, 1)
    found = await live_findings(clean_store)
    assert "no adapter for engine 'db2'" in found[("odd", "driver_unavailable")]["title"]
