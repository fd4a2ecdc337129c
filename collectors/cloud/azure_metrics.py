"""Azure Monitor metrics for Azure Database for PostgreSQL/MySQL flexible servers and Azure SQL
databases, batched per subscription and region through MetricsClient.query_resources."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from collectors.cloud import decisions
from collectors.cloud.azure_api import AzureConnection, parse_resource_id
from collectors.registry import register
from collectors.spec import CollectorSpec, Context, Result, Scope

# Per service: Azure metric name -> (our sample name, aggregation we read).
SERVICE_METRICS: dict[str, dict[str, tuple[str, str]]] = {
    "microsoft.dbforpostgresql/flexibleservers": {
        "cpu_percent": ("cpu_percent", "average"),
        "storage_percent": ("storage_used_percent", "maximum"),
        "active_connections": ("connections", "average"),
        "memory_percent": ("memory_percent", "average"),
        "physical_replication_delay_in_seconds": ("replication_lag_seconds", "maximum"),
    },
    "microsoft.dbformysql/flexibleservers": {
        "cpu_percent": ("cpu_percent", "average"),
        "storage_percent": ("storage_used_percent", "maximum"),
        "active_connections": ("connections", "average"),
        "memory_percent": ("memory_percent", "average"),
        "replication_lag": ("replication_lag_seconds", "maximum"),
    },
    "microsoft.sql/servers/databases": {
        "cpu_percent": ("cpu_percent", "average"),
        "storage_percent": ("storage_used_percent", "maximum"),
        "sessions_percent": ("sessions_percent", "average"),
    },
}
THRESHOLDS = dict(decisions.THRESHOLDS)


def _series(rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, tuple[str, str]]) -> dict[str, list]:
    raw: dict[str, list] = {}
    for row in rows:
        if row["metric"] not in metrics:
            continue
        name, aggregation = metrics[row["metric"]]
        raw.setdefault(name, []).append((row["ts"], row.get(aggregation)))
    return {name: decisions.clean(points) for name, points in raw.items()}


def _evidence(resource_id: str, metric: str) -> dict[str, Any]:
    return {"source": "Azure Monitor", "resource_id": resource_id, "metric": metric,
            "cli": f"az monitor metrics list --resource {resource_id} --metric {metric} "
                   "--interval PT5M --aggregation Average Maximum --offset 6h"}


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    """rows: {"metric", "ts", "average", "maximum"}; the resource id in ctx.extra["cloud"]."""
    t = ctx.thresholds
    resource_id = str((ctx.extra.get("cloud") or {}).get("resource_id") or "")
    parsed = parse_resource_id(resource_id)
    metrics = SERVICE_METRICS.get(parsed[1].lower(), {}) if parsed else {}
    series = _series(rows, metrics)
    result = Result(samples=decisions.latest_samples(series))
    used = series.get("storage_used_percent") or []
    free_pct = [(ts, 100.0 - v) for ts, v in used]
    found = decisions.storage_low(free_pct, t, _evidence(resource_id, "storage_percent"), _storage_advice(resource_id))
    result.findings += [found] if found else []
    found = decisions.cpu_saturated(series.get("cpu_percent", []), t,
                                    _evidence(resource_id, "cpu_percent"), CPU_ADVICE)
    result.findings += [found] if found else []
    lag_metric = next((m for m, (name, _) in metrics.items() if name == "replication_lag_seconds"), None)
    if lag_metric and not ctx.extra.get("sql_available"):
        found = decisions.replication_lag(series.get("replication_lag_seconds", []), t, f"azure:{lag_metric}",
                                          _evidence(resource_id, lag_metric), LAG_ADVICE)
        result.findings += [found] if found else []
    return result


def _storage_advice(resource_id: str) -> str:
    parts = resource_id.split("/")
    group, name = (parts[4], parts[8]) if len(parts) > 8 else ("<group>", "<server>")
    if "/microsoft.sql/" in resource_id.lower():
        command = f"az sql db update --resource-group {group} --server {name} --name {parts[-1]} --max-size <bigger>"
    else:
        kind = "postgres" if "postgresql" in resource_id.lower() else "mysql"
        command = (f"az {kind} flexible-server update --resource-group {group} --name {name} "
                   "--storage-auto-grow Enabled (or --storage-size <bigger GiB>)")
    return (f"Grow the storage or let it grow by itself: {command}. Risk: storage cannot be shrunk again. "
            "Also look for what is growing: table bloat, WAL held by an inactive replication slot, "
            "binary log retention, server logs kept on the data volume.")


CPU_ADVICE = ("Find the statements using the CPU (Query Store / Query Performance Insight, or dbfleet's "
              "query_stats findings) and fix the worst first. Scaling the compute tier restarts the "
              "server (seconds to minutes of downtime).")
LAG_ADVICE = ("Compare the replica's compute and IOPS with the primary's, and look for long queries on "
              "the replica holding replay back. Take a lagging read replica out of the read pool until "
              "it catches up.")


async def run(conn: AzureConnection, ctx: Context) -> Result:
    t = ctx.thresholds
    period = int(t["period_s"])
    now = ctx.now.astimezone(timezone.utc)
    end = datetime.fromtimestamp(int(now.timestamp()) // period * period, timezone.utc)
    start = end - timedelta(seconds=int(t["lookback_s"]))
    names = list(SERVICE_METRICS.get(conn.namespace.lower(), {}))
    ctx.extra.setdefault("cloud", conn.identity)
    if not names:
        return Result()
    got = await conn.metrics(names, start, end, timedelta(seconds=period))
    rows = [{"metric": m, "ts": ts, "average": avg, "maximum": mx}
            for m, points in got.items() for ts, avg, mx in points]
    return transform(rows, ctx)


SPEC = register(CollectorSpec(
    name="azure_metrics",
    engine="azure",
    description="Azure Monitor metrics: storage running out, sustained CPU saturation, replica lag",
    run=run,
    transform=transform,
    interval_s=300,
    timeout_s=60,
    thresholds=THRESHOLDS,
    needs=('sql_available',),
    scope=Scope.server,
))
