"""CloudWatch metrics for RDS and Aurora instances: CPU, storage, connections, replica lag, IOPS,
memory, read with GetMetricData (coalesced across the sweep, up to 500 queries a call)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from collectors.cloud import decisions
from collectors.cloud.adapter import AwsConnection
from collectors.registry import register
from collectors.spec import CollectorSpec, Context, Result, Sample, Scope

# CloudWatch metric: (statistic, our sample name, factor to our unit).
METRICS: dict[str, tuple[str, str, float]] = {
    "CPUUtilization": ("Average", "cpu_percent", 1.0),
    "FreeStorageSpace": ("Minimum", "storage_free_bytes", 1.0),
    "DatabaseConnections": ("Average", "connections", 1.0),
    "ReplicaLag": ("Maximum", "replication_lag_seconds", 1.0),
    "AuroraReplicaLag": ("Maximum", "replication_lag_seconds", 0.001),  # reported in milliseconds
    "ReadIOPS": ("Average", "read_iops", 1.0),
    "WriteIOPS": ("Average", "write_iops", 1.0),
    "FreeableMemory": ("Minimum", "freeable_memory_bytes", 1.0),
}
THRESHOLDS = dict(decisions.THRESHOLDS)


def is_aurora(identity: Mapping[str, Any], engine: str) -> bool:
    return str(identity.get("rds_engine") or engine).startswith("aurora")


def metrics_for(identity: Mapping[str, Any], engine: str) -> list[str]:
    """Aurora storage is a cluster volume that grows by itself, and its lag metric differs."""
    skip = {"FreeStorageSpace", "ReplicaLag"} if is_aurora(identity, engine) else {"AuroraReplicaLag"}
    return [m for m in METRICS if m not in skip]


def _series(rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, list], str | None]:
    raw: dict[str, list] = {}
    lag_metric = None
    for row in rows:
        if row["metric"] not in METRICS:
            continue
        _, name, factor = METRICS[row["metric"]]
        raw.setdefault(name, []).append((row["ts"], None if row["value"] is None else row["value"] * factor))
        if name == "replication_lag_seconds":
            lag_metric = row["metric"]
    return {name: decisions.clean(points) for name, points in raw.items()}, lag_metric


def _evidence(db_id: str, metric: str, region: str) -> dict[str, Any]:
    return {"source": "CloudWatch", "namespace": "AWS/RDS", "metric": metric,
            "dimension": f"DBInstanceIdentifier={db_id}",
            "cli": (f"aws cloudwatch get-metric-statistics --region {region} --namespace AWS/RDS "
                    f"--metric-name {metric} --dimensions Name=DBInstanceIdentifier,Value={db_id} "
                    "--statistics Average Minimum Maximum --period 300 --start-time <6h ago> --end-time <now>")}


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    """rows: {"metric": CloudWatch name, "ts": datetime, "value": float}; identity in ctx.extra["cloud"]."""
    t = ctx.thresholds
    identity = ctx.extra.get("cloud") or {}
    db_id = str(identity.get("instance_id") or ctx.instance)
    region = str(identity.get("region") or "")
    series, lag_metric = _series(rows)
    result = Result(samples=decisions.latest_samples(series))
    allocated_gb = identity.get("allocated_storage_gb")
    if series.get("storage_free_bytes") and allocated_gb and not is_aurora(identity, ctx.engine):
        allocated = float(allocated_gb) * 1024**3
        free_pct = [(ts, 100.0 * v / allocated) for ts, v in series["storage_free_bytes"]]
        result.samples.append(Sample("storage_free_percent", free_pct[-1][1]))
        found = decisions.storage_low(free_pct, t, {**_evidence(db_id, "FreeStorageSpace", region),
                                                    "allocated_gb": allocated_gb,
                                                    "free_gb": round(series["storage_free_bytes"][-1][1] / 1024**3, 2)},
                                      _storage_advice(db_id, float(allocated_gb)))
        result.findings += [found] if found else []
    found = decisions.cpu_saturated(series.get("cpu_percent", []), t,
                                    _evidence(db_id, "CPUUtilization", region), CPU_ADVICE)
    result.findings += [found] if found else []
    # When dbfleet can also log in, the SQL replication collector reports lag with more detail.
    if lag_metric and not ctx.extra.get("sql_available"):
        found = decisions.replication_lag(series["replication_lag_seconds"], t, f"cloudwatch:{lag_metric}",
                                          _evidence(db_id, lag_metric, region), LAG_ADVICE)
        result.findings += [found] if found else []
    return result


def _storage_advice(db_id: str, allocated_gb: float) -> str:
    grow_to = int(allocated_gb * 1.5) + 1
    return (f"Turn on storage autoscaling: aws rds modify-db-instance --db-instance-identifier {db_id} "
            f"--max-allocated-storage {int(allocated_gb * 2)} --apply-immediately; or grow it now with "
            f"--allocated-storage {grow_to}. Risk: allocated storage can never be reduced, the volume stays "
            "in storage-optimization for hours and the next change must wait 6 hours. Also look for what "
            "is growing: table bloat, WAL held by an inactive replication slot, binlog retention, temp files.")


CPU_ADVICE = ("Find the statements using the CPU (Performance Insights top SQL, or dbfleet's query_stats "
              "findings) and fix the worst first: a missing index or a plan regression is cheaper than a "
              "bigger instance. Scaling the class (aws rds modify-db-instance --db-instance-class ...) "
              "restarts the instance: minutes of downtime, a failover on Multi-AZ.")
LAG_ADVICE = ("Compare the replica's instance class and storage IOPS with its source, look for long "
              "queries on the replica holding replay back (PostgreSQL max_standby_streaming_delay, "
              "hot_standby_feedback) and for single-threaded apply on MySQL (replica_parallel_workers). "
              "Readers serving stale data should be taken out of the read pool until they catch up.")


async def run(conn: AwsConnection, ctx: Context) -> Result:
    t = ctx.thresholds
    period = int(t["period_s"])
    # Aligned windows give every instance of a sweep the same key, so their queries share calls.
    now = ctx.now.astimezone(timezone.utc)
    end = datetime.fromtimestamp(int(now.timestamp()) // period * period, timezone.utc)
    start = end - timedelta(seconds=int(t["lookback_s"]))
    dims = [{"Name": "DBInstanceIdentifier", "Value": conn.db_instance_id}]
    queries = [(m, {"Metric": {"Namespace": "AWS/RDS", "MetricName": m, "Dimensions": dims},
                    "Period": period, "Stat": METRICS[m][0]})
               for m in metrics_for(conn.identity, ctx.engine)]
    got = await conn.metric_data(queries, start, end)
    rows = [{"metric": m, "ts": ts, "value": v} for m, points in got.items() for ts, v in points]
    ctx.extra.setdefault("cloud", {**conn.identity, "instance_id": conn.db_instance_id, "region": conn.region})
    return transform(rows, ctx)


SPEC = register(CollectorSpec(
    name="cloudwatch_metrics",
    engine="aws",
    description="RDS/Aurora CloudWatch metrics: storage running out, sustained CPU saturation, replica lag",
    run=run,
    transform=transform,
    interval_s=300,
    timeout_s=60,
    thresholds=THRESHOLDS,
    needs=('sql_available',),
    scope=Scope.server,
))
