"""Opsgenie Alert API: create with alias, close by alias, priority mapped, GenieKey auth."""

from __future__ import annotations

import os
from urllib.parse import unquote

import pytest
from alerting_helpers import alert

from app.alerting.sinks import PermanentError
from app.alerting.sinks.opsgenie import OpsgenieConfig, OpsgenieSink

API_KEY = "11111111-2222-3333-4444-555555555555"


def opsgenie_check(req) -> str | None:
    if req.headers.get("authorization") != f"GenieKey {API_KEY}":
        return "unauthorized"
    if req.path == "/v2/alerts":
        body = req.json
        if not body.get("message") or len(body["message"]) > 130 or len(body.get("alias", "")) > 512:
            return "message (<=130) is required"
        if body.get("priority") not in ("P1", "P2", "P3", "P4", "P5"):
            return "bad priority"
        return None
    if req.path.startswith("/v2/alerts/") and req.path.endswith("/close?identifierType=alias"):
        return None
    if req.path.startswith("/v2/alerts/") and req.path.endswith("/acknowledge?identifierType=alias"):
        body = req.json
        return "user, source and note are at most 100/100/25000" if len(body.get("user", "")) > 100 \
            or len(body.get("source", "")) > 100 or len(body.get("note", "")) > 25000 else None
    return f"unknown path {req.path}"


@pytest.fixture
def peer_and_sink(receiver_factory):
    os.environ["DBF_AL_OG_KEY"] = API_KEY
    peer = receiver_factory(default=202, check=opsgenie_check)
    return peer, OpsgenieSink(OpsgenieConfig(type="opsgenie", name="og", api_key_ref="env:DBF_AL_OG_KEY", url=peer.url))


async def test_create_then_close_by_alias(peer_and_sink, make_notification):
    peer, sink = peer_and_sink
    firing = make_notification("firing", alerts=[alert("a1", severity="warning")])
    await sink.send(firing)
    await sink.send(make_notification("resolved"))
    assert peer.errors == []
    create, close = peer.accepted
    assert create.json["alias"] == firing.dedup_key and create.json["priority"] == "P3"
    assert unquote(close.path.split("/")[3]) == firing.dedup_key


async def test_acknowledge_by_alias_with_the_note(peer_and_sink, make_notification):
    peer, sink = peer_and_sink
    firing = make_notification("firing")
    await sink.send(firing)
    await sink.send(make_notification("firing", kind="acknowledge", note="Acknowledged in dbfleet by alice" * 1000))
    assert peer.errors == []
    ack = peer.accepted[-1]
    assert unquote(ack.path.split("/")[3]) == firing.dedup_key and ack.path.endswith("/acknowledge?identifierType=alias")
    assert ack.json["source"] == "dbfleet" and ack.json["note"].startswith("Acknowledged in dbfleet by alice")


async def test_a_wrong_key_is_permanent_and_not_echoed(peer_and_sink, make_notification):
    peer, sink = peer_and_sink
    os.environ["DBF_AL_OG_BAD"] = "bad-key-0123456789"
    sink.config = sink.config.model_copy(update={"api_key_ref": "env:DBF_AL_OG_BAD"})
    peer.check = lambda req: f"key {req.headers['authorization']} is not valid"
    with pytest.raises(PermanentError) as e:
        await sink.send(make_notification())
    assert "bad-key-0123456789" not in str(e.value)
