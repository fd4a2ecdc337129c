"""RDS and Aurora discovery: describe instances and clusters, upsert them into the inventory.

Rules a DBA can rely on:
- an instance is matched by its ARN (a manual row with the same endpoint is adopted, and the
  fields it already had are pinned), so renames in the inventory survive;
- fields listed in `pinned` (set by hand) are never overwritten;
- an instance that disappears from the region is marked gone (gone_at), never deleted, and is
  revived if it comes back; with a tag filter, instances outside the filter are left alone;
- every change writes an audit row by "discovery:aws"; a dry run writes nothing.
The caller owns the transaction (commit at the job or command boundary).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.inventory.cloud_settings import CloudSettings
from app.inventory.reconcile import Cloud, DiscoveryDiff, DiscoveryError, ExistingRows, clean_tags, matches
from app.inventory.schemas import DEFAULT_DATABASE
from app.models import Instance
from collectors.cloud.clients import CloudApiError, aws_client, check_region, explain

log = logging.getLogger(__name__)
ENGINES = {"postgres": "postgres", "mysql": "mysql", "mariadb": "mariadb", "aurora-postgresql": "aurora-postgres",
           "aurora-mysql": "aurora-mysql", "aurora": "aurora-mysql"}


AWS = Cloud(source="aws", scope_key="region", id_key="arn", label="AWS")
__all__ = ["DiscoveryError", "DiscoveryDiff", "discover_aws", "discovery_job", "map_engine"]


def map_engine(rds_engine: str) -> str | None:
    """RDS engine name -> inventory engine; None for engines we do not monitor (docdb, neptune)."""
    if rds_engine in ENGINES:
        return ENGINES[rds_engine]
    for prefix in ("sqlserver", "oracle"):
        if rds_engine.startswith(prefix + "-"):
            return prefix
    return None


def _list_rds(client: Any) -> tuple[list[dict], list[dict]]:
    instances = [i for page in client.get_paginator("describe_db_instances").paginate()
                 for i in page["DBInstances"]]
    clusters = [c for page in client.get_paginator("describe_db_clusters").paginate()
                for c in page["DBClusters"]]
    return instances, clusters


def _role(db: dict, cluster: dict | None) -> str:
    if cluster is not None:
        member = next((m for m in cluster.get("DBClusterMembers", [])
                       if m["DBInstanceIdentifier"] == db["DBInstanceIdentifier"]), None)
        return "writer" if member and member.get("IsClusterWriter") else "reader"
    return "reader" if db.get("ReadReplicaSourceDBInstanceIdentifier") else "writer"


def desired_row(db: dict, cluster: dict | None, region: str) -> dict[str, Any] | None:
    """The inventory fields RDS says an instance has; None if it cannot be monitored (yet)."""
    engine = map_engine(db.get("Engine", ""))
    endpoint = db.get("Endpoint") or {}
    if engine is None or not endpoint.get("Address"):
        return None
    cloud = {"provider": "aws", "arn": db["DBInstanceArn"], "region": region, "instance_id": db["DBInstanceIdentifier"],
             "rds_engine": db["Engine"], "engine_version": db.get("EngineVersion"),
             "instance_class": db.get("DBInstanceClass"), "role": _role(db, cluster),
             "dbi_resource_id": db.get("DbiResourceId"), "multi_az": bool(db.get("MultiAZ")),
             "iam_auth": bool(db.get("IAMDatabaseAuthenticationEnabled"))}
    if cluster is not None:
        cloud.update(cluster=cluster["DBClusterIdentifier"], cluster_arn=cluster.get("DBClusterArn"),
                     cluster_endpoint=cluster.get("Endpoint"), reader_endpoint=cluster.get("ReaderEndpoint"))
    else:
        cloud["allocated_storage_gb"] = db.get("AllocatedStorage")
        if db.get("ReadReplicaSourceDBInstanceIdentifier"):
            cloud["replica_source"] = db["ReadReplicaSourceDBInstanceIdentifier"]
    dbname = db.get("DBName") or (cluster or {}).get("DatabaseName") or DEFAULT_DATABASE.get(engine, "")
    secret = (db.get("MasterUserSecret") or (cluster or {}).get("MasterUserSecret") or {}).get("SecretArn")
    return {"name": db["DBInstanceIdentifier"], "engine": engine, "host": endpoint["Address"],
            "port": int(endpoint.get("Port") or 0), "dbname": dbname,
            "tags": {**clean_tags((cluster or {}).get("TagList")), **clean_tags(db.get("TagList"))}, "cloud": cloud,
            # Only on insert: the DBA usually replaces these with a monitoring user and reference.
            "user": db.get("MasterUsername") or "", "tls_mode": "require",
            "credential": f"aws-sm:{secret}#password" if secret else ("aws-iam" if cloud["iam_auth"] else None)}


class _Existing(ExistingRows):
    """The inventory rows discovery can touch: AWS rows by ARN, manual rows by endpoint, names."""

    def __init__(self, rows: list[Instance]):
        super().__init__(rows)
        self.by_arn = {(r.cloud or {}).get("arn"): r for r in rows if r.source == "aws" and (r.cloud or {}).get("arn")}

async def _rows_in_scope(session: AsyncSession) -> list[Instance]:
    return list((await session.execute(select(Instance))).scalars())


def _region_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 else ""


async def list_region(region: str, endpoint_url: str | None = None,
                      client_factory: Callable[[str], Any] | None = None) -> tuple[list[dict], list[dict]]:
    """(DB instances, DB clusters) of a region, paginated; DiscoveryError says what went wrong."""
    try:
        check_region(region, endpoint_url)
        client = client_factory(region) if client_factory else aws_client("rds", region, endpoint_url)
        return await asyncio.to_thread(_list_rds, client)
    except CloudApiError as e:
        raise DiscoveryError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - botocore errors become one readable message
        raise DiscoveryError(str(explain(e, "RDS DescribeDBInstances/DescribeDBClusters", region,
                                         "rds:DescribeDBInstances and rds:DescribeDBClusters"))) from None


async def discover_aws(session: AsyncSession, region: str, tags_filter: dict[str, str] | None = None,
                       dry_run: bool = False, endpoint_url: str | None = None,
                       client_factory: Callable[[str], Any] | None = None) -> DiscoveryDiff:
    """Bring the inventory in line with one region's RDS/Aurora instances; returns the diff."""
    instances, clusters = await list_region(region, endpoint_url, client_factory)
    by_cluster = {c["DBClusterIdentifier"]: c for c in clusters}
    listed = {db["DBInstanceArn"] for db in instances}
    existing = _Existing(await _rows_in_scope(session))
    diff = DiscoveryDiff(AWS, region, dry_run=dry_run)
    now = datetime.now(timezone.utc)
    for db in sorted(instances, key=lambda d: d["DBInstanceIdentifier"]):
        row = desired_row(db, by_cluster.get(db.get("DBClusterIdentifier") or ""), region)
        if row is None or not matches(row["tags"], tags_filter or {}):
            continue
        if (inst := existing.by_arn.get(row["cloud"]["arn"])) is not None:
            AWS.update(session, inst, row, diff)
        elif (inst := existing.manual_by_endpoint.get((row["host"].lower(), row["port"]))) is not None:
            AWS.adopt(session, inst, row, diff)
        else:
            AWS.add(session, row, existing.free_name(row["name"], region), diff)
    for arn, inst in existing.by_arn.items():
        if _region_of(arn) == region and arn not in listed and inst.gone_at is None:
            await AWS.mark_gone(session, inst, now, diff, "AWS")
    if not dry_run:
        await session.flush()
    return diff


async def discovery_job(store: Any, settings: Any) -> list[DiscoveryDiff]:
    """The scheduled job: every configured region in its own transaction; one failing region
    (denied, throttled, unknown) is logged and does not stop the others."""
    cfg = CloudSettings.of(settings).aws
    diffs = []
    for region in cfg.regions:
        try:
            async with store.sessions() as session, session.begin():
                diff = await discover_aws(session, region, cfg.tags, endpoint_url=cfg.endpoint_url)
        except DiscoveryError as e:
            log.warning("AWS discovery in %s failed: %s", region, e)
            continue
        log.info("AWS discovery in %s: %d added, %d changed, %d gone, %d unchanged", region,
                 len(diff.added), len(diff.changed), len(diff.gone), len(diff.unchanged))
        diffs.append(diff)
    return diffs
