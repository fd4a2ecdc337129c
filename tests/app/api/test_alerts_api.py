"""GET /alerts (grouped, silenced/inhibited), /silences CRUD with roles, /receivers health and :test."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.api import alerts, receivers, silences
from app.auth import Role, create_key
from app.db import Store, migrate
from app.settings import Settings

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


class _Hook(BaseHTTPRequestHandler):
    bodies: list[bytes] = []
    answer = 200

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        _Hook.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(_Hook.answer)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def hook_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
async def al_api_store():
    name = f"dbf_al_api_{os.getpid()}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'drop database if exists "{name}" with (force)')
    await admin.execute(f'create database "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    await asyncio.to_thread(migrate, url)
    store = Store(url, pool_size=5)
    yield store
    await store.dispose()
    await admin.execute(f'drop database if exists "{name}" with (force)')
    await admin.close()


@pytest.fixture
async def api(al_api_store, hook_url):
    async with al_api_store.raw() as conn:
        await conn.execute("truncate outbox, alerts, silences, receiver_status, notifications, api_keys, audit_log")
    os.environ["DBF_AL_API_SLACK"] = hook_url + "/services/T1/B1/SECRETSECRETSECRET"
    settings = Settings(alerting={
        "route": {"receiver": "ops", "group_by": ["instance"],
                  "routes": [{"matchers": ["severity=critical"], "receiver": "pager", "continue": True}]},
        "receivers": [{"type": "webhook", "name": "ops", "url": hook_url + "/hook"},
                      {"type": "slack", "name": "pager", "webhook_url_ref": "env:DBF_AL_API_SLACK"}],
        "inhibit_rules": [{"source_matchers": ["alertname=instance_unreachable"],
                           "target_matchers": ["alertname!=instance_unreachable"], "equal": ["instance"]}],
    })
    app = FastAPI()
    app.state.store, app.state.settings = al_api_store, settings
    for module in (alerts, silences, receivers):
        app.include_router(module.router)
    keys = {}
    async with al_api_store.sessions() as session, session.begin():
        for role in Role:
            keys[role.name] = {"Authorization": f"Bearer {await create_key(session, role.name, role)}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client, keys, al_api_store


async def _firing(store, fp, **labels):
    labels = {"alertname": "replication_lag", "severity": "warning", "instance": "db1", **labels}
    async with store.raw() as conn:
        await conn.execute("insert into alerts (fingerprint, status, severity, labels, annotations, starts_at, "
                           "outbox_id, changed_at) values ($1, 'firing', $2, $3::jsonb, '{}', now(), 1, now())",
                           fp, labels["severity"], json.dumps(labels))


async def test_silence_lifecycle_and_roles(api):
    client, keys, _ = api
    now = datetime.now(timezone.utc)
    body = {"matchers": ["instance=db1"], "ends_at": (now + timedelta(hours=2)).isoformat(), "comment": "reindex"}
    assert (await client.post("/api/v1/silences", json=body, headers=keys["viewer"])).status_code == 403
    r = await client.post("/api/v1/silences", json=body, headers=keys["operator"])
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["state"] == "active" and r.json()["created_by"] == "operator"
    ahead = {**body, "starts_at": (now + timedelta(hours=1)).isoformat()}
    assert (await client.post("/api/v1/silences", json=ahead, headers=keys["operator"])).json()["state"] == "pending"
    listed = (await client.get("/api/v1/silences?state=active", headers=keys["viewer"])).json()
    assert [s["id"] for s in listed] == [sid]
    r = await client.delete(f"/api/v1/silences/{sid}", headers=keys["operator"])
    assert r.json()["state"] == "expired"
    assert (await client.delete(f"/api/v1/silences/{sid}", headers=keys["operator"])).status_code == 409
    assert (await client.get("/api/v1/silences/nope", headers=keys["viewer"])).status_code == 422  # not a UUID
    assert (await client.get(f"/api/v1/silences/{uuid.uuid4()}", headers=keys["viewer"])).status_code == 404


@pytest.mark.parametrize("patch,field", [
    ({"matchers": []}, "matchers"),
    ({"matchers": ["instance=~.*"]}, "matchers"),  # would silence everything
    ({"matchers": ["instance=~("]}, "matchers"),
    ({"ends_at": "2020-01-01T00:00:00Z"}, "past"),
    ({"comment": ""}, "comment"),
])
async def test_bad_silences_are_rejected_with_the_field(api, patch, field):
    client, keys, _ = api
    body = {"matchers": ["instance=db1"], "comment": "x",
            "ends_at": (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat(), **patch}
    r = await client.post("/api/v1/silences", json=body, headers=keys["operator"])
    assert r.status_code == 422 and field in r.text


async def test_alerts_grouped_with_silenced_and_inhibited_state(api):
    client, keys, store = api
    await _firing(store, "u1", alertname="instance_unreachable", instance="db1", severity="critical")
    await _firing(store, "lag1", instance="db1")
    await _firing(store, "lag2", instance="db2")
    await _firing(store, "lag3", instance="db3")
    body = {"matchers": ["instance=db2"], "comment": "maintenance",
            "ends_at": (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()}
    sid = (await client.post("/api/v1/silences", json=body, headers=keys["operator"])).json()["id"]
    data = (await client.get("/api/v1/alerts", headers=keys["viewer"])).json()
    state = {(g["receiver"], a["fingerprint"]): (a["state"], a["silenced_by"], a["inhibited_by"])
             for g in data["groups"] for a in g["alerts"]}
    assert state[("ops", "lag1")] == ("suppressed", [], ["u1"])
    assert state[("ops", "lag2")] == ("suppressed", [sid], [])
    assert state[("ops", "lag3")] == ("active", [], [])
    assert state[("pager", "u1")] == ("active", [], [])  # critical goes to the pager route only
    assert data["total"] == 4
    ops_db1 = next(g for g in data["groups"] if g["receiver"] == "ops" and g["labels"] == {"instance": "db1"})
    assert {a["fingerprint"] for a in ops_db1["alerts"]} == {"lag1"}
    only_active = (await client.get("/api/v1/alerts?silenced=false&inhibited=false&receiver=ops",
                                    headers=keys["viewer"])).json()
    assert sorted(a["fingerprint"] for g in only_active["groups"] for a in g["alerts"]) == ["lag3"]
    filtered = (await client.get("/api/v1/alerts", params={"filter": "instance=~db[23]"},
                                 headers=keys["viewer"])).json()
    assert filtered["total"] == 2


async def test_receivers_health_and_test_notification(api):
    client, keys, store = api
    assert (await client.post("/api/v1/receivers/ops:test", headers=keys["viewer"])).status_code == 403
    _Hook.answer = 200
    r = await client.post("/api/v1/receivers/ops:test", headers=keys["operator"])
    assert r.status_code == 200 and r.json()["ok"] is True
    assert json.loads(_Hook.bodies[-1])["dbfleet"]["kind"] == "test"
    _Hook.answer = 500
    r = await client.post("/api/v1/receivers/pager:test", headers=keys["operator"])
    assert r.status_code == 502 and "HTTP 500" in r.text and "SECRETSECRET" not in r.text
    assert (await client.post("/api/v1/receivers/nope:test", headers=keys["operator"])).status_code == 404
    async with store.raw() as conn:
        await conn.execute("insert into notifications (receiver, group_key, dedup_key, kind, status, payload, "
                           "state, next_attempt_at) values ('ops', 'g', 'k', 'alert', 'firing', '{}', 'pending', now())")
    listed = {r["name"]: r for r in (await client.get("/api/v1/receivers", headers=keys["viewer"])).json()}
    assert listed["ops"]["last_success_at"] and listed["ops"]["pending"] == 1 and listed["ops"]["sent_total"] == 1
    assert "HTTP 500" in listed["pager"]["last_error"] and listed["pager"]["failed_total"] == 1
    assert "SECRET" not in json.dumps(listed) and "url" not in json.dumps(listed)


async def test_failed_notifications_stay_visible(api):
    client, keys, store = api
    async with store.raw() as conn:
        await conn.execute("insert into notifications (receiver, group_key, dedup_key, kind, status, payload, state, "
                           "attempts, last_error, next_attempt_at) values "
                           "('pager', 'g1', 'k1', 'alert', 'firing', '{\"alerts\": [{}, {}]}', 'failed', 1, "
                           "'pagerduty pager: HTTP 400: invalid routing key', now()), "
                           "('ops', 'g2', 'k2', 'alert', 'firing', '{\"alerts\": []}', 'sent', 1, null, now())")
    r = await client.get("/api/v1/notifications?state=failed", headers=keys["viewer"])
    [row] = r.json()
    assert (row["receiver"], row["alerts"], row["last_error"]) == ("pager", 2, "pagerduty pager: HTTP 400: invalid routing key")
    assert len((await client.get("/api/v1/notifications", headers=keys["viewer"])).json()) == 2


PD_SECRET = "whsec-pd-0123456789abcdef"
OG_TOKEN = "og-token-0123456789abcdef"


@pytest.fixture
async def webhook_api(al_api_store, hook_url):
    """Findings on db1 grouped for a PagerDuty and an Opsgenie receiver that take webhooks."""
    from app.alerting.config import load_config
    from app.alerting.dispatcher import dispatch_once
    from app.findings import InstanceRef, record_run
    from collectors.spec import Finding, Result, Severity

    os.environ.update(DBF_AL_API_PD_KEY="R0UT1NG", DBF_AL_API_PD_HOOK=PD_SECRET, DBF_AL_API_OG_KEY="k" * 20,
                      DBF_AL_API_OG_HOOK=OG_TOKEN)
    alerting = {
        "route": {"receiver": "ops", "group_by": ["instance", "object"],
                  "routes": [{"matchers": ["instance=db1"], "receiver": "pd", "continue": True},
                             {"matchers": ["instance=db1"], "receiver": "og"}]},
        "receivers": [{"type": "webhook", "name": "ops", "url": hook_url + "/hook"},
                      {"type": "pagerduty", "name": "pd", "routing_key_ref": "env:DBF_AL_API_PD_KEY",
                       "url": hook_url + "/v2/enqueue", "webhook_secret_ref": "env:DBF_AL_API_PD_HOOK"},
                      {"type": "opsgenie", "name": "og", "api_key_ref": "env:DBF_AL_API_OG_KEY", "url": hook_url,
                       "webhook_token_ref": "env:DBF_AL_API_OG_HOOK"}],
    }
    async with al_api_store.raw() as conn:
        await conn.execute("truncate instances, outbox, alerts, alert_groups, notification_log, notifications, "
                           "audit_log restart identity cascade")
        iid = await conn.fetchval("insert into instances (name, engine, host, port, dbname, \"user\", tls_mode, tags) "
                                  "values ('db1', 'postgres', 'h', 5432, '', '', 'prefer', '{}') returning id")
        found = [Finding("replication_lag", o, Severity.critical, f"{o} behind", {}, "check replay")
                 for o in ("standby1", "standby2")]
        await record_run(conn, InstanceRef(iid, "db1", "postgres", {}), "health", Result(findings=found),
                         datetime.now(timezone.utc), 1.0)
    await dispatch_once(al_api_store, load_config(alerting))  # groups made; group_wait holds any send
    app = FastAPI()
    app.state.store, app.state.settings = al_api_store, Settings(alerting=alerting)
    app.include_router(receivers.router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client, al_api_store


async def _dedup_key(store, receiver: str, obj: str) -> str:
    from app.alerting.notification import dedup_key

    async with store.raw() as conn:
        key = await conn.fetchval("select group_key from alert_groups where receiver = $1 and labels->>'object' = $2",
                                  receiver, obj)
    return dedup_key(key, receiver)


async def _findings(store) -> dict[str, tuple]:
    async with store.raw() as conn:
        return {r["object"]: (r["state"], r["state_by"]) for r in await conn.fetch(
            "select object, state, state_by from findings")}


def _pd_event(incident_key: str, event_type: str = "incident.acknowledged") -> bytes:
    return json.dumps({"event": {
        "id": "01DRF6BV78DEFGHIJK56789", "event_type": event_type, "resource_type": "incident",
        "occurred_at": "2026-12-05T10:31:30Z",
        "agent": {"id": "P123ABC", "type": "user_reference", "summary": "John Doe"},
        "data": {"id": "Q2KURS8RXYZ123", "type": "incident", "number": 42, "status": "acknowledged",
                 "incident_key": incident_key, "title": "replication_lag on db1"}}}).encode()


def _pd_signature(body: bytes, secret: str = PD_SECRET) -> str:
    import hashlib
    import hmac

    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_a_signed_pagerduty_acknowledgement_acknowledges_the_finding(webhook_api):
    client, store = webhook_api
    body = _pd_event(await _dedup_key(store, "pd", "standby1"))
    # During a secret rotation PagerDuty sends several signatures; one good one is enough.
    headers = {"X-PagerDuty-Signature": f"{_pd_signature(body, 'old-secret')}, {_pd_signature(body)}",
               "Content-Type": "application/json"}
    r = await client.post("/api/v1/receivers/pd/webhook", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert len(r.json()["acknowledged"]) == 1
    assert await _findings(store) == {"standby1": ("acknowledged", "pagerduty:John Doe"), "standby2": ("open", None)}
    async with store.raw() as conn:
        audit = await conn.fetchrow("select actor, action, target, details from audit_log")
        severity = await conn.fetchval("select state_severity from findings where object = 'standby1'")
    assert (audit["actor"], audit["action"], audit["target"]) == \
        ("pagerduty:John Doe", "finding.acknowledged", "db1/replication_lag/standby1")
    details = json.loads(audit["details"]) if isinstance(audit["details"], str) else audit["details"]
    assert details["receiver"] == "pd" and "incident 42" in details["note"] and severity == "critical"
    again = await client.post("/api/v1/receivers/pd/webhook", content=body, headers=headers)
    assert again.json()["acknowledged"] == []  # already acknowledged: who did it first stays


@pytest.mark.parametrize("headers", [{}, {"X-PagerDuty-Signature": "v1=" + "0" * 64},
                                     {"X-PagerDuty-Signature": "sha256=whatever"}])
async def test_a_bad_pagerduty_signature_is_refused(webhook_api, headers):
    client, store = webhook_api
    body = _pd_event(await _dedup_key(store, "pd", "standby1"))
    r = await client.post("/api/v1/receivers/pd/webhook", content=body, headers=headers)
    assert r.status_code == 401 and "signature" in r.text
    tampered = body.replace(b"John Doe", b"Mallory")
    r = await client.post("/api/v1/receivers/pd/webhook", content=tampered,
                          headers={"X-PagerDuty-Signature": _pd_signature(body)})
    assert r.status_code == 401
    assert await _findings(store) == {"standby1": ("open", None), "standby2": ("open", None)}


async def test_other_pagerduty_events_and_bad_bodies(webhook_api):
    client, store = webhook_api
    body = _pd_event(await _dedup_key(store, "pd", "standby1"), "incident.resolved")
    r = await client.post("/api/v1/receivers/pd/webhook", content=body,
                          headers={"X-PagerDuty-Signature": _pd_signature(body)})
    assert r.status_code == 200 and r.json()["acknowledged"] == []
    junk = b"not json"
    r = await client.post("/api/v1/receivers/pd/webhook", content=junk,
                          headers={"X-PagerDuty-Signature": _pd_signature(junk)})
    assert r.status_code == 400 and "body" in r.text
    for name in ("ops", "nope"):  # a receiver without a webhook secret takes no webhooks
        assert (await client.post(f"/api/v1/receivers/{name}/webhook", content=body)).status_code == 404
    assert await _findings(store) == {"standby1": ("open", None), "standby2": ("open", None)}


async def test_an_opsgenie_acknowledgement_with_the_token_acknowledges_the_finding(webhook_api):
    client, store = webhook_api
    body = json.dumps({"action": "Acknowledge", "integrationName": "dbfleet", "source": {"type": "web"},
                       "alert": {"alertId": "a-1", "tinyId": "17", "username": "jane@example.com",
                                 "alias": await _dedup_key(store, "og", "standby2")}}).encode()
    r = await client.post("/api/v1/receivers/og/webhook", content=body, headers={"X-Dbfleet-Webhook-Token": "wrong"})
    assert r.status_code == 401
    r = await client.post("/api/v1/receivers/og/webhook", content=body, headers={"X-Dbfleet-Webhook-Token": OG_TOKEN})
    assert r.status_code == 200, r.text
    assert await _findings(store) == {"standby1": ("open", None),
                                      "standby2": ("acknowledged", "opsgenie:jane@example.com")}


async def test_an_alert_whose_finding_is_silenced_is_shown_suppressed(api):
    client, keys, store = api
    async with store.raw() as conn:
        await conn.execute("truncate instances cascade")
        iid = await conn.fetchval("insert into instances (name, engine, host, port, dbname, \"user\", tls_mode) "
                                  "values ('db9', 'postgres', 'h', 5432, '', '', 'prefer') "
                                  "returning id")
        await conn.execute(
            "insert into findings (fingerprint, instance_id, collector, \"check\", object, severity, state, title, "
            "details, recommendation, first_seen, last_seen, opened_at, state_until) values "
            "('fmute', $1, 'replication', 'replication_lag', 's1', 'warning', 'silenced', 't', '{}', '', now(), now(), "
            "now(), now() + interval '1 hour')", iid)
    await _firing(store, "fmute", instance="db9")
    await _firing(store, "fopen", instance="db9", object="s2")
    data = (await client.get("/api/v1/alerts", headers=keys["viewer"])).json()
    state = {a["fingerprint"]: (a["state"], a["finding_muted"]) for g in data["groups"] for a in g["alerts"]}
    assert state["fmute"] == ("suppressed", "silenced")
    assert state["fopen"] == ("active", None)
