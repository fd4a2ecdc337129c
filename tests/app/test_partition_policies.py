"""app.partitions on a real PostgreSQL: the apply session honours tls_mode, and a table that no
configured policy names is planned only, never applied."""

from __future__ import annotations

from datetime import date

import asyncpg
import pytest
from sqlalchemy import select

from app.models import AuditLog, Instance
from app.partitions import NO_POLICY, apply_for, plan_for
from app.settings import Settings
from collectors.engines.base import ConnectFailed, Target
from collectors.registry import maintenance_for


def _month(offset: int) -> str:
    today = date.today()
    y, m = divmod(today.month - 1 + offset, 12)
    return date(today.year + y, m + 1, 1).isoformat()


def _partitioned(table: str) -> str:
    return f"create table {table} (id bigint not null, at timestamptz not null) partition by range (at);\n" + "".join(
        f"create table {table}_m{i + 2} partition of {table} for values from ('{_month(i)}') to ('{_month(i + 1)}');\n"
        for i in (-2, -1, 0))


POLICIES = {"policies": [{"table": "public.events", "premake": 1, "retention": "1 month"}]}


def instance(db: str, tls_mode: str = "disable") -> Instance:
    return Instance(name="i12-pg", engine="postgres", host="127.0.0.1", port=5432, dbname=db, user="postgres",
                    credential=None, tls_mode=tls_mode, tags={}, cloud={})


async def _server_ssl() -> str:
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres", ssl="disable")
    try:
        return await conn.fetchval("show ssl")
    finally:
        await conn.close()


async def test_apply_with_tls_mode_require_refuses_a_server_without_tls(target_db, partitions_of):
    if await _server_ssl() != "off":
        pytest.skip("the local PostgreSQL has TLS on; this test needs one without it")
    db = await target_db(_partitioned("events"), prefix="dbf_i12")
    statements = await plan_for(Settings(partitions=POLICIES), instance(db), "public.events")
    assert statements
    before = await partitions_of(db, "events")
    target = Target(name="i12-pg", engine="postgres", host="127.0.0.1", port=5432, dbname=db, user="postgres",
                    tls_mode="require")
    with pytest.raises(ConnectFailed, match="tls_mode=require") as refused:
        await maintenance_for("postgres").apply(target, statements, 2000)
    assert "SSL" in str(refused.value)
    assert await partitions_of(db, "events") == before, "nothing went over a plain-text session"
    # The same statements over tls_mode=disable do run: the refusal above was the TLS requirement.
    plain = Target(**{**{f: getattr(target, f) for f in ("name", "engine", "host", "port", "dbname", "user")},
                      "tls_mode": "disable"})
    assert {o.status for o in await maintenance_for("postgres").apply(plain, statements, 2000)} == {"ok"}


async def test_a_table_without_a_policy_is_planned_but_never_applied(clean_store, target_db, partitions_of):
    db = await target_db(_partitioned("events") + _partitioned("metrics"), prefix="dbf_i12")
    settings = Settings(partitions=POLICIES)
    planned = await plan_for(settings, instance(db))
    assert {s.table for s in planned} == {"public.events", "public.metrics"}, "the plan shows both"
    metrics_before = await partitions_of(db, "metrics")
    async with clean_store.sessions() as session, session.begin():
        outcomes = await apply_for(session, settings, instance(db), "test")
    by_table = {(o.statement.table, o.status, o.message) for o in outcomes if o.statement.table == "public.metrics"}
    assert by_table == {("public.metrics", "planned_only", NO_POLICY)}
    assert {o.status for o in outcomes if o.statement.table == "public.events"} == {"ok"}
    assert await partitions_of(db, "metrics") == metrics_before
    async with clean_store.sessions() as session:
        audited = [a.target for a in (await session.execute(select(AuditLog))).scalars()]
    assert audited and all(t == "i12-pg/public.events" for t in audited), "only what ran is audited"


async def test_no_policies_at_all_applies_nothing(clean_store, target_db, partitions_of):
    db = await target_db(_partitioned("events"), prefix="dbf_i12")
    before = await partitions_of(db, "events")
    async with clean_store.sessions() as session, session.begin():
        outcomes = await apply_for(session, Settings(), instance(db), "test")
    assert outcomes and {o.status for o in outcomes} == {"planned_only"}
    assert await partitions_of(db, "events") == before
