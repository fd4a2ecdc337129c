"""Run one collector spec on one open connection: SQL then transform, or the spec's run hook."""

from __future__ import annotations

import asyncio

from collectors.spec import CollectorSpec, Connection, Context, Result


async def run_collector(spec: CollectorSpec, conn: Connection, ctx: Context) -> Result:
    """Run the spec within its timeout; the transform stays pure and sees dict rows."""
    ctx.server_version = conn.server_version
    ctx.is_standby = conn.is_standby
    if spec.run is not None:
        return await asyncio.wait_for(spec.run(conn, ctx), spec.timeout_s)
    rows = await asyncio.wait_for(conn.fetch(spec.sql_for(conn.server_version)), spec.timeout_s)
    return spec.transform(rows, ctx)
