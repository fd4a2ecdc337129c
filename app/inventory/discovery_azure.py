"""Azure discovery: Database for PostgreSQL / MySQL flexible servers and Azure SQL databases of a
subscription, listed through Azure Resource Manager and upserted into the inventory.

The rules are AWS discovery's (discovery_aws.py), with the ARM resource id as the identity:
- matched by resource id (case-insensitive, as ARM ids are); a manual row with the same endpoint
  (and, for Azure SQL, the same database) is adopted and the fields it already had are pinned;
- fields listed in `pinned` (set by hand) are never overwritten;
- a server that disappears from the subscription is marked gone (gone_at) and its findings are
  resolved, never deleted; it is revived if it comes back; with a tag filter, servers outside
  the filter are left alone;
- every change writes an audit row by "discovery:azure"; a dry run writes nothing.
The caller owns the transaction (commit at the job or command boundary).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.inventory.azure_arm import ArmError, ArmReader, make_credential
from app.inventory.cloud_settings import SUBSCRIPTION_ID, CloudSettings
from app.inventory.reconcile import Cloud, DiscoveryDiff, DiscoveryError, ExistingRows, clean_tags, matches
from app.models import Instance

log = logging.getLogger(__name__)
SQL_API = "2021-11-01"
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.:\-]")
SQL_SEMAPHORE = 8  # concurrent `databases` listings per subscription, well under ARM's read quota


@dataclass(frozen=True)
class FlexibleService:
    engine: str
    provider: str  # Microsoft.X/flexibleServers
    api_version: str
    port: int
    default_db: str


FLEXIBLE = (FlexibleService("postgres", "Microsoft.DBforPostgreSQL/flexibleServers", "2022-12-01", 5432, "postgres"),
            FlexibleService("mysql", "Microsoft.DBforMySQL/flexibleServers", "2023-06-30", 3306, ""))


AZURE = Cloud(source="azure", scope_key="subscription", id_key="resource_id", label="Azure subscription")


def _clean_tags(tags: dict[str, str] | None) -> dict[str, str]:
    """Azure tag keys may hold spaces and ':' (cleaned as for AWS); values may hold ';', which the
    inventory's CSV form cannot carry, so it becomes ','."""
    out = clean_tags([{"Key": k, "Value": v} for k, v in (tags or {}).items()])
    return {k: str(v).replace(";", ",") for k, v in out.items()}


def role(replication_role: str | None) -> str:
    """ARM's replicationRole (None/Primary/Source, Replica/AsyncReplica/GeoAsyncReplica) -> writer/reader."""
    return "reader" if "replica" in (replication_role or "").lower() else "writer"


def _resource_group(resource_id: str) -> str:
    m = re.search(r"/resourceGroups/([^/]+)", resource_id, flags=re.I)
    return m[1] if m else ""


def _identity(res: dict[str, Any], subscription: str) -> dict[str, Any]:
    sku = res.get("sku") or {}
    return {"provider": "azure", "resource_id": res["id"], "region": res.get("location"),
            "subscription": subscription.lower(), "resource_group": _resource_group(res["id"]),
            "type": str(res.get("type", "")).lower(), "sku": sku.get("name"), "sku_tier": sku.get("tier")}


def server_row(res: dict[str, Any], service: FlexibleService, subscription: str) -> dict[str, Any] | None:
    """The inventory fields ARM says a flexible server has; None while it has no endpoint yet."""
    props = res.get("properties") or {}
    if not props.get("fullyQualifiedDomainName"):
        return None
    replication = props.get("replicationRole") or "None"
    cloud = {**_identity(res, subscription), "server": res["name"], "engine_version": props.get("version"),
             "replication_role": replication, "role": role(replication),
             "storage_gb": (props.get("storage") or {}).get("storageSizeGB")}
    if props.get("sourceServerResourceId"):
        cloud["replica_source"] = props["sourceServerResourceId"]
    return {"name": res["name"], "engine": service.engine, "host": props["fullyQualifiedDomainName"],
            "port": service.port, "dbname": service.default_db, "tags": _clean_tags(res.get("tags")), "cloud": cloud,
            # Only on insert: the DBA usually replaces these with a monitoring user and a reference.
            "user": props.get("administratorLogin") or "", "tls_mode": "require", "credential": None}


def database_row(server: dict[str, Any], db: dict[str, Any], subscription: str) -> dict[str, Any] | None:
    """An Azure SQL database as an instance (host = its logical server); None for `master`."""
    props, sprops = db.get("properties") or {}, server.get("properties") or {}
    if db["name"].lower() == "master" or not sprops.get("fullyQualifiedDomainName"):
        return None
    secondary = props.get("secondaryType")  # Geo / Named / Standby: a readable secondary
    max_bytes = props.get("maxSizeBytes")
    cloud = {**_identity(db, subscription), "server": server["name"], "server_resource_id": server["id"],
             "database": db["name"], "replication_role": secondary or "None",
             "role": "reader" if secondary else "writer",
             "storage_gb": round(max_bytes / 1024**3, 2) if max_bytes else None}
    return {"name": _NAME_CHARS.sub("_", f"{server['name']}.{db['name']}"), "engine": "sqlserver",
            "host": sprops["fullyQualifiedDomainName"], "port": 1433, "dbname": db["name"],
            "tags": {**_clean_tags(server.get("tags")), **_clean_tags(db.get("tags"))}, "cloud": cloud,
            "user": sprops.get("administratorLogin") or "", "tls_mode": "require", "credential": None}


async def _sql_databases(reader: ArmReader, servers: list[dict[str, Any]]) -> list[tuple[dict, list[dict]]]:
    gate = asyncio.Semaphore(SQL_SEMAPHORE)

    async def one(server: dict[str, Any]) -> list[dict]:
        async with gate:
            # missing_ok: a server deleted since the servers list holds no databases any more.
            return await reader.list(f"{server['id']}/databases", SQL_API, f"Azure SQL databases of {server['name']}",
                                     missing_ok=True)

    got = await asyncio.gather(*(one(s) for s in servers), return_exceptions=True)
    for result in got:
        if isinstance(result, BaseException):
            raise result
    return list(zip(servers, got))  # type: ignore[arg-type]


async def list_subscription(reader: ArmReader, subscription: str) -> tuple[set[str], list[dict[str, Any]]]:
    """(every resource id listed, lower-cased; the rows of those dbfleet can monitor)."""
    base = f"/subscriptions/{subscription}/providers"
    listed: set[str] = set()
    rows: list[dict[str, Any] | None] = []
    for service in FLEXIBLE:
        servers = await reader.list(f"{base}/{service.provider}", service.api_version,
                                    f"listing {service.provider} in subscription {subscription}")
        listed |= {s["id"].lower() for s in servers}
        rows += [server_row(s, service, subscription) for s in servers]
    sql_servers = await reader.list(f"{base}/Microsoft.Sql/servers", SQL_API,
                                    f"listing Microsoft.Sql/servers in subscription {subscription}")
    for server, databases in await _sql_databases(reader, sql_servers):
        listed |= {d["id"].lower() for d in databases}
        rows += [database_row(server, d, subscription) for d in databases]
    return listed, sorted((r for r in rows if r is not None), key=lambda r: r["name"])


class _AzureRows(ExistingRows):
    """Azure rows by resource id; manual rows by endpoint, and by endpoint + database for Azure SQL
    (its databases share the logical server's endpoint)."""

    def __init__(self, rows: list[Instance]):
        super().__init__(rows)
        self.by_id = {str(r.cloud["resource_id"]).lower(): r for r in rows
                      if r.source == "azure" and (r.cloud or {}).get("resource_id")}
        self.manual: dict[tuple, Instance] = {}
        for r in sorted((r for r in rows if r.source == "manual"), key=lambda r: r.id):
            self.manual.setdefault((r.host.lower(), r.port, r.dbname.lower()), r)
            self.manual.setdefault((r.host.lower(), r.port, None), r)

    def manual_for(self, row: dict[str, Any]) -> Instance | None:
        db = row["dbname"].lower() if row["engine"] == "sqlserver" else None
        return self.manual.get((row["host"].lower(), row["port"], db))


async def fetch_subscription(subscription: str, credential: Any = None,
                             management_endpoint: str = "https://management.azure.com") -> tuple[set[str], list[dict]]:
    """List one subscription; DiscoveryError says what went wrong (nothing is written then)."""
    if not SUBSCRIPTION_ID.match(subscription or ""):
        raise DiscoveryError(f"{subscription!r} is not an Azure subscription id (a GUID such as "
                             "00000000-0000-0000-0000-000000000000)")
    own = credential is None
    try:
        credential = credential or await make_credential(CloudSettings().azure)
        async with ArmReader(credential, management_endpoint) as reader:
            return await list_subscription(reader, subscription)
    except ArmError as e:
        raise DiscoveryError(str(e)) from None
    finally:
        if own and credential is not None:
            await credential.close()


async def discover_azure(session: AsyncSession, subscription: str, tags_filter: dict[str, str] | None = None,
                         dry_run: bool = False, credential: Any = None,
                         management_endpoint: str = "https://management.azure.com") -> DiscoveryDiff:
    """Bring the inventory in line with one subscription's database servers; returns the diff.
    Without a credential, DefaultAzureCredential is used (and closed afterwards)."""
    listed, rows = await fetch_subscription(subscription, credential, management_endpoint)
    existing = _AzureRows(list((await session.execute(select(Instance))).scalars()))
    diff = DiscoveryDiff(AZURE, subscription.lower(), dry_run=dry_run)
    now = datetime.now(timezone.utc)
    for row in rows:
        if not matches(row["tags"], tags_filter or {}):
            continue
        if (inst := existing.by_id.get(row["cloud"]["resource_id"].lower())) is not None:
            AZURE.update(session, inst, row, diff)
        elif (inst := existing.manual_for(row)) is not None:
            AZURE.adopt(session, inst, row, diff)
        else:
            AZURE.add(session, row, existing.free_name(row["name"], str(row["cloud"].get("region") or "azure")), diff)
    for rid, inst in existing.by_id.items():
        if inst.cloud.get("subscription") == diff.where and rid not in listed and inst.gone_at is None:
            await AZURE.mark_gone(session, inst, now, diff, "Azure")
    if not dry_run:
        await session.flush()
    return diff


async def discovery_job_azure(store: Any, settings: Any) -> list[DiscoveryDiff]:
    """The scheduled job: every configured subscription in its own transaction; one failing
    subscription (denied, throttled, unknown) is logged and does not stop the others."""
    cfg = CloudSettings.of(settings).azure
    try:
        credential = await make_credential(cfg)
    except ArmError as e:
        log.warning("Azure discovery cannot start: %s", e)
        return []
    diffs = []
    try:
        for sub in cfg.subscriptions:
            try:
                async with store.sessions() as session, session.begin():
                    diff = await discover_azure(session, sub, cfg.tags, credential=credential,
                                                management_endpoint=cfg.management_endpoint)
            except DiscoveryError as e:
                log.warning("Azure discovery in subscription %s failed: %s", sub, e)
                continue
            log.info("Azure discovery in subscription %s: %d added, %d changed, %d gone, %d unchanged", sub,
                     len(diff.added), len(diff.changed), len(diff.gone), len(diff.unchanged))
            diffs.append(diff)
    finally:
        await credential.close()
    return diffs
