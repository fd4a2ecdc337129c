"""Prometheus metrics (bounded cardinality: no query ids or SQL text in labels) and logging."""

from __future__ import annotations

import json
import logging
import sys

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

INSTANCES = Gauge("dbfleet_instances", "Instances in the inventory", ["engine"], registry=REGISTRY)
INSTANCE_UP = Gauge("dbfleet_instance_up", "1 if the last connection attempt succeeded",
                    ["instance", "engine"], registry=REGISTRY)
REPLICATION_LAG = Gauge("dbfleet_replication_lag_seconds", "Replication lag per standby/replica",
                        ["instance", "standby"], registry=REGISTRY)
FINDINGS_OPEN = Gauge("dbfleet_findings_open", "Open (not resolved) findings", ["severity", "check"],
                      registry=REGISTRY)
RUN_DURATION = Histogram("dbfleet_collector_run_duration_seconds", "One collector run on one instance",
                         ["collector"], registry=REGISTRY,
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
RUNS = Counter("dbfleet_collector_runs", "Collector runs by outcome (ok, error, timeout, skipped)",
               ["collector", "status"], registry=REGISTRY)
SWEEP_DURATION = Histogram("dbfleet_sweep_duration_seconds", "One sweep of a collector over the shard",
                           ["collector"], registry=REGISTRY,
                           buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
OUTBOX_PENDING = Gauge("dbfleet_outbox_pending", "Alert state changes not yet dispatched", registry=REGISTRY)
NOTIFICATIONS = Counter("dbfleet_notifications", "Notifications by receiver and outcome",
                        ["receiver", "status"], registry=REGISTRY)
NOTIFICATION_FAILURES = Counter("dbfleet_notification_failures", "Failed notification attempts",
                                ["receiver"], registry=REGISTRY)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {"ts": self.formatTime(record), "level": record.levelname, "logger": record.name,
                "msg": record.getMessage()}
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


def setup_logging(level: str = "INFO", json_logs: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if json_logs else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Wire traces that print credentials at DEBUG: botocore the signed request headers (the AWS
    # access key id), httpcore the response headers (cookies). Never below INFO, never above root.
    for name in WIRE_TRACES:
        logging.getLogger(name).setLevel(max(root.level, logging.INFO))


WIRE_TRACES = ("botocore", "boto3", "urllib3", "httpcore", "azure.core.pipeline.policies.http_logging_policy")
