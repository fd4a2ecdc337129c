"""Key fleet gauges (replication lag seconds, open findings) pushed to CloudWatch sinks with
`fleet_gauges: true`, once a minute, by one dispatcher at a time."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import asyncpg

from app.alerting.sinks.cloudwatch import CloudWatchSink

FRESH = timedelta(minutes=5)  # older lag samples describe a standby we no longer hear from

_LAG = """
select distinct on (s.instance_id, s.object) i.name as instance, s.object as standby, s.value
from samples s join instances i on i.id = s.instance_id
where s.metric = 'replication_lag_seconds' and s.ts > $1
order by s.instance_id, s.object, s.ts desc
"""
_OPEN = "select severity, count(*) as n from findings where state <> 'resolved' group by severity"


async def fleet_gauges(conn: asyncpg.Connection, now: datetime) -> list[tuple[str, dict[str, str], float]]:
    gauges = [("ReplicationLagSeconds", {"Instance": r["instance"], "Standby": r["standby"]}, r["value"])
              for r in await conn.fetch(_LAG, now - FRESH)]
    counts = {r["severity"]: r["n"] for r in await conn.fetch(_OPEN)}
    gauges += [("OpenFindings", {"Severity": sev}, float(counts.get(sev, 0))) for sev in ("critical", "warning", "info")]
    return gauges


async def export_fleet_gauges(conn: asyncpg.Connection, sinks: list[CloudWatchSink], now: datetime) -> int:
    """Returns the number of data points put (per sink); 0 when another dispatcher holds the turn."""
    if not sinks:
        return 0
    async with conn.transaction():
        if not await conn.fetchval("select pg_try_advisory_xact_lock(hashtext('dbfleet.alerting.gauges'))"):
            return 0
        gauges = await fleet_gauges(conn, now)
    for sink in sinks:
        await asyncio.to_thread(sink.put_gauges, gauges)
    return len(gauges)
