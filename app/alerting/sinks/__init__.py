"""Sinks: one file each with a pydantic config (discriminated on `type`) and `async send()` that
raises RetryableError or PermanentError. A dict registry, no plugin machinery.

May import app.alerting.notification and app.inventory.credentials; nothing else from app.
"""

from __future__ import annotations

from typing import Any

from app.alerting.sinks.azure_monitor import AzureMonitorConfig, AzureMonitorSink
from app.alerting.sinks.base import PermanentError, RetryableError, Sink, SinkError
from app.alerting.sinks.cloudwatch import CloudWatchConfig, CloudWatchSink
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


def build_sink(config: Any) -> Sink:
    return SINKS[config.type](config)


__all__ = ["SINKS", "ReceiverConfig", "build_sink", "Sink", "SinkError", "RetryableError", "PermanentError"]
