"""Engine families "aws" and "azure": a cloud monitoring API seen through the Connection contract.

A cloud collector is not SQL: its spec has a `run(conn, ctx)` hook that asks the cloud for
metrics or logs. The adapter's connection carries the instance's cloud identity (taken from
Target.options, i.e. the inventory's `cloud` column) and the API plumbing, so the runner and the
pool treat a cloud target like any other and need no special case. `fetch` is never used.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from collectors.cloud.batching import Coalescer
from collectors.cloud.clients import AWS_INSTALLED, CloudApiError, ExtraMissing, aws_client, check_region, explain
from collectors.engines.base import ConnectFailed, DriverUnavailable, SessionLimits, Target, register_adapter

GET_METRIC_DATA_MAX = 500  # queries per GetMetricData call (CloudWatch API limit)
_ARN = re.compile(r"^arn:aws[\w-]*:rds:(?P<region>[a-z0-9-]+):\d+:(?P<kind>db|cluster):(?P<id>[A-Za-z0-9-]+)$")
_query_ids = itertools.count(1)


class CloudIdentityMissing(ConnectFailed):
    check = "cloud_identity_missing"


class CloudConnection:
    """What a cloud run hook gets: identity, and `fetch` refusing SQL."""

    server_version = 0

    def __init__(self, engine: str, identity: Mapping[str, Any]):
        self.engine = engine
        self.identity = dict(identity)
        self.is_standby = identity.get("role") == "reader"

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        raise NotImplementedError("a cloud connection answers run hooks, not SQL")

    async def close(self) -> None:
        return None


# --- AWS ---------------------------------------------------------------------------------------

def _get_metric_data(client: Any, queries: list[dict], start: datetime, end: datetime) -> dict[str, list]:
    out: dict[str, list] = {}
    pages = client.get_paginator("get_metric_data").paginate(
        MetricDataQueries=queries, StartTime=start, EndTime=end, ScanBy="TimestampAscending")
    for page in pages:
        for r in page["MetricDataResults"]:
            out.setdefault(r["Id"], []).extend(zip(r["Timestamps"], r["Values"]))
    return out


async def _flush_cloudwatch(key: tuple, queries: list[dict]) -> dict[str, list]:
    region, endpoint_url, start, end = key
    client = aws_client("cloudwatch", region, endpoint_url)
    try:
        return await asyncio.to_thread(_get_metric_data, client, queries, start, end)
    except Exception as e:  # noqa: BLE001 - turned into one readable error for every submitter
        raise explain(e, "CloudWatch GetMetricData", region, "cloudwatch:GetMetricData") from None


CLOUDWATCH = Coalescer(_flush_cloudwatch, GET_METRIC_DATA_MAX, item_key=lambda q: q["Id"])


class AwsConnection(CloudConnection):
    def __init__(self, identity: Mapping[str, Any], region: str, db_instance_id: str,
                 endpoint_url: str | None):
        super().__init__("aws", identity)
        self.region = region
        self.db_instance_id = db_instance_id
        self.endpoint_url = endpoint_url

    async def metric_data(self, queries: Sequence[Mapping[str, Any]], start: datetime,
                          end: datetime) -> dict[str, list[tuple[datetime, float]]]:
        """GetMetricData for `queries` (MetricStat dicts keyed by our label), coalesced per region."""
        labelled = {f"q{next(_query_ids)}": (label, q) for label, q in queries}
        sent = [{"Id": qid, "MetricStat": q, "ReturnData": True} for qid, (_, q) in labelled.items()]
        got = await CLOUDWATCH.submit((self.region, self.endpoint_url, start, end), sent)
        return {labelled[qid][0]: points or [] for qid, points in got.items()}


def aws_identity(options: Mapping[str, Any]) -> tuple[str, str] | None:
    """(region, DB instance identifier) from the inventory's cloud identity, None if it has none."""
    match = _ARN.match(str(options.get("arn", "")))
    if not match or match["kind"] != "db":
        return None
    return options.get("region") or match["region"], match["id"]


async def connect_aws(target: Target, limits: SessionLimits) -> AwsConnection:
    if not AWS_INSTALLED:
        raise DriverUnavailable(target, str(ExtraMissing("aws", "CloudWatch metrics")))
    ident = aws_identity(target.options)
    if ident is None:
        raise CloudIdentityMissing(target, "no RDS instance ARN in the inventory's cloud identity")
    region, db_id = ident
    endpoint_url = target.options.get("endpoint_url")
    try:
        check_region(region, endpoint_url)
    except CloudApiError as e:
        raise CloudIdentityMissing(target, str(e)) from None
    return AwsConnection(target.options, region, db_id, endpoint_url)


register_adapter("aws", connect_aws)
