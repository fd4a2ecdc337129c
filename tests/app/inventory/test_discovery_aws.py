"""RDS/Aurora discovery against moto's RDS, into a real migrated store database per test."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
import boto3
import pytest
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collectors" / "cloud"))
from cloud_fakes import FaultProxy  # noqa: E402

from app.db import Store, migrate  # noqa: E402
from app.inventory.discovery_aws import DiscoveryError, discover_aws, discovery_job, map_engine  # noqa: E402
from app.findings import fingerprint  # noqa: E402
from app.models import AuditLog, Finding, Instance, Outbox  # noqa: E402
from app.settings import Settings  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432"
TEMPLATE = f"dbf_cl_template_{os.getpid()}"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(f"{PG}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def template_db():
    """Migrated once; each test copies it (CREATE DATABASE ... TEMPLATE) instead of migrating."""
    await _admin(f'drop database if exists "{TEMPLATE}" with (force)')
    await _admin(f'create database "{TEMPLATE}"')
    await asyncio.to_thread(migrate, f"{PG}/{TEMPLATE}")
    yield TEMPLATE
    await _admin(f'drop database if exists "{TEMPLATE}" with (force)')


@pytest.fixture
async def store(template_db):
    name = f"dbf_cl_{uuid.uuid4().hex[:10]}"
    await _admin(f'create database "{name}" template "{template_db}"')
    s = Store(f"{PG}/{name}", pool_size=2)
    yield s
    await s.dispose()
    await _admin(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


# moto keeps one global backend per region, so each test gets a region of its own instead of a
# reset that would wipe state other test modules set up.
_regionS = iter(["eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-north-1", "us-west-1", "us-west-2",
                 "ap-south-1", "ap-northeast-1", "ap-southeast-2", "ca-central-1", "sa-east-1"])


@pytest.fixture
def region() -> str:
    return next(_regionS)


def make_fleet(url: str, region: str) -> object:
    rds = boto3.client("rds", region_name=region, endpoint_url=url)
    common = {"MasterUsername": "admin", "MasterUserPassword": "Secret-pw1"}
    rds.create_db_instance(DBInstanceIdentifier="orders-pg", Engine="postgres", DBInstanceClass="db.t3.micro",
                           AllocatedStorage=100, DBName="orders", Tags=[{"Key": "env", "Value": "prod"},
                                                                        {"Key": "cost center", "Value": "42"}], **common)
    rds.create_db_instance_read_replica(DBInstanceIdentifier="orders-pg-ro", SourceDBInstanceIdentifier="orders-pg")
    rds.create_db_instance(DBInstanceIdentifier="shop-maria", Engine="mariadb", EngineVersion="10.11.6", DBInstanceClass="db.t3.micro",
                           AllocatedStorage=20, Tags=[{"Key": "env", "Value": "dev"}], **common)
    rds.create_db_cluster(DBClusterIdentifier="billing", Engine="aurora-postgresql", DatabaseName="billing",
                          Tags=[{"Key": "env", "Value": "prod"}], **common)
    for member in ("billing-1", "billing-2"):
        rds.create_db_instance(DBInstanceIdentifier=member, Engine="aurora-postgresql", DBInstanceClass="db.r6g.large",
                               DBClusterIdentifier="billing")
    return rds


async def rows(store: Store) -> dict[str, Instance]:
    async with store.sessions() as s:
        return {i.name: i for i in (await s.execute(select(Instance))).scalars()}


async def audit(store: Store) -> list[AuditLog]:
    async with store.sessions() as s:
        return list((await s.execute(select(AuditLog).order_by(AuditLog.id))).scalars())


async def discover(store: Store, url: str, region: str, **kw):
    async with store.sessions() as s, s.begin():
        return await discover_aws(s, region, endpoint_url=url, **kw)


@pytest.mark.parametrize("rds_engine, expected", [
    ("postgres", "postgres"), ("aurora-postgresql", "aurora-postgres"), ("aurora-mysql", "aurora-mysql"),
    ("mysql", "mysql"), ("mariadb", "mariadb"), ("sqlserver-se", "sqlserver"), ("oracle-ee-cdb", "oracle"),
    ("docdb", None), ("neptune", None),
])
def test_engine_mapping(rds_engine, expected):
    assert map_engine(rds_engine) == expected


async def test_discovers_instances_clusters_tags_and_roles(store, moto_url, region):
    make_fleet(moto_url, region)
    diff = await discover(store, moto_url, region)
    assert sorted(c.name for c in diff.added) == ["billing-1", "billing-2", "orders-pg", "orders-pg-ro", "shop-maria"]
    got = await rows(store)
    pg = got["orders-pg"]
    assert (pg.engine, pg.port, pg.dbname, pg.source) == ("postgres", 5432, "orders", "aws")
    assert pg.host.startswith("orders-pg.") and pg.tags == {"env": "prod", "cost_center": "42"}
    assert pg.cloud["arn"] == f"arn:aws:rds:{region}:123456789012:db:orders-pg"
    assert (pg.cloud["region"], pg.cloud["role"], pg.cloud["allocated_storage_gb"]) == (region, "writer", 100)
    assert got["orders-pg-ro"].cloud["role"] == "reader" and got["orders-pg-ro"].cloud["replica_source"] == "orders-pg"
    writer, reader = got["billing-1"], got["billing-2"]
    assert writer.engine == "aurora-postgres" and writer.dbname == "billing" and writer.tags == {"env": "prod"}
    assert (writer.cloud["cluster"], writer.cloud["role"], reader.cloud["role"]) == ("billing", "writer", "reader")
    assert got["shop-maria"].engine == "mariadb" and got["shop-maria"].port == 3306
    # Each RDS instance is a server (its ARN on the server row) with its default database entry.
    async with store.raw() as conn:
        srv = await conn.fetchrow("select id, name, cloud->>'arn' as arn from servers where name = 'orders-pg'")
    assert (srv["arn"], srv["id"]) == (pg.cloud["arn"], pg.server_id)
    log = await audit(store)
    assert len(log) == 5 and {a.actor for a in log} == {"discovery:aws"}
    assert {a.action for a in log} == {"instance.discovered"}
    # A second run finds nothing to do and writes no audit rows.
    again = await discover(store, moto_url, region)
    assert (again.added, again.changed, again.gone, len(again.unchanged)) == ([], [], [], 5)
    assert len(await audit(store)) == 5


async def test_removed_instance_is_marked_gone_pinned_field_kept_and_changes_audited(store, moto_url, region):
    rds = make_fleet(moto_url, region)
    await discover(store, moto_url, region)
    async with store.sessions() as s, s.begin():
        maria = (await s.execute(select(Instance).where(Instance.name == "shop-maria"))).scalar_one()
        maria.dbname, maria.pinned = "shop", {"dbname": True}
        replica = (await s.execute(select(Instance).where(Instance.name == "orders-pg-ro"))).scalar_one()
        now = datetime.now(timezone.utc)
        s.add(Finding(fingerprint=fingerprint(replica.id, "replication_lag", "orders-pg-ro"), instance_id=replica.id,
                      collector="cloudwatch_metrics", check="replication_lag", object="orders-pg-ro",
                      severity="warning", title="Replica lag 120 s", details={}, recommendation="", first_seen=now,
                      last_seen=now, opened_at=now))
    rds.delete_db_instance(DBInstanceIdentifier="orders-pg-ro", SkipFinalSnapshot=True)
    rds.add_tags_to_resource(ResourceName=(await rows(store))["shop-maria"].cloud["arn"],
                             Tags=[{"Key": "team", "Value": "web"}])
    diff = await discover(store, moto_url, region)
    assert [c.name for c in diff.gone] == ["orders-pg-ro"]
    assert [c.name for c in diff.changed] == ["shop-maria"]
    assert diff.changed[0].fields == {"tags": {"from": {"env": "dev"}, "to": {"env": "dev", "team": "web"}}}
    got = await rows(store)
    assert got["orders-pg-ro"].gone_at is not None  # kept, not deleted
    async with store.sessions() as s:  # nothing would resolve a gone instance's findings later
        finding = (await s.execute(select(Finding))).scalar_one()
        assert (finding.state, [o.status for o in (await s.execute(select(Outbox))).scalars()]) == ("resolved", ["resolved"])
    assert got["shop-maria"].dbname == "shop" and got["shop-maria"].tags["team"] == "web"
    actions = [(a.action, a.target) for a in await audit(store)][-2:]
    assert sorted(actions) == [("instance.gone", "orders-pg-ro"), ("instance.updated", "shop-maria")]


async def test_dry_run_writes_nothing(store, moto_url, region):
    make_fleet(moto_url, region)
    diff = await discover(store, moto_url, region, dry_run=True)
    assert len(diff.added) == 5 and diff.dry_run
    assert await rows(store) == {} and await audit(store) == []


async def test_tag_filter_only_touches_matching_instances(store, moto_url, region):
    make_fleet(moto_url, region)
    diff = await discover(store, moto_url, region, tags_filter={"env": "prod"})
    # Aurora members inherit the cluster's tags.
    assert sorted(c.name for c in diff.added) == ["billing-1", "billing-2", "orders-pg", "orders-pg-ro"]
    assert (await discover(store, moto_url, region, tags_filter={"env": "dev"})).gone == []


async def test_manual_row_for_the_same_endpoint_is_adopted_and_its_fields_pinned(store, moto_url, region):
    rds = make_fleet(moto_url, region)
    host = rds.describe_db_instances(DBInstanceIdentifier="shop-maria")["DBInstances"][0]["Endpoint"]["Address"]
    async with store.sessions() as s, s.begin():
        s.add(Instance(name="maria-main", engine="mariadb", host=host, port=3306, dbname="shop", tags={"owner": "dba"},
                       source="manual"))
    diff = await discover(store, moto_url, region)
    assert "shop-maria" not in [c.name for c in diff.added]
    assert diff.pinned_kept["maria-main"] == ["dbname", "tags"]
    main = (await rows(store))["maria-main"]
    assert main.source == "aws" and main.cloud["instance_id"] == "shop-maria" and main.tags == {"owner": "dba"}
    # The server the manual row was on is the RDS instance now: one server, with the ARN.
    async with store.raw() as conn:
        servers = await conn.fetch("select id, cloud->>'instance_id' as rds from servers where lower(host) = lower($1)",
                                   host)
    assert [(r["id"], r["rds"]) for r in servers] == [(main.server_id, "shop-maria")]


async def test_unknown_region_access_denied_and_throttling(store, moto_url, region):
    async with store.sessions() as s:
        with pytest.raises(DiscoveryError, match="unknown AWS region 'eu-nowhere-9'"):
            await discover_aws(s, "eu-nowhere-9")
    proxy = FaultProxy(moto_url)
    denied = (403, b"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>no</Message>"
                   b"</Error><RequestId>1</RequestId></ErrorResponse>", "text/xml")
    throttled = (400, denied[1].replace(b"AccessDenied", b"Throttling"), "text/xml")
    try:
        proxy.faults = [denied]
        with pytest.raises(DiscoveryError, match=r"denied \(AccessDenied\): grant rds:DescribeDBInstances"):
            await discover(store, proxy.url, region)
        make_fleet(moto_url, region)
        proxy.faults, proxy.requests = [throttled, throttled], 0
        diff = await discover(store, proxy.url, region)
        assert len(diff.added) == 5 and proxy.requests == 4  # 2 throttled + instances + clusters
    finally:
        proxy.close()


async def test_discovery_job_runs_each_configured_region(store, moto_url, region):
    make_fleet(moto_url, region)
    settings = Settings(cloud={"aws": {"regions": [region, "us-east-1"], "tags": {"env": "dev"},
                                       "endpoint_url": moto_url}})
    diffs = await discovery_job(store, settings)
    assert [(d.where, [c.name for c in d.added]) for d in diffs] == [(region, ["shop-maria"]), ("us-east-1", [])]
    assert list(await rows(store)) == ["shop-maria"]


def test_cli_dry_run_shows_the_diff_then_applies_it(store, moto_url, region, monkeypatch):
    from typer.testing import CliRunner

    from app.cli import cli
    from app.settings import get_settings

    make_fleet(moto_url, region)
    monkeypatch.setenv("DBFLEET_DATABASE_URL", store.url)
    monkeypatch.setenv("DBFLEET_CLOUD__AWS__ENDPOINT_URL", moto_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        dry = runner.invoke(cli, ["discover", "aws", "--region", region, "--tag", "env=dev", "--dry-run", "--json"])
        assert dry.exit_code == 0, dry.output
        diff = json.loads(dry.stdout)[0]
        assert [c["name"] for c in diff["added"]] == ["shop-maria"]
        assert diff["region"] == region and diff["added"][0]["arn"].startswith("arn:aws:rds:")
        assert asyncio.run(_count(store.url)) == 0
        real = runner.invoke(cli, ["discover", "aws", "--region", region, "--tag", "env=dev"])
        assert real.exit_code == 0, real.output
        assert "1 new" in real.stdout and "shop-maria" in real.stdout
        assert asyncio.run(_count(store.url)) == 1
        bad = runner.invoke(cli, ["discover", "aws", "--region", region, "--tag", "env"])
        assert bad.exit_code == 2 and "must be key=value" in bad.output
    finally:
        get_settings.cache_clear()


async def _count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("select count(*) from instances")
    finally:
        await conn.close()


async def test_discovered_identity_feeds_the_cloudwatch_collector(store, moto_url, region):
    from datetime import datetime, timedelta, timezone

    from app.inventory.cloud_settings import targets_for_cloud
    from collectors.cloud import cloudwatch
    from collectors.engines.base import connect
    from collectors.runner import run_collector
    from collectors.spec import Context

    make_fleet(moto_url, region)
    await discover(store, moto_url, region)
    now = datetime.now(timezone.utc)
    boto3.client("cloudwatch", region_name=region, endpoint_url=moto_url).put_metric_data(
        Namespace="AWS/RDS", MetricData=[
            {"MetricName": "FreeStorageSpace", "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": "orders-pg"}],
             "Timestamp": now - timedelta(minutes=12), "Value": 4.0 * 1024**3}])
    inst = (await rows(store))["orders-pg"]
    settings = Settings(cloud={"aws": {"endpoint_url": moto_url}})
    [target] = await targets_for_cloud(inst.name, inst.cloud, settings)
    assert (target.name, target.engine) == ("orders-pg@aws", "aws")
    result = await run_collector(cloudwatch.SPEC, await connect(target),
                                 Context(instance=inst.name, engine=inst.engine, now=now,
                                         thresholds=dict(cloudwatch.SPEC.thresholds)))  # as the runner merges them
    [finding] = result.findings
    assert (finding.check, finding.details["free_pct"], finding.details["allocated_gb"]) == ("storage_low", 4.0, 100)
