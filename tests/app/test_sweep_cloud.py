"""Sweeps run an instance's cloud collectors beside its SQL ones: CloudWatch through moto's server,
with cloud connectivity findings kept apart from the SQL session's."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from moto.server import ThreadedMotoServer

from app.inventory.schemas import InstanceIn
from app.inventory.store import upsert_instances
from app.models import Instance
from app.settings import Settings
from app.sweep import Sweeper

for _k, _v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
    os.environ.setdefault(_k, _v)


@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _cpu(moto_url: str, region: str, db_id: str, values: list[float]) -> None:
    now = datetime.now(timezone.utc)
    boto3.client("cloudwatch", region_name=region, endpoint_url=moto_url).put_metric_data(
        Namespace="AWS/RDS", MetricData=[
            {"MetricName": "CPUUtilization", "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": db_id}],
             "Timestamp": now - timedelta(minutes=5 * (len(values) - i) + 2), "Value": v}
            for i, v in enumerate(values)])


async def _register(store, name: str, port: int, dbname: str, cloud: dict) -> None:
    async with store.sessions() as session, session.begin():
        await upsert_instances(session, [InstanceIn(name=name, engine="postgres", host="127.0.0.1", port=port,
                                                    dbname=dbname, user="postgres")], actor="test")
        inst = (await session.execute(Instance.__table__.select().where(Instance.name == name))).first()
        await session.execute(Instance.__table__.update().where(Instance.id == inst.id).values(cloud=cloud))


async def _findings(store) -> set[tuple[str, str, str, str]]:
    async with store.raw() as conn:
        rows = await conn.fetch("select i.name, f.collector, f.check, f.object from findings f "
                                "join instances i on i.id = f.instance_id where f.state <> 'resolved'")
    return {tuple(r) for r in rows}


async def test_cloud_and_sql_collectors_run_side_by_side(clean_store, target_db, moto_url):
    region = "eu-central-1"
    _cpu(moto_url, region, "rds-hot", [97, 98, 99, 97])
    db = await target_db()
    arn = f"arn:aws:rds:{region}:123456789012:db:"
    await _register(clean_store, "rds-hot", 5432, db, {"arn": arn + "rds-hot", "region": region, "allocated_storage_gb": 20})
    # SQL is down for this one; CloudWatch still reports on it.
    await _register(clean_store, "rds-sql-down", 1, db, {"arn": arn + "rds-sql-down", "region": region})
    # A cloud identity in a region that does not exist: only the cloud side fails.
    await _register(clean_store, "rds-bad-region", 5432, db, {"arn": "arn:aws:rds:xx-nowhere-9:1:db:x", "region": "xx-nowhere-9"})
    settings = Settings(worker={"backoff_base_s": 0}, cloud={"aws": {"endpoint_url": moto_url}})
    sweeper = Sweeper(clean_store, settings)
    try:
        await sweeper.sweep(["health", "cloudwatch_metrics"])
    finally:
        await sweeper.close()
    found = await _findings(clean_store)
    assert ("rds-hot", "cloudwatch_metrics", "cpu_saturated") in {f[:3] for f in found}
    assert ("rds-sql-down", "connectivity", "instance_unreachable", "server") in found
    assert not any(f[0] == "rds-hot" and f[1].startswith("connectivity") for f in found)
    assert not any(f[0] == "rds-bad-region" and f[1] == "connectivity" for f in found)
    async with clean_store.raw() as conn:
        runs = await conn.fetch(
            "select i.name || '/' || r.collector as k, r.status, r.error from collector_runs r "
            "join instances i on i.id = r.instance_id")
    statuses = {r["k"]: r["status"] for r in runs}
    errors = {r["k"]: r["error"] for r in runs}
    assert statuses["rds-bad-region/health"] == "ok" and statuses["rds-bad-region/cloudwatch_metrics"] == "error"
    assert "xx-nowhere-9" in errors["rds-bad-region/cloudwatch_metrics"]
    assert statuses["rds-hot/cloudwatch_metrics"] == "ok" and statuses["rds-hot/health"] == "ok"
    assert statuses["rds-sql-down/cloudwatch_metrics"] == "ok" and statuses["rds-sql-down/health"] == "error"
