"""Slack incoming webhook: a block message with what, where, how bad, what to do."""

from __future__ import annotations

import os

import pytest
from alerting_helpers import alert

from app.alerting.sinks import RetryableError
from app.alerting.sinks.slack import SlackConfig, SlackSink

HOOK_PATH = "/services/T0000000/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX"


def slack_check(req) -> str | None:
    """Slack answers 400 invalid_blocks for these (api.slack.com/reference/block-kit)."""
    if req.path != HOOK_PATH:
        return "no_service"
    body = req.json
    if not body.get("text") or len(body.get("blocks", [])) > 50:
        return "invalid_payload"
    for b in body["blocks"]:
        if b["type"] == "header" and (b["text"]["type"] != "plain_text" or len(b["text"]["text"]) > 150):
            return "invalid_blocks: header"
        if b["type"] == "section" and (len(b.get("fields", [])) > 10
                                       or any(len(f["text"]) > 2000 for f in b.get("fields", []))):
            return "invalid_blocks: section"
    return None


@pytest.fixture
def peer_and_sink(receiver_factory):
    peer = receiver_factory(check=slack_check)
    os.environ["DBF_AL_SLACK_URL"] = peer.url + HOOK_PATH
    return peer, SlackSink(SlackConfig(type="slack", name="chat", webhook_url_ref="env:DBF_AL_SLACK_URL"))


async def test_block_message_says_what_where_how_bad_and_what_to_do(peer_and_sink, make_notification):
    peer, sink = peer_and_sink
    await sink.send(make_notification("firing", alerts=[alert(f"a{i}") for i in range(14)]))
    assert peer.errors == []
    body = peer.accepted[0].json
    section = next(b for b in body["blocks"] if b["type"] == "section")
    text = " ".join(f["text"] for f in section["fields"])
    for word in ("*What*", "*Where*", "*How bad*", "*What to do*", "db1 standby1", "critical", "pausing bulk"):
        assert word in text
    assert body["blocks"][-1]["elements"][0]["text"] == "and 4 more"


async def test_errors_never_show_the_webhook_url(peer_and_sink, make_notification):
    peer, sink = peer_and_sink
    peer.default = 500
    peer.check = None
    with pytest.raises(RetryableError) as e:
        await sink.send(make_notification())
    assert "XXXXXXXXXXXX" not in str(e.value) and "HTTP 500" in str(e.value)
