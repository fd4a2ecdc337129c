"""Azure Monitor Logs Ingestion against a loopback peer speaking the DCR upload API."""

from __future__ import annotations

import time
from collections import deque
from urllib.parse import parse_qs, urlparse

import pytest
from azure.core.credentials import AccessToken

from app.alerting.sinks import PermanentError, RetryableError
from app.alerting.sinks.azure_monitor import AzureMonitorConfig, AzureMonitorSink

RULE, STREAM, TOKEN = "dcr-00000000000000000000000000000000", "Custom-DbfleetAlerts_CL", "loopback-token-abc"


class LoopbackCredential:
    """Hands out a fixed bearer token for the Monitor scope, as a real credential would."""

    def __init__(self):
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(TOKEN, int(time.time()) + 3600)


def ingestion_check(req) -> str | None:
    url = urlparse(req.path)
    if url.path != f"/dataCollectionRules/{RULE}/streams/{STREAM}":
        return f"unknown stream {url.path}"
    if parse_qs(url.query).get("api-version") != ["2023-01-01"]:
        return "bad api-version"
    if req.headers.get("authorization") != f"Bearer {TOKEN}":
        return "unauthorized"
    if req.headers.get("content-encoding") != "gzip":
        return "expected gzip"
    if not isinstance(req.json, list) or not all("TimeGenerated" in r for r in req.json):
        return "records need TimeGenerated"
    return None


@pytest.fixture
def peer_and_sink(receiver_factory):
    peer = receiver_factory(default=204, check=ingestion_check)
    credential = LoopbackCredential()
    sink = AzureMonitorSink(AzureMonitorConfig(type="azure_monitor", name="az", endpoint=peer.url, rule_id=RULE,
                                               stream_name=STREAM, allow_http=True), credential=credential)
    return peer, sink, credential


async def test_alert_events_are_uploaded_to_the_stream(peer_and_sink, make_notification):
    peer, sink, credential = peer_and_sink
    await sink.send(make_notification("firing", receiver="az"))
    assert peer.errors == [] and len(peer.accepted) == 1
    records = peer.accepted[0].json
    assert [r["Fingerprint"] for r in records] == ["a1", "a2"]
    assert records[0]["Severity"] == "critical" and records[0]["Instance"] == "db1"
    assert credential.scopes == [("https://monitor.azure.com//.default",)] or \
        credential.scopes[0][0].startswith("https://monitor.azure.com")


async def test_server_errors_retry_and_client_errors_do_not(peer_and_sink, make_notification):
    peer, sink, _ = peer_and_sink
    peer.script = deque([(503, 0)])
    with pytest.raises(RetryableError, match="HTTP 503"):
        await sink.send(make_notification())
    peer.script = deque([(413, 0)])
    with pytest.raises(PermanentError, match="HTTP 413"):
        await sink.send(make_notification())
    await sink.send(make_notification())
    assert len(peer.accepted) == 1


async def test_plain_http_is_refused_unless_allowed(peer_and_sink, make_notification):
    peer, sink, credential = peer_and_sink
    strict = AzureMonitorSink(sink.config.model_copy(update={"allow_http": False}), credential=credential)
    with pytest.raises(PermanentError, match="https"):
        await strict.send(make_notification())
    assert peer.requests == []
