"""CloudWatch metrics and Logs through moto's server on loopback, read back with the AWS API."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from alerting_helpers import alert, ensure_samples_partition

from app.alerting.sinks import PermanentError, RetryableError
from app.alerting.sinks.cloudwatch import CloudWatchConfig, CloudWatchSink


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(k, v)


def config(url: str, **kw) -> CloudWatchConfig:
    return CloudWatchConfig(type="cloudwatch", name="cw", region="eu-west-1", endpoint_url=url,
                            namespace="dbfleet/test", log_group="/dbfleet/alerts-test", **kw)


async def test_metrics_and_log_events_arrive(moto_url, aws_env, make_notification):
    sink = CloudWatchSink(config(moto_url, dimensions={"Fleet": "eu"}))
    alerts = [alert("a1"), alert("a2"), alert("w1", severity="warning", alertname="bloat")]
    await sink.send(make_notification("firing", alerts=alerts, receiver="cw"))

    cw = boto3.client("cloudwatch", region_name="eu-west-1", endpoint_url=moto_url)
    now = datetime.now(timezone.utc)

    def total(severity: str) -> float:
        data = cw.get_metric_data(StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=5),
                                  MetricDataQueries=[{"Id": "m", "ReturnData": True, "MetricStat": {
                                      "Metric": {"Namespace": "dbfleet/test", "MetricName": "AlertNotifications",
                                                 "Dimensions": [{"Name": "Severity", "Value": severity},
                                                                {"Name": "Status", "Value": "firing"},
                                                                {"Name": "Fleet", "Value": "eu"}]},
                                      "Period": 60, "Stat": "Sum"}}])
        return sum(data["MetricDataResults"][0]["Values"])

    assert (total("critical"), total("warning")) == (2.0, 1.0)
    logs = boto3.client("logs", region_name="eu-west-1", endpoint_url=moto_url)
    events = logs.get_log_events(logGroupName="/dbfleet/alerts-test", logStreamName="alerts")["events"]
    messages = [json.loads(e["message"]) for e in events]
    assert sorted(m["fingerprint"] for m in messages) == ["a1", "a2", "w1"]
    assert all(m["status"] == "firing" and m["receiver"] == "cw" for m in messages)


async def test_fleet_gauges(moto_url, aws_env):
    sink = CloudWatchSink(config(moto_url))
    sink.put_gauges([("ReplicationLagSeconds", {"Instance": "db1", "Standby": "s1"}, 42.0),
                     ("OpenFindings", {"Severity": "critical"}, 3)])
    cw = boto3.client("cloudwatch", region_name="eu-west-1", endpoint_url=moto_url)
    names = {m["MetricName"] for m in cw.list_metrics(Namespace="dbfleet/test")["Metrics"]}
    assert {"ReplicationLagSeconds", "OpenFindings"} <= names


async def test_unreachable_endpoint_is_retryable_and_missing_group_is_permanent(moto_url, aws_env, make_notification):
    with pytest.raises(RetryableError):
        await CloudWatchSink(config(f"http://127.0.0.1:{_free_port()}", timeout_s=1)).send(make_notification())
    with pytest.raises(PermanentError, match="ResourceNotFound"):
        sink = CloudWatchSink(config(moto_url, create_log_group=False).model_copy(update={"log_group": "/nope"}))
        await sink.send(make_notification())


async def test_dispatcher_exports_fleet_gauges_from_the_store(moto_url, aws_env, store):
    import json as _json

    from app.alerting.gauges import export_fleet_gauges

    now = datetime.now(timezone.utc)
    async with store.raw() as conn:
        await conn.execute("insert into instances (id, name, engine, host, port, dbname, \"user\", tls_mode) "
                           "values (7, 'db7', 'postgres', 'h', 5432, 'postgres', 'u', 'prefer')")
        await ensure_samples_partition(conn)
        await conn.executemany("insert into samples (ts, instance_id, collector, metric, object, value) "
                               "values ($1, 7, 'replication', 'replication_lag_seconds', 'standby7', $2)",
                               [(now - timedelta(minutes=2), 10.0), (now - timedelta(minutes=1), 55.0)])
        await conn.execute("insert into findings (fingerprint, instance_id, collector, \"check\", object, severity, "
                           "state, title, details, recommendation, first_seen, last_seen, opened_at) values "
                           "('f1', 7, 'health', 'x', 'o', 'critical', 'open', 't', $1::jsonb, '', now(), now(), now())",
                           _json.dumps({}))
        sink = CloudWatchSink(config(moto_url).model_copy(update={"namespace": "dbfleet/gauges"}))
        assert await export_fleet_gauges(conn, [sink], now) == 4
    cw = boto3.client("cloudwatch", region_name="eu-west-1", endpoint_url=moto_url)
    data = cw.get_metric_data(StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=5),
                              MetricDataQueries=[{"Id": "lag", "ReturnData": True, "MetricStat": {
                                  "Metric": {"Namespace": "dbfleet/gauges", "MetricName": "ReplicationLagSeconds",
                                             "Dimensions": [{"Name": "Instance", "Value": "db7"},
                                                            {"Name": "Standby", "Value": "standby7"}]},
                                  "Period": 60, "Stat": "Maximum"}}])
    assert data["MetricDataResults"][0]["Values"] == [55.0]  # the latest sample, not the older one
