"""azure_metrics: the transform on recorded points, then query_resources against a loopback
Azure Monitor that answers metrics:getBatch."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from collectors.cloud import azure_metrics
from collectors.cloud.adapter import CloudIdentityMissing
from collectors.cloud.azure_api import parse_resource_id
from collectors.cloud.clients import CloudApiError
from collectors.engines.base import Target, connect
from collectors.runner import run_collector
from collectors.spec import Context, Severity
from tests.collectors.spec_context import spec_context

SUB = "0b1f6471-1bf0-4dda-aec3-111122223333"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def pg_rid(name: str, sub: str = SUB) -> str:
    return f"/subscriptions/{sub}/resourceGroups/rg-db/providers/Microsoft.DBforPostgreSQL/flexibleServers/{name}"


def rows(metric: str, values: list[float], end: datetime = NOW) -> list[dict]:
    n = len(values)
    return [{"metric": metric, "ts": end - timedelta(minutes=5 * (n - i)), "average": v, "maximum": v}
            for i, v in enumerate(values)]


def ctx(rid: str, **extra) -> Context:
    c = spec_context(azure_metrics.SPEC, instance="az-pg", engine="postgres", now=NOW)
    c.extra.update({"cloud": {"resource_id": rid}, **extra})
    return c


def checks(result) -> dict[str, Severity]:
    return {f.check: f.severity for f in result.findings}


@pytest.mark.parametrize("rid, expected", [
    (pg_rid("a"), (SUB, "Microsoft.DBforPostgreSQL/flexibleServers")),
    (f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Sql/servers/s1/databases/db1",
     (SUB, "Microsoft.Sql/servers/databases")),
    ("/subscriptions/not-a-guid/resourceGroups/rg/providers/Microsoft.Sql/servers/s1", None),
    (pg_rid("a'; drop"), None),
])
def test_parse_resource_id(rid, expected):
    assert parse_resource_id(rid) == expected


def test_transform_storage_cpu_lag_on_recorded_points():
    recorded = (rows("storage_percent", [90, 91, 92]) + rows("cpu_percent", [95, 96, 97])
                + rows("physical_replication_delay_in_seconds", [2, 90]) + rows("active_connections", [40]))
    result = azure_metrics.transform(recorded, ctx(pg_rid("a")))
    assert checks(result) == {"storage_low": Severity.warning, "cpu_saturated": Severity.warning,
                              "replication_lag": Severity.warning}
    storage = next(f for f in result.findings if f.check == "storage_low")
    assert storage.details["free_pct"] == 8.0
    assert "az postgres flexible-server update --resource-group rg-db --name a" in storage.recommendation
    assert {s.metric: s.value for s in result.samples}["connections"] == 40
    assert azure_metrics.transform([], ctx(pg_rid("a"))).findings == []


def test_transform_ignores_metrics_of_another_service():
    rid = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Sql/servers/s1/databases/db1"
    result = azure_metrics.transform(rows("physical_replication_delay_in_seconds", [900]), ctx(rid))
    assert result.findings == [] and result.samples == []


def azure_target(name: str, monitor, credential, **cloud) -> Target:
    return Target(name=f"{name}@azure", engine="azure", host="westeurope", port=443,
                  options={"resource_id": pg_rid(name), "region": "westeurope", "metrics_endpoint": monitor.url,
                           "azure_credential": credential, **cloud})


async def test_run_batches_resources_of_one_subscription(azure_monitor, azure_credential):
    now = datetime.now(timezone.utc)
    for name, storage in (("az1", 50.0), ("az2", 97.0)):
        azure_monitor.metrics[(pg_rid(name).lower(), "storage_percent")] = [
            (now - timedelta(minutes=20), storage, storage), (now - timedelta(minutes=10), storage, storage)]
        azure_monitor.metrics[(pg_rid(name).lower(), "cpu_percent")] = [(now - timedelta(minutes=10), 12.5, 30.0)]

    async def one(name: str):
        conn = await connect(azure_target(name, azure_monitor, azure_credential))
        return await run_collector(azure_metrics.SPEC, conn, spec_context(azure_metrics.SPEC, instance=name, engine="postgres", now=now))

    r1, r2 = await asyncio.gather(one("az1"), one("az2"))
    batch = [r for r in azure_monitor.requests if "metrics:getBatch" in r["path"]]
    assert len(batch) == 1
    assert batch[0]["path"].startswith(f"/subscriptions/{SUB}/metrics:getBatch?")
    assert "metricnamespace=Microsoft.DBforPostgreSQL" in batch[0]["path"]
    assert sorted(batch[0]["body"]["resourceids"]) == sorted([pg_rid("az1"), pg_rid("az2")])
    assert batch[0]["authorization"] == "Bearer test-token"
    assert checks(r1) == {} and {s.metric: s.value for s in r1.samples}["cpu_percent"] == 12.5
    assert checks(r2) == {"storage_low": Severity.critical}


@pytest.mark.parametrize("status, message", [
    (403, r"denied \(AuthorizationFailed\): give dbfleet's identity the Monitoring Reader role"),
    (429, r"still throttled after retries"),
])
async def test_refusals_are_clear_errors(azure_monitor, azure_credential, status, message):
    azure_monitor.fail_status = status
    conn = await connect(azure_target("az3", azure_monitor, azure_credential))
    with pytest.raises(CloudApiError, match=message):
        await run_collector(azure_metrics.SPEC, conn, spec_context(azure_metrics.SPEC, instance="az3", engine="postgres"))


async def test_https_is_required_except_on_loopback(azure_credential):
    conn = await connect(Target(name="x@azure", engine="azure", host="h", port=443, options={
        "resource_id": pg_rid("x"), "metrics_endpoint": "http://monitor.example.com", "azure_credential": azure_credential}))
    with pytest.raises(CloudApiError):
        await run_collector(azure_metrics.SPEC, conn, spec_context(azure_metrics.SPEC, instance="x", engine="postgres"))


async def test_missing_resource_id_is_refused_at_connect():
    with pytest.raises(CloudIdentityMissing, match="no Azure resource id"):
        await connect(Target(name="x@azure", engine="azure", host="h", port=443, options={"region": "westeurope"}))


async def test_client_secret_credential_is_built_once_per_identity():
    from azure.identity.aio import ClientSecretCredential

    from collectors.cloud.azure_api import _credential

    def target(secret: str) -> Target:
        return Target(name="x@azure", engine="azure", host="h", port=443, password=secret,
                      options={"resource_id": pg_rid("x"), "tenant_id": "t-1", "client_id": "c-1"})

    first = _credential(target("s3cret"))
    assert isinstance(first, ClientSecretCredential)
    assert _credential(target("s3cret")) is first and _credential(target("rotated")) is not first
    assert "s3cret" not in repr(target("s3cret"))
