"""The "azure" engine family: Azure Monitor metrics (batched per subscription and region) and
Log Analytics queries for one Azure database resource.

Metrics go through azure-monitor-querymetrics (`MetricsClient.query_resources`, the
metrics:getBatch API, up to 50 resources a call); logs through azure-monitor-query's
LogsQueryClient. Credentials come from azure-identity: a client secret (its value resolved by
the service from a reference and handed over as Target.password) or DefaultAzureCredential.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from collectors.cloud.adapter import CloudConnection, CloudIdentityMissing
from collectors.cloud.batching import Coalescer
from collectors.cloud.clients import CloudApiError, ExtraMissing
from collectors.engines.base import DriverUnavailable, SessionLimits, Target, register_adapter

try:  # the azure extra: without it Azure instances become driver_unavailable findings naming it
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError
    AZURE_INSTALLED = True
except ImportError:
    AZURE_INSTALLED = False

    class AzureError(Exception):  # stand-ins keep `except` and isinstance checks valid; never raised
        pass

    ClientAuthenticationError = HttpResponseError = AzureError

AZURE_BATCH_MAX = 50  # resource ids per metrics:getBatch call (Azure Monitor limit)
LOGS_ENDPOINT = "https://api.loganalytics.io"
_RESOURCE = re.compile(
    r"^/subscriptions/(?P<sub>[0-9a-fA-F-]{36})/resourceGroups/[\w.()-]+/providers/"
    r"(?P<provider>[\w.]+)/(?P<type>\w+)/[\w.-]+(?:/(?P<child>\w+)/[\w.-]+)?$")
_credentials: dict[str, Any] = {}


def parse_resource_id(resource_id: str) -> tuple[str, str] | None:
    """(subscription, metric namespace) of an Azure resource id, None if it is not one."""
    m = _RESOURCE.match(resource_id or "")
    if not m:
        return None
    namespace = f"{m['provider']}/{m['type']}" + (f"/{m['child']}" if m["child"] else "")
    return m["sub"].lower(), namespace


def _loopback_http(endpoint: str) -> bool:
    """Plain http is allowed only to a loopback test server, never to a real endpoint."""
    url = urlparse(endpoint)
    return url.scheme == "http" and url.hostname in ("127.0.0.1", "localhost", "::1")


def explain_azure(e: Exception, action: str) -> CloudApiError:
    if isinstance(e, ClientAuthenticationError):
        return CloudApiError(f"{action}: Azure authentication failed ({type(e).__name__}); check the client "
                             "id/secret or the managed identity")
    if isinstance(e, HttpResponseError):
        code = getattr(e.error, "code", None) or e.status_code
        if e.status_code == 403:
            return CloudApiError(f"{action} was denied ({code}): give dbfleet's identity the Monitoring Reader "
                                 "role (and Log Analytics Reader on the workspace)")
        if e.status_code == 429:
            return CloudApiError(f"{action} is still throttled after retries ({code}); lower the sweep "
                                 "concurrency or raise the interval")
        return CloudApiError(f"{action} failed (HTTP {e.status_code}, {code})")
    return CloudApiError(f"{action} failed: {type(e).__name__}")


def _metric_series(metric: Any) -> list[tuple[datetime, float | None, float | None]]:
    return [(d.timestamp, d.average, d.maximum) for ts in metric.timeseries for d in ts.data]


async def _flush_metrics(key: tuple, resource_ids: list[str]) -> dict[str, dict[str, list]]:
    endpoint, credential, sub, namespace, names, start, end, interval = key
    from azure.monitor.querymetrics.aio import MetricsClient

    extra = {"enforce_https": False} if _loopback_http(endpoint) else {}
    try:
        async with MetricsClient(endpoint, credential) as client:
            results = await client.query_resources(
                resource_ids=resource_ids, metric_namespace=namespace, metric_names=list(names),
                timespan=(start, end), granularity=interval, aggregations=["Average", "Maximum"], **extra)
    except AzureError as e:
        raise explain_azure(e, f"Azure Monitor metrics for subscription {sub}") from None
    out: dict[str, dict[str, list]] = {}
    for result in results:
        for metric in result.metrics:
            rid = re.split(r"/providers/microsoft\.insights/metrics/", metric.id or "", flags=re.I)[0].lower()
            out.setdefault(rid, {})[metric.name] = _metric_series(metric)
    return out


AZURE_METRICS = Coalescer(_flush_metrics, AZURE_BATCH_MAX, item_key=str.lower)


class AzureConnection(CloudConnection):
    def __init__(self, identity: Mapping[str, Any], credential: Any, metrics_endpoint: str, logs_endpoint: str):
        super().__init__("azure", identity)
        self.resource_id = identity["resource_id"]
        self.subscription, self.namespace = parse_resource_id(self.resource_id)  # type: ignore[misc]
        self.credential = credential
        self.metrics_endpoint = metrics_endpoint
        self.logs_endpoint = logs_endpoint
        self.workspace_id: str | None = identity.get("workspace_id")

    async def metrics(self, names: Sequence[str], start: datetime, end: datetime,
                      interval: timedelta) -> dict[str, list]:
        """{metric name: [(ts, average, maximum)]} for this resource, batched with its neighbours."""
        key = (self.metrics_endpoint, self.credential, self.subscription, self.namespace, tuple(names),
               start, end, interval)
        got = await AZURE_METRICS.submit(key, [self.resource_id])
        return got.get(self.resource_id.lower()) or {}

    async def logs(self, query: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Rows of a KQL query on the configured Log Analytics workspace."""
        from azure.monitor.query import LogsQueryStatus
        from azure.monitor.query.aio import LogsQueryClient

        extra = {"enforce_https": False} if _loopback_http(self.logs_endpoint) else {}
        try:
            async with LogsQueryClient(self.credential, endpoint=self.logs_endpoint) as client:
                res = await client.query_workspace(self.workspace_id, query, timespan=(start, end), **extra)
        except AzureError as e:
            raise explain_azure(e, f"Log Analytics query on workspace {self.workspace_id}") from None
        tables = res.tables if res.status == LogsQueryStatus.SUCCESS else res.partial_data
        if not tables:
            return []
        table = tables[0]
        return [dict(zip(table.columns, row)) for row in table.rows]


def _credential(target: Target) -> Any:
    """A shared credential per identity so tokens are cached across instances and sweeps."""
    opts = target.options
    if opts.get("azure_credential") is not None:
        return opts["azure_credential"]
    from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential

    if opts.get("tenant_id") and opts.get("client_id") and target.password:
        key = hashlib.sha256(f"{opts['tenant_id']}\x1f{opts['client_id']}\x1f{target.password}".encode()).hexdigest()
        if key not in _credentials:
            _credentials[key] = ClientSecretCredential(opts["tenant_id"], opts["client_id"], target.password)
        return _credentials[key]
    if "default" not in _credentials:
        _credentials["default"] = DefaultAzureCredential()
    return _credentials["default"]


async def connect_azure(target: Target, limits: SessionLimits) -> AzureConnection:
    if not AZURE_INSTALLED:
        raise DriverUnavailable(target, str(ExtraMissing("azure", "Azure Monitor metrics and logs")))
    opts = target.options
    if parse_resource_id(str(opts.get("resource_id", ""))) is None:
        raise CloudIdentityMissing(target, "no Azure resource id in the inventory's cloud identity")
    region = str(opts.get("region") or "").replace(" ", "").lower()
    metrics_endpoint = opts.get("metrics_endpoint") or (f"https://{region}.metrics.monitor.azure.com" if region else "")
    if not metrics_endpoint:
        raise CloudIdentityMissing(target, "no Azure region in the cloud identity (the metrics endpoint is regional)")
    return AzureConnection(opts, _credential(target), metrics_endpoint, opts.get("logs_endpoint") or LOGS_ENDPOINT)


register_adapter("azure", connect_azure)
