"""CloudWatch: alert counts by severity via PutMetricData, alert events as JSON via PutLogEvents.

boto3 is blocking, so calls run in a thread. Retries are ours (backoff with jitter in the
pipeline), so botocore's own retry is turned off.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any, Literal

from pydantic import Field

from app.alerting.notification import Notification
from app.alerting.sinks.base import ExtraMissing, PermanentError, RetryableError, SinkConfig, SinkError

METRICS_PER_CALL = 500  # PutMetricData allows 1,000 items and 1 MB; half keeps us clear of both
LOG_BATCH_BYTES = 900_000  # PutLogEvents: 1,048,576 bytes including 26 bytes per event
LOG_BATCH_EVENTS = 10_000
_RETRYABLE_CODES = {"Throttling", "ThrottlingException", "ServiceUnavailable", "InternalFailure",
                    "RequestLimitExceeded", "ServiceUnavailableException"}


class CloudWatchConfig(SinkConfig):
    type: Literal["cloudwatch"]
    region: str = "us-east-1"
    namespace: str = "dbfleet"
    log_group: str = "/dbfleet/alerts"
    log_stream: str = "alerts"
    create_log_group: bool = True  # ignored quietly when the role may not create it
    endpoint_url: str | None = None  # a VPC endpoint, or a local test server
    dimensions: dict[str, str] = Field(default_factory=dict)
    fleet_gauges: bool = True  # also put replication lag and open findings every minute


def metric_data(n: Notification, extra: dict[str, str]) -> list[dict[str, Any]]:
    counts = Counter((a["labels"].get("severity", "info"), a["status"]) for a in n.alerts)
    return [{"MetricName": "AlertNotifications", "Unit": "Count", "Value": float(count),
             "Dimensions": [{"Name": "Severity", "Value": sev}, {"Name": "Status", "Value": status},
                            *({"Name": k, "Value": v} for k, v in extra.items())]}
            for (sev, status), count in sorted(counts.items())]


def log_events(n: Notification) -> list[dict[str, Any]]:
    now_ms = int(time.time() * 1000)
    return [{"timestamp": now_ms, "message": json.dumps({
        "receiver": n.receiver, "groupKey": n.group_key, "dedupKey": n.dedup_key, "kind": n.kind,
        "status": a["status"], "fingerprint": a["fingerprint"], "labels": a["labels"],
        "annotations": a["annotations"], "startsAt": a["starts_at"], "endsAt": a.get("ends_at")})}
        for a in n.alerts]


def _log_batches(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    batches: list[list[dict[str, Any]]] = [[]]
    size = 0
    for e in events:
        cost = len(e["message"].encode()) + 26
        if batches[-1] and (size + cost > LOG_BATCH_BYTES or len(batches[-1]) >= LOG_BATCH_EVENTS):
            batches.append([])
            size = 0
        batches[-1].append(e)
        size += cost
    return [b for b in batches if b]


def import_boto3(config: CloudWatchConfig) -> Any:
    """boto3, from the aws extra; imported on first use, since most workers never need it."""
    try:
        import boto3
        import botocore.config
        import botocore.exceptions  # noqa: F401  (_classify reads them)
    except ImportError:
        raise ExtraMissing(config, "aws") from None
    return boto3


class CloudWatchSink:
    def __init__(self, config: CloudWatchConfig):
        self.config = config
        self._clients: tuple[Any, Any] | None = None
        self._stream_ready = False

    def _boto(self) -> tuple[Any, Any]:
        if self._clients is None:
            boto3 = import_boto3(self.config)
            from botocore.config import Config

            cfg = Config(retries={"max_attempts": 1, "mode": "standard"},
                         connect_timeout=self.config.timeout_s, read_timeout=self.config.timeout_s)
            kw = {"region_name": self.config.region, "endpoint_url": self.config.endpoint_url, "config": cfg}
            self._clients = (boto3.client("cloudwatch", **kw), boto3.client("logs", **kw))
        return self._clients

    def _ensure_stream(self, logs: Any) -> None:
        if self._stream_ready or not self.config.create_log_group:
            return
        for call, kw in ((logs.create_log_group, {}), (logs.create_log_stream, {"logStreamName": self.config.log_stream})):
            try:
                call(logGroupName=self.config.log_group, **kw)
            except logs.exceptions.ResourceAlreadyExistsException:
                pass
            except Exception as e:  # noqa: BLE001 - AccessDenied: the group is managed elsewhere
                if _code(e) not in ("AccessDeniedException", "AccessDenied"):
                    raise
        self._stream_ready = True

    def _send_blocking(self, n: Notification) -> None:
        cw, logs = self._boto()
        data = metric_data(n, self.config.dimensions)
        for i in range(0, len(data), METRICS_PER_CALL):
            cw.put_metric_data(Namespace=self.config.namespace, MetricData=data[i:i + METRICS_PER_CALL])
        self._ensure_stream(logs)
        for batch in _log_batches(log_events(n)):
            logs.put_log_events(logGroupName=self.config.log_group, logStreamName=self.config.log_stream,
                                logEvents=batch)

    def put_gauges(self, gauges: list[tuple[str, dict[str, str], float]]) -> None:
        """Fleet gauges (replication lag, open findings) with dimensions; blocking, call in a thread."""
        cw, _ = self._boto()
        data = [{"MetricName": name, "Value": float(value), "Unit": "None",
                 "Dimensions": [{"Name": k, "Value": str(v)} for k, v in {**dims, **self.config.dimensions}.items()]}
                for name, dims, value in gauges]
        for i in range(0, len(data), METRICS_PER_CALL):
            cw.put_metric_data(Namespace=self.config.namespace, MetricData=data[i:i + METRICS_PER_CALL])

    async def send(self, n: Notification) -> None:
        try:
            await asyncio.to_thread(self._send_blocking, n)
        except SinkError:
            raise
        except Exception as e:  # noqa: BLE001 - classified below; botocore has many exception types
            raise _classify(e, f"cloudwatch {self.config.name}") from None

    async def aclose(self) -> None:
        self._clients = None


def _code(e: Exception) -> str:
    return getattr(e, "response", {}).get("Error", {}).get("Code", "") if hasattr(e, "response") else ""


def _classify(e: Exception, what: str) -> Exception:
    from botocore.exceptions import ClientError, NoCredentialsError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(e, NoCredentialsError):
        return PermanentError(f"{what}: no AWS credentials in the standard chain")
    if isinstance(e, ClientError):
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = f"{what}: {_code(e)} (HTTP {status})"
        return RetryableError(message) if _code(e) in _RETRYABLE_CODES or status >= 500 else PermanentError(message)
    if isinstance(e, BotoConnectionError):
        return RetryableError(f"{what}: {type(e).__name__}")
    return RetryableError(f"{what}: {type(e).__name__}")
