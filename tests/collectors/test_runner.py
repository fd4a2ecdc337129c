"""run_collector: SQL by server version then the pure transform, or the run hook, within the timeout."""

from __future__ import annotations

import asyncio

import pytest

from collectors.engines import Target, connect
from collectors.runner import run_collector
from collectors.spec import CollectorSpec, Context, Finding, Result, Severity


@pytest.fixture
async def conn():
    c = await connect(Target(name="pg", engine="postgres", host="127.0.0.1", port=5432, dbname="postgres",
                             user="postgres"))
    yield c
    await c.close()


def _names(rows, ctx: Context) -> Result:
    return Result(findings=[Finding("probe", str(r["v"]), Severity.info, f"saw {r['v']}") for r in rows],
                  state={"version": ctx.server_version, "standby": ctx.is_standby, "previous": ctx.previous})


async def test_sql_is_picked_by_the_servers_version_and_transformed(conn):
    spec = CollectorSpec(name="probe", engine="postgres", description="picks SQL by version",
                         sql={90600: "select 'old' as v", conn.server_version: "select 'mine' as v",
                              conn.server_version + 1: "select 'too new' as v"},
                         transform=_names)
    ctx = Context(instance="pg", engine="postgres", previous="before")
    result = await run_collector(spec, conn, ctx)
    assert [f.object for f in result.findings] == ["mine"]
    assert result.state == {"version": conn.server_version, "standby": False, "previous": "before"}


async def test_run_hook_replaces_sql_and_transform(conn):
    async def hook(c, ctx: Context) -> Result:
        rows = await c.fetch("select 1 as a union all select 2")
        return Result(state=[r["a"] for r in rows])

    spec = CollectorSpec(name="probe", engine="postgres", description="multi-step work", run=hook)
    assert (await run_collector(spec, conn, Context(instance="pg", engine="postgres"))).state == [1, 2]


async def test_a_slow_query_is_cut_at_the_specs_timeout(conn):
    spec = CollectorSpec(name="probe", engine="postgres", description="too slow", sql={90600: "select pg_sleep(3)"},
                         timeout_s=0.2)
    with pytest.raises((asyncio.TimeoutError, TimeoutError)):
        await run_collector(spec, conn, Context(instance="pg", engine="postgres"))


async def test_a_slow_run_hook_is_cut_at_the_specs_timeout(conn):
    async def hook(c, ctx):
        await asyncio.sleep(3)
        return Result()

    spec = CollectorSpec(name="probe", engine="postgres", description="too slow", run=hook, timeout_s=0.2)
    with pytest.raises((asyncio.TimeoutError, TimeoutError)):
        await run_collector(spec, conn, Context(instance="pg", engine="postgres"))


async def test_a_server_older_than_every_key_is_refused(conn):
    spec = CollectorSpec(name="probe", engine="postgres", description="needs the future",
                         sql={conn.server_version + 1: "select 1"})
    with pytest.raises(ValueError, match="probe needs postgres version"):
        await run_collector(spec, conn, Context(instance="pg", engine="postgres"))
