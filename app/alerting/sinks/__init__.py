"""Sinks: one file each with a pydantic config (discriminated on `type`) and `async send()` that
raises RetryableError or PermanentError. A dict registry, no plugin machinery.

May import app.alerting.notification and app.inventory.credentials; nothing else from app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.alerting.sinks.azure_monitor import AzureMonitorConfig, AzureMonitorSink, import_ingestion
from app.alerting.sinks.base import ExtraMissing, PermanentError, RetryableError, Sink, SinkError
from app.alerting.sinks.cloudwatch import CloudWatchConfig, CloudWatchSink, import_boto3
from app.alerting.sinks.opsgenie import OpsgenieConfig, OpsgenieSink
from app.alerting.sinks.pagerduty import PagerDutyConfig, PagerDutySink
from app.alerting.sinks.slack import SlackConfig, SlackSink
from app.alerting.sinks.webhook import WebhookConfig, WebhookSink

SINKS: dict[str, type] = {
    "cloudwatch": CloudWatchSink,
    "azure_monitor": AzureMonitorSink,
    "pagerduty": PagerDutySink,
    "opsgenie": OpsgenieSink,
    "slack": SlackSink,
    "webhook": WebhookSink,
}

ReceiverConfig = (CloudWatchConfig | AzureMonitorConfig | PagerDutyConfig | OpsgenieConfig | SlackConfig
                  | WebhookConfig)


# Sinks whose client library is an optional extra: type -> its import, raising ExtraMissing without it.
NEEDS_EXTRA: dict[str, Callable[[Any], Any]] = {
    "cloudwatch": import_boto3,
    "azure_monitor": import_ingestion,
}


def build_sink(config: Any) -> Sink:
    return SINKS[config.type](config)


def missing_extra(config: Any) -> ExtraMissing | None:
    """Why this install cannot send to the receiver (its sink's extra is not installed), or None."""
    try:
        NEEDS_EXTRA.get(config.type, lambda _: None)(config)
    except ExtraMissing as e:
        return e
    return None


__all__ = ["SINKS", "NEEDS_EXTRA", "ReceiverConfig", "build_sink", "missing_extra", "Sink", "SinkError",
           "RetryableError", "PermanentError", "ExtraMissing"]
