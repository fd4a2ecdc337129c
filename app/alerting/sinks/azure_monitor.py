"""Azure Monitor: alert events uploaded to a Data Collection Rule stream (Logs Ingestion API)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from app.alerting.notification import Notification
from app.alerting.sinks.base import ExtraMissing, PermanentError, RetryableError, SinkConfig, secret


class AzureMonitorConfig(SinkConfig):
    type: Literal["azure_monitor"]
    endpoint: str  # the data collection endpoint (or DCR ingestion endpoint)
    rule_id: str  # the DCR immutable id, dcr-...
    stream_name: str  # Custom-DbfleetAlerts_CL
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret_ref: str | None = None  # with tenant/client id; otherwise DefaultAzureCredential
    allow_http: bool = False  # tests only: the SDK refuses a bearer token over http


def records(n: Notification) -> list[dict[str, Any]]:
    return [{"TimeGenerated": a.get("ends_at") if a["status"] == "resolved" and a.get("ends_at") else a["starts_at"],
             "Receiver": n.receiver, "GroupKey": n.group_key, "DedupKey": n.dedup_key, "Kind": n.kind,
             "Status": a["status"], "Fingerprint": a["fingerprint"], "AlertName": a["labels"].get("alertname", ""),
             "Severity": a["labels"].get("severity", ""), "Instance": a["labels"].get("instance", ""),
             "Labels": a["labels"], "Annotations": a["annotations"], "StartsAt": a["starts_at"],
             "EndsAt": a.get("ends_at")} for a in n.alerts]


def import_ingestion(config: AzureMonitorConfig) -> Any:
    """LogsIngestionClient, from the azure extra; imported on first use: most workers never need it."""
    try:
        import azure.core.exceptions  # noqa: F401  (_classify reads them)
        import azure.identity  # noqa: F401
        from azure.monitor.ingestion import LogsIngestionClient
    except ImportError:
        raise ExtraMissing(config, "azure") from None
    return LogsIngestionClient


class AzureMonitorSink:
    def __init__(self, config: AzureMonitorConfig, credential: Any = None):
        self.config = config
        self._credential = credential  # tests pass a loopback token credential
        self._client: Any = None

    async def _ensure_client(self) -> Any:
        if self._client is not None:
            return self._client
        ingestion_client = import_ingestion(self.config)
        credential = self._credential
        if credential is None:
            from azure.identity import ClientSecretCredential, DefaultAzureCredential

            if self.config.client_secret_ref:
                value = await secret(self.config.client_secret_ref, f"azure_monitor {self.config.name}")
                credential = ClientSecretCredential(self.config.tenant_id, self.config.client_id, value)
            else:
                credential = DefaultAzureCredential()
        # retry_total=0: our pipeline retries with backoff and jitter; no stacked retries.
        self._client = ingestion_client(self.config.endpoint, credential, retry_total=0,
                                        connection_timeout=self.config.timeout_s,
                                        read_timeout=self.config.timeout_s)
        return self._client

    async def send(self, n: Notification) -> None:
        if not self.config.endpoint.startswith("https://") and not self.config.allow_http:
            raise PermanentError(f"azure_monitor {self.config.name}: the endpoint must be https "
                                 "(a bearer token is never sent in clear)")
        client = await self._ensure_client()
        extra = {"enforce_https": False} if self.config.allow_http else {}
        try:
            await asyncio.to_thread(client.upload, self.config.rule_id, self.config.stream_name, records(n), **extra)
        except Exception as e:  # noqa: BLE001 - azure-core raises several families; classified here
            raise _classify(e, f"azure_monitor {self.config.name}") from None

    async def aclose(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _classify(e: Exception, what: str) -> Exception:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    status = getattr(e, "status_code", None) or 0
    if isinstance(e, ClientAuthenticationError) and status not in (0, 429) and status < 500:
        return PermanentError(f"{what}: authentication failed (HTTP {status})")
    if isinstance(e, HttpResponseError) and status:
        message = f"{what}: HTTP {status}"
        return RetryableError(message) if status in (408, 429) or status >= 500 else PermanentError(message)
    if isinstance(e, ServiceRequestError):
        return RetryableError(f"{what}: cannot reach the endpoint ({type(e).__name__})")
    return RetryableError(f"{what}: {type(e).__name__}")
