"""cloudwatch_metrics: the transform on recorded datapoints, then the whole run against moto."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from cloud_fakes import json_error, utc

from collectors.cloud import cloudwatch
from collectors.cloud.adapter import CLOUDWATCH, CloudIdentityMissing
from collectors.cloud.clients import CloudApiError, aws_client
from collectors.engines.base import Target, connect
from collectors.runner import run_collector
from collectors.spec import Context, Severity
from tests.collectors.spec_context import spec_context

NOW = utc(2026, 11, 26, 12, 0)
GB = 1024**3


def rows(metric: str, values: list[float], step_min: int = 5) -> list[dict]:
    """Points ending just before NOW, oldest first."""
    n = len(values)
    return [{"metric": metric, "ts": NOW - timedelta(minutes=step_min * (n - i)), "value": v}
            for i, v in enumerate(values)]


def ctx(cloud: dict | None = None, engine: str = "postgres", **extra) -> Context:
    c = spec_context(cloudwatch.SPEC, instance="pg-a", engine=engine, now=NOW)
    c.extra.update({"cloud": {"instance_id": "pg-a", "region": "eu-west-1", "allocated_storage_gb": 100,
                              **(cloud or {})}, **extra})
    return c


def checks(result) -> dict[str, Severity]:
    return {f.check: f.severity for f in result.findings}


def test_empty_rows_give_nothing():
    result = cloudwatch.transform([], ctx())
    assert result.findings == [] and result.samples == []


@pytest.mark.parametrize("free_gb, expected", [
    (50.0, None),                  # half free: fine
    (12.0, Severity.warning),      # 12% free
    (3.0, Severity.critical),      # 3% free
])
def test_storage_low_by_free_percent(free_gb, expected):
    result = cloudwatch.transform(rows("FreeStorageSpace", [free_gb * GB] * 3), ctx())
    assert checks(result).get("storage_low") == expected
    sample = {s.metric: s.value for s in result.samples}
    assert sample["storage_free_percent"] == pytest.approx(free_gb)


def test_storage_low_by_days_until_full_from_the_trend():
    # 60% free but losing 1% an hour for 6 hours: full in 2.5 days -> critical.
    declining = [(66 - i * (1 / 12)) * GB for i in range(72)]
    result = cloudwatch.transform(rows("FreeStorageSpace", declining), ctx())
    found = next(f for f in result.findings if f.check == "storage_low")
    assert found.severity == Severity.critical
    assert 2.0 < found.details["days_until_full"] < 3.0
    assert "--max-allocated-storage 200" in found.recommendation
    assert found.details["dimension"] == "DBInstanceIdentifier=pg-a"


def test_noisy_storage_is_not_extrapolated():
    noisy = [(60 + (5 if i % 2 else -5)) * GB for i in range(72)]
    assert "storage_low" not in checks(cloudwatch.transform(rows("FreeStorageSpace", noisy), ctx()))


def test_aurora_has_no_storage_finding_and_reads_aurora_lag_in_ms():
    c = ctx({"rds_engine": "aurora-postgresql", "allocated_storage_gb": 1}, engine="aurora-postgres")
    result = cloudwatch.transform(rows("FreeStorageSpace", [0.1 * GB] * 3) + rows("AuroraReplicaLag", [400_000.0]), c)
    assert checks(result) == {"replication_lag": Severity.critical}
    assert result.findings[0].object == "cloudwatch:AuroraReplicaLag"
    assert result.findings[0].details["lag_seconds"] == 400.0
    assert "FreeStorageSpace" not in cloudwatch.metrics_for(c.extra["cloud"], c.engine)


@pytest.mark.parametrize("cpu, expected", [
    ([20, 30, 99, 25], None),                 # one peak is not saturation
    ([40, 92, 95, 93], Severity.warning),     # last 15 minutes all >= 90
    ([99, 99, 99.5, 100], Severity.critical),
])
def test_cpu_saturated_only_when_sustained(cpu, expected):
    assert checks(cloudwatch.transform(rows("CPUUtilization", cpu), ctx())).get("cpu_saturated") == expected


def test_replica_lag_unless_sql_reports_it():
    recorded = rows("ReplicaLag", [10, 80, 120])
    assert checks(cloudwatch.transform(recorded, ctx()))["replication_lag"] == Severity.warning
    assert "replication_lag" not in checks(cloudwatch.transform(recorded, ctx(sql_available=True)))


def test_samples_use_our_names_and_units():
    recorded = rows("DatabaseConnections", [12, 14]) + rows("FreeableMemory", [2e9]) + rows("ReadIOPS", [150])
    samples = {s.metric: s.value for s in cloudwatch.transform(recorded, ctx()).samples}
    assert samples == {"connections": 14, "freeable_memory_bytes": 2e9, "read_iops": 150}


# --- against moto's CloudWatch ----------------------------------------------------------------

def put_points(moto_url: str, region: str, db_id: str, metric: str, values: list[float], now: datetime) -> None:
    cw = boto3.client("cloudwatch", region_name=region, endpoint_url=moto_url)
    n = len(values)
    cw.put_metric_data(Namespace="AWS/RDS", MetricData=[
        {"MetricName": metric, "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": db_id}],
         "Timestamp": now - timedelta(minutes=5 * (n - i) + 2), "Value": v} for i, v in enumerate(values)])


def aws_target(name: str, region: str, endpoint_url: str, **cloud) -> Target:
    return Target(name=f"{name}@aws", engine="aws", host="monitoring", port=443,
                  options={"arn": f"arn:aws:rds:{region}:123456789012:db:{name}", "region": region,
                           "endpoint_url": endpoint_url, "allocated_storage_gb": 20, **cloud})


async def test_run_reads_moto_metrics_for_three_instances_in_one_call(moto_url):
    now = datetime.now(timezone.utc)
    region = "eu-west-1"
    put_points(moto_url, region, "cw-a", "FreeStorageSpace", [2.0 * GB, 1.9 * GB, 1.8 * GB], now)
    put_points(moto_url, region, "cw-a", "CPUUtilization", [95, 96, 97, 95], now)
    put_points(moto_url, region, "cw-b", "CPUUtilization", [10, 12], now)
    put_points(moto_url, region, "cw-c", "ReplicaLag", [5, 400], now)
    calls = []
    client = aws_client("cloudwatch", region, moto_url)
    client.meta.events.register("before-call.cloudwatch.GetMetricData", lambda **kw: calls.append(1))

    async def one(name: str):
        conn = await connect(aws_target(name, region, moto_url))
        return await run_collector(cloudwatch.SPEC, conn, spec_context(cloudwatch.SPEC, instance=name, engine="postgres", now=now))

    a, b, c = await asyncio.gather(*(one(n) for n in ("cw-a", "cw-b", "cw-c")))
    assert len(calls) == 1  # 3 instances x 7 queries went out as one GetMetricData call
    assert checks(a) == {"storage_low": Severity.warning, "cpu_saturated": Severity.warning}
    assert {s.metric: s.value for s in a.samples}["storage_free_bytes"] == 1.8 * GB
    assert checks(b) == {} and {s.metric: s.value for s in b.samples}["cpu_percent"] == 12
    assert checks(c) == {"replication_lag": Severity.critical}


async def test_unknown_region_is_refused_at_connect():
    target = Target(name="x@aws", engine="aws", host="m", port=443,
                    options={"arn": "arn:aws:rds:mars-north-1:123456789012:db:x"})
    with pytest.raises(CloudIdentityMissing, match="unknown AWS region 'mars-north-1'"):
        await connect(target)


async def test_instance_without_arn_is_refused_at_connect():
    with pytest.raises(CloudIdentityMissing, match="no RDS instance ARN"):
        await connect(Target(name="x@aws", engine="aws", host="m", port=443, options={"region": "eu-west-1"}))


async def test_throttling_is_retried_with_backoff(moto_url, fault_proxy):
    now = datetime.now(timezone.utc)
    put_points(moto_url, "eu-central-1", "cw-t", "CPUUtilization", [50, 51], now)
    fault_proxy.faults = [json_error("Throttling", "Rate exceeded")] * 2
    conn = await connect(aws_target("cw-t", "eu-central-1", fault_proxy.url))
    result = await run_collector(cloudwatch.SPEC, conn, spec_context(cloudwatch.SPEC, instance="cw-t", engine="postgres", now=now))
    assert {s.metric: s.value for s in result.samples}["cpu_percent"] == 51
    assert fault_proxy.requests == 3


async def test_access_denied_is_a_clear_error(fault_proxy):
    fault_proxy.faults = [json_error("AccessDenied", "User: x is not authorized")]
    conn = await connect(aws_target("cw-d", "eu-central-1", fault_proxy.url))
    with pytest.raises(CloudApiError, match=r"denied \(AccessDenied\): grant cloudwatch:GetMetricData"):
        await run_collector(cloudwatch.SPEC, conn, spec_context(cloudwatch.SPEC, instance="cw-d", engine="postgres"))
    assert CLOUDWATCH._pending == {}
