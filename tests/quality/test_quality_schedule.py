"""Spreading the work: each check runs at its own phase within its period (time injected), once per
period, so 1,000 checks every 5 minutes are not one burst per tick; and at most one check of an
instance runs at once by default (seen from the monitored server's pg_stat_activity)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from app.quality.runner import QualityRunner
from collectors.quality.schedule import is_due, phase_s, slot_start
from tests.quality.conftest import define, register

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TICK = timedelta(seconds=30)


def test_phases_are_stable_and_spread_over_the_period():
    assert phase_s("shop.orders_fresh", "shop-1", 300) == phase_s("shop.orders_fresh", "shop-1", 300)
    assert phase_s("shop.orders_fresh", "shop-1", 300) != phase_s("shop.orders_fresh", "shop-2", 300)
    phases = [phase_s(f"db{i}.customers_complete", f"db{i}", 300) for i in range(1000)]
    assert all(0 <= p < 300 for p in phases)
    per_tick = Counter(p // 30 for p in phases)  # the ten 30 s ticks of a 5-minute period
    assert len(per_tick) == 10 and max(per_tick.values()) <= 140 and min(per_tick.values()) >= 60


def test_a_thousand_checks_every_five_minutes_run_once_a_period_spread_over_the_ticks():
    names = [f"db{i}.customers_complete" for i in range(1000)]
    phase = {n: phase_s(n, n.split(".")[0], 300) for n in names}
    last: dict[str, datetime | None] = dict.fromkeys(names, T0)  # all defined at T0, at once
    runs, per_tick = Counter(), []
    at = T0
    for _ in range(121):  # an hour of 30 s ticks, both ends included
        due = [n for n in names if is_due(at, last[n], 300, phase[n])]
        for n in due:
            last[n], runs[n] = at, runs[n] + 1
        per_tick.append(len(due))
        at += TICK
    assert set(runs.values()) == {12}  # once in each of the hour's twelve 5-minute slots
    assert per_tick[0] == 0 and max(per_tick) <= 140 and min(per_tick[1:]) >= 60  # about 100 a tick, never 1,000


def test_a_new_check_waits_for_its_slot_and_a_check_runs_once_per_slot():
    phase = phase_s("c", "i", 600)
    start = slot_start(T0, 600, phase)
    assert start <= T0.timestamp() < start + 600
    first = datetime.fromtimestamp(start + 600, UTC)  # the first slot to begin after T0
    assert not is_due(first - timedelta(seconds=1), T0, 600, phase)  # defined at T0: not yet
    assert is_due(first, T0, 600, phase)
    assert not is_due(first + timedelta(seconds=599), first, 600, phase)  # ran at the slot's start
    assert is_due(first + timedelta(seconds=600), first, 600, phase)
    assert is_due(T0, None, 600, phase)


async def test_the_runner_runs_a_check_at_its_phase(qstore, settings, pg_qc_db):
    db = await pg_qc_db("create table t (id int primary key, loaded_at timestamptz); insert into t values (1, now())")
    await register(qstore, "shop-1", "postgres", db)
    await define(qstore, {"name": "t_fresh", "kind": "freshness", "tables": ["t"], "loaded_at_field": "loaded_at",
                          "every": {"count": 10, "period": "minute"}})
    async with qstore.raw() as conn:
        defined = await conn.fetchval("select updated_at from quality_checks")
    phase = phase_s("t_fresh", "shop-1", 600)
    first = datetime.fromtimestamp(slot_start(defined, 600, phase) + 600, UTC)
    runner = QualityRunner(qstore, settings)
    try:
        assert (await runner.run(due_only=True, now=first - timedelta(seconds=1))).outcomes == []
        assert [o.state for o in (await runner.run(due_only=True, now=first)).outcomes] == ["pass"]
        assert (await runner.run(due_only=True, now=first + timedelta(seconds=300))).outcomes == []
        assert len((await runner.run(due_only=True, now=first + timedelta(seconds=600))).outcomes) == 1
    finally:
        await runner.close()


# Each check counts the other dbfleet check statements active on its database while it sleeps:
# a row (a failed assertion) means two checks of one instance ran at once.
OVERLAP = ("select n from pg_sleep(0.3) z, (select count(*) as n from pg_stat_activity "
           "where datname = current_database() and pid <> pg_backend_pid() and state = 'active' "
           "and query like '%dbfleet:quality:assertion%') a where n > 0")


async def _overlaps(store, settings, per_instance: int) -> list[str]:
    runner = QualityRunner(store, settings, per_instance=per_instance)
    try:
        summary = await runner.run()
    finally:
        await runner.close()
    assert len(summary.outcomes) == 4
    return [o.check for o in summary.outcomes if o.state != "pass"]


async def test_one_check_of_an_instance_runs_at_a_time_by_default(qstore, settings, pg_qc_db):
    await register(qstore, "shop-1", "postgres", await pg_qc_db())
    await define(qstore, *({"name": f"overlap_{i}", "kind": "assertion", "query": OVERLAP} for i in range(4)))
    assert await _overlaps(qstore, settings, per_instance=1) == []
    # With a cap of 4 the same checks do overlap: the measure can see it.
    assert len(await _overlaps(qstore, settings, per_instance=4)) >= 2
