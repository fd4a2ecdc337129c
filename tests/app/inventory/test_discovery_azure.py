"""Azure discovery against a loopback Azure Resource Manager (the list endpoints discovery calls,
with nextLink paging and bearer checks), into a real migrated store database per test."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from sqlalchemy import select

from app.db import Store, migrate
from app.findings import fingerprint
from app.inventory import azure_arm, discovery_azure
from app.inventory.cloud_settings import AzureCloud
from app.inventory.discovery_aws import DiscoveryError
from app.inventory.discovery_azure import discover_azure, discovery_job_azure, role
from app.models import AuditLog, Finding, Instance, Outbox
from app.settings import Settings

PG = "postgresql://postgres@127.0.0.1:5432"
TEMPLATE = f"dbf_az_template_{os.getpid()}"
SUB = "11111111-2222-3333-4444-555555555555"
OTHER_SUB = "99999999-8888-7777-6666-555555555555"
TOKEN = "test-token"
API_VERSIONS = {"microsoft.dbforpostgresql/flexibleservers": "2022-12-01",
                "microsoft.dbformysql/flexibleservers": "2023-06-30", "microsoft.sql/servers": "2021-11-01"}


# --- a loopback Azure Resource Manager ------------------------------------------------------------

class FakeArm:
    """GET /subscriptions/{sub}/providers/{ns}/{type} and {sql server id}/databases, `page_size`
    items a page with nextLink; 401 without the right bearer token; faults on request."""

    def __init__(self, page_size: int = 2):
        self.page_size = page_size
        self.resources: dict[str, list[dict[str, Any]]] = {}  # "sub|provider" lower -> servers
        self.databases: dict[str, list[dict[str, Any]]] = {}  # sql server id lower -> databases
        self.known_subscriptions = {SUB}
        self.faults: list[tuple[int, str, dict[str, str]]] = []  # (status, error code, headers)
        self.fault_on: str | None = None  # only requests whose path contains this get faults
        self.foreign_next_link = False
        self.requests: list[dict[str, Any]] = []
        arm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                arm.requests.append({"path": url.path, "query": parse_qs(url.query),
                                     "authorization": self.headers.get("authorization")})
                status, payload, headers = arm.answer(url.path, parse_qs(url.query),
                                                      self.headers.get("authorization"), self.headers["host"])
                data = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in {"content-type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, resource: dict[str, Any]) -> dict[str, Any]:
        m = re.match(r"^/subscriptions/([^/]+)/resourceGroups/[^/]+/providers/([^/]+/[^/]+)/[^/]+(/databases/.+)?$",
                     resource["id"])
        if m[3]:
            self.databases.setdefault(resource["id"].rsplit("/databases/", 1)[0].lower(), []).append(resource)
        else:
            self.resources.setdefault(f"{m[1]}|{m[2]}".lower(), []).append(resource)
        return resource

    def remove(self, name: str) -> None:
        for items in [*self.resources.values(), *self.databases.values()]:
            items[:] = [r for r in items if r["name"] != name]

    def answer(self, path: str, query: dict[str, list[str]], auth: str | None, host: str) -> tuple[int, Any, dict]:
        if auth != f"Bearer {TOKEN}":
            return 401, _error("InvalidAuthenticationToken"), {}
        if self.faults and (self.fault_on is None or self.fault_on in path):
            status, code, headers = self.faults.pop(0)
            return status, _error(code), headers
        sub = path.split("/")[2] if path.startswith("/subscriptions/") else ""
        if sub not in self.known_subscriptions:
            return 404, _error("SubscriptionNotFound"), {}
        if m := re.match(r"^/subscriptions/([^/]+)/providers/([^/]+/[^/]+)$", path):
            items, provider = self.resources.get(f"{m[1]}|{m[2]}".lower(), []), m[2].lower()
        elif path.lower().endswith("/databases"):
            items, provider = self.databases.get(path[: -len("/databases")].lower(), []), "microsoft.sql/servers"
        else:
            return 404, _error("ResourceNotFound"), {}
        if query.get("api-version") != [API_VERSIONS[provider]]:
            return 400, _error("InvalidApiVersionParameter"), {}
        skip = int(query.get("$skiptoken", ["0"])[0])
        page: dict[str, Any] = {"value": items[skip: skip + self.page_size]}
        if skip + self.page_size < len(items):
            base = "http://elsewhere.example" if self.foreign_next_link else f"http://{host}"
            page["nextLink"] = f"{base}{path}?api-version={API_VERSIONS[provider]}&$skiptoken={skip + self.page_size}"
        return 200, page, {}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _error(code: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": f"refused by the test server ({code})"}}


class FakeCredential:
    """azure-identity's async credential shape, handing out a fixed token."""

    def __init__(self, token: str = TOKEN, fail: bool = False):
        self.token, self.fail, self.scopes, self.closed = token, fail, [], False

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes += scopes
        if self.fail:
            raise ClientAuthenticationError("AADSTS7000215: Invalid client secret provided.")
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        self.closed = True


def _rid(provider: str, name: str, rg: str = "rg-data", sub: str = SUB) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{provider}/{name}"


def flexible(kind: str, name: str, tags: dict[str, str] | None = None, replication: str = "None",
             source: str | None = None, fqdn: bool = True, storage_gb: int = 128) -> dict[str, Any]:
    provider = {"postgres": "Microsoft.DBforPostgreSQL/flexibleServers",
                "mysql": "Microsoft.DBforMySQL/flexibleServers"}[kind]
    domain = {"postgres": "postgres.database.azure.com", "mysql": "mysql.database.azure.com"}[kind]
    props: dict[str, Any] = {"administratorLogin": "dbadmin", "version": "16" if kind == "postgres" else "8.0.21",
                             "state": "Ready", "replicationRole": replication, "storage": {"storageSizeGB": storage_gb}}
    if fqdn:
        props["fullyQualifiedDomainName"] = f"{name}.{domain}"
    if source:
        props["sourceServerResourceId"] = source
    return {"id": _rid(provider, name), "name": name, "type": provider, "location": "westeurope", "tags": tags or {},
            "sku": {"name": "Standard_D2ds_v4", "tier": "GeneralPurpose"}, "properties": props}


def sql_server(name: str, tags: dict[str, str] | None = None) -> dict[str, Any]:
    return {"id": _rid("Microsoft.Sql/servers", name), "name": name, "type": "Microsoft.Sql/servers",
            "location": "northeurope", "tags": tags or {},
            "properties": {"administratorLogin": "sqladmin",
                           "fullyQualifiedDomainName": f"{name}.database.windows.net"}}


def sql_database(server: str, name: str, tags: dict[str, str] | None = None,
                 secondary: str | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {"maxSizeBytes": 32 * 1024**3, "status": "Online"}
    if secondary:
        props["secondaryType"] = secondary
    return {"id": _rid("Microsoft.Sql/servers", f"{server}/databases/{name}"), "name": name,
            "type": "Microsoft.Sql/servers/databases", "location": "northeurope", "tags": tags or {},
            "sku": {"name": "GP_Gen5_2", "tier": "GeneralPurpose"}, "properties": props}


def make_fleet(arm: FakeArm) -> None:
    arm.add(flexible("postgres", "orders-pg", {"env": "prod", "cost center": "42"}, replication="Primary"))
    arm.add(flexible("postgres", "orders-pg-ro", {"env": "prod"}, replication="AsyncReplica",
                     source=_rid("Microsoft.DBforPostgreSQL/flexibleServers", "orders-pg")))
    arm.add(flexible("postgres", "new-pg", {"env": "prod"}, fqdn=False))  # still provisioning: no endpoint yet
    arm.add(flexible("mysql", "shop-mysql", {"env": "dev"}))
    arm.add(sql_server("billing-sql", {"env": "prod"}))
    for db in (sql_database("billing-sql", "master"), sql_database("billing-sql", "billing", {"team": "fin"}),
               sql_database("billing-sql", "billing-ro", secondary="Geo")):
        arm.add(db)


FLEET = ["billing-sql.billing", "billing-sql.billing-ro", "orders-pg", "orders-pg-ro", "shop-mysql"]


# --- fixtures and helpers -------------------------------------------------------------------------

async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(f"{PG}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def template_db():
    """Migrated once (in a thread: Alembic is blocking); each test copies it."""
    await _admin(f'drop database if exists "{TEMPLATE}" with (force)')
    await _admin(f'create database "{TEMPLATE}"')
    await asyncio.to_thread(migrate, f"{PG}/{TEMPLATE}")
    yield TEMPLATE
    await _admin(f'drop database if exists "{TEMPLATE}" with (force)')


@pytest.fixture
async def store(template_db):
    name = f"dbf_az_{uuid.uuid4().hex[:10]}"
    await _admin(f'create database "{name}" template "{template_db}"')
    s = Store(f"{PG}/{name}", pool_size=2)
    yield s
    await s.dispose()
    await _admin(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def arm():
    server = FakeArm()
    yield server
    server.close()


async def discover(store: Store, arm: FakeArm, sub: str = SUB, **kw: Any):
    async with store.sessions() as s, s.begin():
        return await discover_azure(s, sub, credential=kw.pop("credential", FakeCredential()),
                                    management_endpoint=arm.url, **kw)


async def rows(store: Store) -> dict[str, Instance]:
    async with store.sessions() as s:
        return {i.name: i for i in (await s.execute(select(Instance))).scalars()}


async def audit(store: Store) -> list[AuditLog]:
    async with store.sessions() as s:
        return list((await s.execute(select(AuditLog).order_by(AuditLog.id))).scalars())


async def open_finding(store: Store, instance_name: str) -> None:
    now = datetime.now(timezone.utc)
    async with store.sessions() as s, s.begin():
        inst = (await s.execute(select(Instance).where(Instance.name == instance_name))).scalar_one()
        s.add(Finding(fingerprint=fingerprint(inst.id, "replication_lag", instance_name), instance_id=inst.id,
                      collector="azure_metrics", check="replication_lag", object=instance_name, severity="warning",
                      title="Replica is 120 s behind", details={}, recommendation="", first_seen=now, last_seen=now,
                      opened_at=now))


# --- tests ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("replication_role, expected", [
    ("Primary", "writer"), ("None", "writer"), (None, "writer"), ("Source", "writer"),
    ("Replica", "reader"), ("AsyncReplica", "reader"), ("GeoAsyncReplica", "reader"),
])
def test_replication_role_mapping(replication_role, expected):
    assert role(replication_role) == expected


async def test_discovers_flexible_servers_and_sql_databases_across_pages(store, arm):
    make_fleet(arm)
    credential = FakeCredential()
    diff = await discover(store, arm, credential=credential)
    assert sorted(c.name for c in diff.added) == FLEET
    got = await rows(store)
    pg = got["orders-pg"]
    assert (pg.engine, pg.host, pg.port, pg.dbname, pg.source) == (
        "postgres", "orders-pg.postgres.database.azure.com", 5432, "postgres", "azure")
    assert pg.tags == {"env": "prod", "cost_center": "42"} and pg.user == "dbadmin" and pg.credential is None
    assert pg.cloud["resource_id"] == _rid("Microsoft.DBforPostgreSQL/flexibleServers", "orders-pg")
    assert [pg.cloud[k] for k in ("region", "subscription", "role", "sku", "storage_gb")] == [
        "westeurope", SUB, "writer", "Standard_D2ds_v4", 128]
    ro = got["orders-pg-ro"].cloud
    assert [ro["role"], ro["replication_role"], ro["replica_source"]] == ["reader", "AsyncReplica",
                                                                          pg.cloud["resource_id"]]
    assert (got["shop-mysql"].engine, got["shop-mysql"].port, got["shop-mysql"].dbname) == ("mysql", 3306, "")
    billing = got["billing-sql.billing"]
    assert (billing.engine, billing.host, billing.port, billing.dbname) == (
        "sqlserver", "billing-sql.database.windows.net", 1433, "billing")
    assert billing.tags == {"env": "prod", "team": "fin"} and billing.cloud["storage_gb"] == 32
    assert got["billing-sql.billing-ro"].cloud["role"] == "reader"
    # Each flexible server is a server (its resource id on the server row) with its default database entry.
    async with store.raw() as conn:
        srv = await conn.fetchrow("select id, cloud->>'resource_id' as rid from servers where name = 'orders-pg'")
    assert (srv["rid"], srv["id"]) == (pg.cloud["resource_id"], pg.server_id)
    # Every call carried the bearer token for ARM's audience; the PostgreSQL list took two pages.
    assert {r["authorization"] for r in arm.requests} == {f"Bearer {TOKEN}"}
    assert set(credential.scopes) == {"https://management.azure.com/.default"}
    assert [r["query"].get("$skiptoken") for r in arm.requests if "DBforPostgreSQL" in r["path"]] == [None, ["2"]]
    log = await audit(store)
    assert len(log) == 5 and {(a.actor, a.action) for a in log} == {("discovery:azure", "instance.discovered")}
    again = await discover(store, arm)
    assert (again.added, again.changed, again.gone, sorted(again.unchanged)) == ([], [], [], FLEET)
    assert len(await audit(store)) == 5


async def test_vanished_server_is_gone_with_findings_resolved_pinned_kept_then_revived(store, arm):
    make_fleet(arm)
    await discover(store, arm)
    async with store.sessions() as s, s.begin():
        mysql = (await s.execute(select(Instance).where(Instance.name == "shop-mysql"))).scalar_one()
        mysql.dbname, mysql.pinned = "shop", {"dbname": True}
    await open_finding(store, "orders-pg-ro")
    pg_servers = arm.resources[f"{SUB}|microsoft.dbforpostgresql/flexibleservers"]
    replica = next(r for r in pg_servers if r["name"] == "orders-pg-ro")
    arm.remove("orders-pg-ro")
    arm.resources[f"{SUB}|microsoft.dbformysql/flexibleservers"][0]["tags"]["team"] = "web"
    diff = await discover(store, arm)
    assert [c.name for c in diff.gone] == ["orders-pg-ro"]
    assert [(c.name, c.fields) for c in diff.changed] == [
        ("shop-mysql", {"tags": {"from": {"env": "dev"}, "to": {"env": "dev", "team": "web"}}})]
    assert diff.pinned_kept == {"shop-mysql": ["dbname"]}
    got = await rows(store)
    assert got["orders-pg-ro"].gone_at is not None and got["shop-mysql"].dbname == "shop"
    async with store.sessions() as s:
        finding = (await s.execute(select(Finding))).scalar_one()
        outbox = list((await s.execute(select(Outbox))).scalars())
    assert (finding.state, finding.state_note) == ("resolved", "instance gone from Azure")
    assert [(o.status, o.fingerprint) for o in outbox] == [("resolved", finding.fingerprint)]
    arm.add(replica)
    back = await discover(store, arm)
    assert [(c.name, list(c.fields)) for c in back.changed] == [("orders-pg-ro", ["gone_at"])]
    assert (await rows(store))["orders-pg-ro"].gone_at is None
    actions = [(a.action, a.target) for a in await audit(store)][5:]
    assert sorted(actions[:2]) == [("instance.gone", "orders-pg-ro"), ("instance.updated", "shop-mysql")]
    assert actions[2:] == [("instance.returned", "orders-pg-ro")]


async def test_dry_run_writes_nothing(store, arm):
    make_fleet(arm)
    diff = await discover(store, arm, dry_run=True)
    assert len(diff.added) == 5 and diff.dry_run
    assert await rows(store) == {} and await audit(store) == []
    await discover(store, arm)
    await open_finding(store, "shop-mysql")
    arm.remove("shop-mysql")
    gone = await discover(store, arm, dry_run=True)
    assert [c.name for c in gone.gone] == ["shop-mysql"]
    assert (await rows(store))["shop-mysql"].gone_at is None and len(await audit(store)) == 5
    async with store.sessions() as s:
        assert (await s.execute(select(Finding.state))).scalar_one() == "open"


async def test_tag_filter_only_touches_matching_servers(store, arm):
    make_fleet(arm)
    diff = await discover(store, arm, tags_filter={"env": "prod"})
    # Azure SQL databases inherit their logical server's tags.
    assert sorted(c.name for c in diff.added) == ["billing-sql.billing", "billing-sql.billing-ro", "orders-pg",
                                                  "orders-pg-ro"]
    other = await discover(store, arm, tags_filter={"env": "dev"})
    assert [c.name for c in other.added] == ["shop-mysql"] and other.gone == []


async def test_manual_rows_for_the_same_endpoint_are_adopted_and_pinned(store, arm):
    make_fleet(arm)
    async with store.sessions() as s, s.begin():
        s.add(Instance(name="mysql-main", engine="mysql", host="SHOP-MYSQL.mysql.database.azure.com", port=3306,
                       dbname="shop", tags={"owner": "dba"}, source="manual"))
        # Same logical server, other database: only the matching database is adopted.
        s.add(Instance(name="billing-main", engine="sqlserver", host="billing-sql.database.windows.net", port=1433,
                       dbname="billing", tags={"env": "prod", "team": "fin"}, source="manual"))
    diff = await discover(store, arm)
    assert sorted(c.name for c in diff.added) == ["billing-sql.billing-ro", "orders-pg", "orders-pg-ro"]
    assert diff.pinned_kept == {"mysql-main": ["dbname", "host", "tags"]}
    got = await rows(store)
    assert got["mysql-main"].source == "azure" and got["mysql-main"].tags == {"owner": "dba"}
    assert got["billing-main"].cloud["database"] == "billing" and got["billing-main"].pinned == {}
    assert (await discover(store, arm)).added == []


@pytest.mark.parametrize("status, code, message", [
    (403, "AuthorizationFailed", (r"denied \(HTTP 403, AuthorizationFailed\): give dbfleet's identity the Reader "
                                  rf"role on subscription {SUB}")),
    (401, "InvalidAuthenticationToken", r"refused the token \(HTTP 401"),
    (500, "InternalServerError", r"failed \(HTTP 500, InternalServerError\)"),
])
async def test_refusals_are_clear_errors_and_write_nothing(store, arm, status, code, message):
    make_fleet(arm)
    arm.faults = [(status, code, {"retry-after": "0"})] * 5
    with pytest.raises(DiscoveryError, match=message):
        await discover(store, arm)
    assert await rows(store) == {}


async def test_unknown_subscription_bad_id_and_token_failure(store, arm):
    with pytest.raises(DiscoveryError, match=f"subscription {OTHER_SUB} not found .*SubscriptionNotFound"):
        await discover(store, arm, OTHER_SUB)
    with pytest.raises(DiscoveryError, match="'prod-subscription' is not an Azure subscription id"):
        await discover(store, arm, "prod-subscription")
    with pytest.raises(DiscoveryError, match="could not get an Azure token .*AADSTS7000215"):
        await discover(store, arm, credential=FakeCredential(fail=True))
    with pytest.raises(DiscoveryError, match="refused the token"):
        await discover(store, arm, credential=FakeCredential(token="stale"))


async def test_throttling_is_retried_then_reported(store, arm):
    make_fleet(arm)
    arm.faults = [(429, "TooManyRequests", {"retry-after": "0"})] * 2
    diff = await discover(store, arm)
    assert len(diff.added) == 5 and len(arm.requests) == 2 + 6  # two throttled + 6 list pages
    arm.faults, arm.fault_on = [(429, "TooManyRequests", {"retry-after": "0"})] * 5, "/databases"
    arm.requests.clear()
    with pytest.raises(DiscoveryError, match="still throttled after 5 attempts"):
        await discover(store, arm)
    assert sum("/databases" in r["path"] for r in arm.requests) == 5


async def test_a_failure_mid_listing_marks_nothing_gone(store, arm):
    make_fleet(arm)
    await discover(store, arm)
    arm.faults, arm.fault_on = [(403, "AuthorizationFailed", {})], "/databases"
    with pytest.raises(DiscoveryError, match="Azure SQL databases of billing-sql was denied"):
        await discover(store, arm)
    assert all(i.gone_at is None for i in (await rows(store)).values())


async def test_sql_server_deleted_between_listings_has_no_databases(store, arm):
    make_fleet(arm)
    await discover(store, arm)
    arm.faults, arm.fault_on = [(404, "ResourceNotFound", {})], "/databases"
    diff = await discover(store, arm)
    assert sorted(c.name for c in diff.gone) == ["billing-sql.billing", "billing-sql.billing-ro"]


async def test_next_link_to_another_host_is_refused(store, arm):
    make_fleet(arm)
    arm.foreign_next_link = True
    with pytest.raises(DiscoveryError, match="nextLink points at elsewhere.example"):
        await discover(store, arm)


def _response(status: int, headers: dict[str, str]) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("GET", "https://management.azure.com/x"))


@pytest.mark.parametrize("headers, attempt, wait", [
    ({"retry-after": "7"}, 0, 7.0),
    ({"retry-after": "3600"}, 0, azure_arm.MAX_WAIT_S),
    ({}, 0, 1.0), ({}, 3, 8.0), ({}, 9, azure_arm.MAX_WAIT_S),
    ({"retry-after": "soon"}, 1, 2.0),
])
def test_retry_wait_honours_retry_after_and_is_bounded(headers, attempt, wait):
    assert azure_arm._retry_wait(_response(429, headers), attempt) == wait


def test_retry_wait_accepts_an_http_date():
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=20), usegmt=True)
    assert 10 < azure_arm._retry_wait(_response(429, {"retry-after": later}), 0) <= 20


async def test_client_secret_comes_from_its_reference(monkeypatch):
    from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential

    monkeypatch.setenv("DBF_AZ_SECRET", "s3cret-value")
    cfg = AzureCloud(tenant_id="t", client_id="c", client_secret="env:DBF_AZ_SECRET")
    credential = await azure_arm.make_credential(cfg)
    assert isinstance(credential, ClientSecretCredential)
    await credential.close()
    monkeypatch.delenv("DBF_AZ_SECRET")
    with pytest.raises(azure_arm.ArmError, match="DBF_AZ_SECRET is not set") as e:
        await azure_arm.make_credential(cfg)
    assert "s3cret" not in str(e.value)
    with pytest.raises(azure_arm.ArmError, match="needs cloud.azure.tenant_id"):
        await azure_arm.make_credential(AzureCloud(client_secret="env:DBF_AZ_SECRET"))
    default = await azure_arm.make_credential(AzureCloud())
    assert isinstance(default, DefaultAzureCredential)
    await default.close()


def test_config_check_names_a_subscription_that_is_not_an_id():
    from app.settings import config_problems

    problems = config_problems(Settings(cloud={"azure": {"subscriptions": [SUB, "prod"]}}))
    assert any(p.startswith("cloud.azure.subscriptions") and "'prod' is not a subscription id" in p for p in problems)


def test_plain_http_endpoint_is_refused_unless_loopback():
    with pytest.raises(azure_arm.ArmError, match="must be https"):
        azure_arm.ArmReader(FakeCredential(), "http://management.example.com")


async def test_discovery_job_runs_each_configured_subscription(store, arm, monkeypatch):
    make_fleet(arm)
    credential = FakeCredential()

    async def fake_credential(cfg):  # Azure AD cannot run here; the token shape is all ARM sees
        return credential

    monkeypatch.setattr(discovery_azure, "make_credential", fake_credential)
    settings = Settings(cloud={"azure": {"subscriptions": [OTHER_SUB, SUB], "tags": {"env": "dev"},
                                         "management_endpoint": arm.url}})
    diffs = await discovery_job_azure(store, settings)
    assert [(d.where, [c.name for c in d.added]) for d in diffs] == [(SUB, ["shop-mysql"])]
    assert list(await rows(store)) == ["shop-mysql"] and credential.closed


def test_scheduler_adds_discovery_jobs_for_configured_clouds():
    from app.scheduler import _extra_jobs

    assert _extra_jobs(None, Settings()) == []
    jobs = _extra_jobs(None, Settings(cloud={"aws": {"regions": ["eu-west-1"]},
                                             "azure": {"subscriptions": [SUB], "interval_s": 900}}))
    assert [(j["id"], j["seconds"], j["func"].__name__) for j in jobs] == [
        ("discover:aws", 3600, "discovery_job"), ("discover:azure", 900, "discovery_job_azure")]


def test_cli_dry_run_shows_the_diff_then_applies_it(store, arm, monkeypatch):
    from typer.testing import CliRunner

    from app.cli import cli
    from app.settings import get_settings

    make_fleet(arm)

    async def fake_credential(cfg):
        return FakeCredential()

    monkeypatch.setattr(discovery_azure, "make_credential", fake_credential)
    monkeypatch.setenv("DBFLEET_DATABASE_URL", store.url)
    monkeypatch.setenv("DBFLEET_CLOUD__AZURE__MANAGEMENT_ENDPOINT", arm.url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        dry = runner.invoke(cli, ["discover", "azure", "--subscription", SUB, "--tag", "env=dev", "--dry-run",
                                  "--json"])
        assert dry.exit_code == 0, dry.output
        diff = json.loads(dry.stdout)[0]
        assert [c["name"] for c in diff["added"]] == ["shop-mysql"]
        assert diff["subscription"] == SUB.lower() and "/providers/Microsoft.DBforMySQL/" in diff["added"][0]["resource_id"]
        assert asyncio.run(_count(store.url)) == 0
        real = runner.invoke(cli, ["discover", "azure", "--subscription", SUB, "--subscription", OTHER_SUB,
                                   "--tag", "env=dev"])
        assert real.exit_code == 1, real.output
        assert "1 new" in real.stdout and "shop-mysql" in real.stdout and f"{OTHER_SUB} not found" in real.output
        assert asyncio.run(_count(store.url)) == 1
        none = runner.invoke(cli, ["discover", "azure"])
        assert none.exit_code == 2 and "no subscription" in none.output
    finally:
        get_settings.cache_clear()


async def _count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("select count(*) from instances")
    finally:
        await conn.close()


async def test_discovered_identity_feeds_the_azure_metrics_target(store, arm):
    from app.inventory.cloud_settings import targets_for_cloud

    make_fleet(arm)
    await discover(store, arm)
    inst = (await rows(store))["billing-sql.billing"]
    [target] = await targets_for_cloud(inst.name, inst.cloud, Settings())
    assert (target.name, target.engine, target.options["resource_id"]) == (
        "billing-sql.billing@azure", "azure", inst.cloud["resource_id"])
