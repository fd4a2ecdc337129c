"""Run one collector spec on one open connection: SQL then transform, or the spec's run hook."""

from __future__ import annotations

import asyncio

from collectors.spec import CollectorSpec, Connection, Context, Result


async def run_collector(spec: CollectorSpec, conn: Connection, ctx: Context) -> Result:
    """Run the spec within its timeout; the transform stays pure and sees dict rows.

    asyncio.timeout rather than wait_for: no extra Task and timer per run (a measurable share of a
    sweep's CPU over hundreds of instances), same TimeoutError on expiry.
    """
    ctx.server_version = conn.server_version
    ctx.is_standby = conn.is_standby
    async with asyncio.timeout(spec.timeout_s):
        if spec.run is not None:
            return await spec.run(conn, ctx)
        rows = await conn.fetch(spec.sql_for(conn.server_version))
    return spec.transform(rows, ctx)
