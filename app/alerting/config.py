"""The `alerting:` section of dbfleet.yaml, validated with pydantic; errors carry their path.

    alerting:
      route:                                  # Alertmanager semantics; children inherit options
        receiver: ops
        group_by: [alertname, instance]       # ["..."] = every label; omitted = one group per route
        group_wait: 30s
        group_interval: 5m
        repeat_interval: 4h
        routes:
          - matchers: ['severity="critical"']
            receiver: pager
            continue: true                    # also try the next siblings
          - matchers: ['team=~"payments|billing"', 'env!=dev']
            receiver: payments
            mute_time_intervals: [weekend-maintenance]
      receivers:                              # secrets by reference: env:VAR, file:/path, aws-sm:...
        - {type: pagerduty, name: pager, routing_key_ref: "env:PD_ROUTING_KEY"}
        - {type: slack, name: payments, webhook_url_ref: "env:SLACK_PAYMENTS_URL", send_resolved: false}
        - {type: webhook, name: ops, url: "https://hooks.example.com/dbfleet", hmac_secret_ref: "env:HOOK_KEY"}
        - {type: opsgenie, name: og, api_key_ref: "env:OPSGENIE_KEY"}
        - {type: cloudwatch, name: cw, region: eu-west-1, namespace: dbfleet, log_group: /dbfleet/alerts}
        - {type: azure_monitor, name: az, endpoint: "https://dce.ingest.monitor.azure.com",
           rule_id: dcr-0123, stream_name: Custom-DbfleetAlerts_CL}
      inhibit_rules:
        - source_matchers: [alertname=instance_unreachable]
          target_matchers: [alertname!=instance_unreachable]
          equal: [instance]
      time_intervals:
        - name: weekend-maintenance
          time_intervals: [{weekdays: [saturday], times: [{start_time: "02:00", end_time: "06:00"}],
                            location: Europe/Berlin}]
      silence_reminder: {after: 4h, repeat: 24h, severities: [critical]}
      rules:                                  # threshold rules over the samples table
        - {name: replication_lag_high, metric: replication_lag_seconds, op: ">", threshold: 300, for: 5m,
           severity: critical}
      runbook_urls: {replication_lag: "https://wiki.example.com/runbooks/replication-lag"}
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from app.alerting.matchers import parse_matcher
from app.alerting.sinks import ReceiverConfig, missing_extra
from app.alerting.timeintervals import NamedTimeInterval

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")


def parse_duration(value: Any) -> timedelta:
    """Prometheus-style durations: 30s, 5m, 4h, 1d, 1h30m; a number is seconds."""
    if isinstance(value, timedelta):
        return value
    try:
        if isinstance(value, (int, float)):
            return timedelta(seconds=value)
        m = _DURATION.match(str(value).strip())
        if not m or not any(m.groups()):
            raise ValueError(f"{value!r} is not a duration like 30s, 5m, 4h or 1d")
        d, h, mi, s, ms = (int(x or 0) for x in m.groups())
        return timedelta(days=d, hours=h, minutes=mi, seconds=s, milliseconds=ms)
    except OverflowError:
        # pydantic reports only ValueError as a field error; this would be a traceback.
        raise ValueError("too long for a duration (at most 999999999 days)") from None


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _check_matchers(v: list[str]) -> list[str]:
    for text in v:
        parse_matcher(text)
    return v


Matchers = Annotated[list[str], BeforeValidator(lambda v: v or []), Field(default_factory=list)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RouteConfig(_Strict):
    receiver: str | None = None
    matchers: Matchers
    continue_: bool = Field(False, alias="continue")
    group_by: list[str] | None = None  # ["..."] groups by every label
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    mute_time_intervals: list[str] = Field(default_factory=list)
    active_time_intervals: list[str] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)

    _matchers = field_validator("matchers")(_check_matchers)


class InhibitRule(_Strict):
    source_matchers: Matchers
    target_matchers: Matchers
    equal: list[str] = Field(default_factory=list)

    _m = field_validator("source_matchers", "target_matchers")(_check_matchers)


class SilenceReminder(_Strict):
    """Remind when a silence has hidden a firing alert of these severities for longer than `after`."""

    after: Duration = timedelta(hours=4)
    repeat: Duration = timedelta(hours=24)
    severities: list[str] = Field(default_factory=lambda: ["critical"])
    receiver: str | None = None  # default: the receivers the hidden alert routes to


class RetryConfig(_Strict):
    initial: Duration = timedelta(seconds=1)
    max_backoff: Duration = timedelta(minutes=5)
    give_up_after: Duration = timedelta(hours=1)  # then the notification is recorded as failed


class ThresholdRule(_Strict):
    """An alert from samples: `metric op threshold` true for `for_` (e.g. lag > 300 for 5m)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    metric: str
    op: Literal[">", ">=", "<", "<="] = ">"
    threshold: float
    for_: Duration = Field(timedelta(minutes=5), alias="for")
    severity: Literal["info", "warning", "critical"] = "warning"
    summary: str = ""
    recommendation: str = ""


class AlertingConfig(_Strict):
    route: RouteConfig = Field(default_factory=lambda: RouteConfig(receiver="null"))
    receivers: list[Annotated[ReceiverConfig, Field(discriminator="type")]] = Field(default_factory=list)
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)
    time_intervals: list[NamedTimeInterval] = Field(default_factory=list)
    silence_reminder: SilenceReminder = Field(default_factory=SilenceReminder)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    rules: list[ThresholdRule] = Field(default_factory=list)
    runbook_urls: dict[str, str] = Field(default_factory=dict)  # check name -> runbook URL
    external_url: str = ""
    batch_size: int = Field(500, ge=1, le=10_000)
    send_concurrency: int = Field(64, ge=1, le=1000)
    poll_interval: Duration = timedelta(seconds=1)
    notification_retention: Duration = timedelta(days=7)


class ConfigError(ValueError):
    def __init__(self, errors: list[str]):
        super().__init__("invalid alerting configuration:\n" + "\n".join(errors))
        self.errors = errors


def _loc(loc: tuple[Any, ...]) -> str:
    path = "alerting"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _route_errors(route: RouteConfig, path: str, receivers: set[str], intervals: set[str],
                  root: bool = False) -> list[str]:
    errors: list[str] = []
    if root and route.matchers:
        errors.append(f"{path}.matchers: the root route must not have matchers (it catches every alert)")
    if root and not route.receiver:
        errors.append(f"{path}.receiver: the root route needs a receiver")
    if route.receiver and route.receiver not in receivers:
        errors.append(f"{path}.receiver: unknown receiver {route.receiver!r}")
    for field in ("mute_time_intervals", "active_time_intervals"):
        for i, name in enumerate(getattr(route, field)):
            if name not in intervals:
                errors.append(f"{path}.{field}[{i}]: unknown time interval {name!r}")
    for i, child in enumerate(route.routes):
        errors += _route_errors(child, f"{path}.routes[{i}]", receivers, intervals)
    return errors


def semantic_errors(cfg: AlertingConfig) -> list[str]:
    """Cross-references pydantic cannot see: names that must exist and be unique."""
    errors: list[str] = []
    names = [r.name for r in cfg.receivers]
    for i, name in enumerate(names):
        if name in names[:i]:
            errors.append(f"alerting.receivers[{i}].name: duplicate receiver {name!r}")
    receivers = set(names) | {"null"}  # "null" drops alerts on purpose, as in Alertmanager setups
    tnames = [t.name for t in cfg.time_intervals]
    for i, name in enumerate(tnames):
        if name in tnames[:i]:
            errors.append(f"alerting.time_intervals[{i}].name: duplicate time interval {name!r}")
    errors += _route_errors(cfg.route, "alerting.route", receivers, set(tnames), root=True)
    if cfg.silence_reminder.receiver and cfg.silence_reminder.receiver not in receivers:
        errors.append(f"alerting.silence_reminder.receiver: unknown receiver {cfg.silence_reminder.receiver!r}")
    rnames = [r.name for r in cfg.rules]
    for i, name in enumerate(rnames):
        if name in rnames[:i]:
            errors.append(f"alerting.rules[{i}].name: duplicate rule {name!r}")
    return errors


def extra_errors(cfg: AlertingConfig) -> list[str]:
    """Receivers this install cannot send to: a worker must refuse them at start, not drop alerts."""
    return [f"alerting.receivers[{i}]: {e}" for i, r in enumerate(cfg.receivers) if (e := missing_extra(r))]


def check_config(raw: dict[str, Any] | None) -> list[str]:
    """Every error in the section, each prefixed with its path; empty when valid."""
    try:
        cfg = AlertingConfig.model_validate(raw or {})
    except ValidationError as e:
        return [f"{_loc(err['loc'])}: {err['msg']}" for err in e.errors()]
    return semantic_errors(cfg) + extra_errors(cfg)


def load_config(raw: dict[str, Any] | None) -> AlertingConfig:
    errors = check_config(raw)
    if errors:
        raise ConfigError(errors)
    return AlertingConfig.model_validate(raw or {})


_cached: tuple[Any, AlertingConfig] | None = None


def config_for(settings: Any) -> AlertingConfig:
    """The validated config for these settings, parsed once per settings.alerting dict."""
    global _cached
    raw = settings.alerting
    if _cached is None or _cached[0] is not raw:
        _cached = (raw, load_config(raw))
    return _cached[1]
