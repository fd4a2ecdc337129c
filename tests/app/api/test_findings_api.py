"""/api/v1/findings: filters, sorts, cursor pagination over every page, :ack and :resolve with audit."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from app.findings import InstanceRef, record_run
from collectors.spec import Finding, Result, Severity

URL = "/api/v1/findings"
T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
W, C, I = Severity.warning, Severity.critical, Severity.info


def f(check: str, obj: str, sev: Severity) -> Finding:
    return Finding(check, obj, sev, f"{check} on {obj}", {"n": 1}, "fix it")


# instance -> tags and runs: (minutes after T0, collector, findings)
PLAN = {
    "pg-a": ({"env": "prod", "team": "x"}, [
        (0, "indexes", [f("unused_index", "public.i1", W), f("unused_index", "public.i2", W),
                        f("unused_index", "public.i3", W), f("unused_index", "public.gone", I)]),
        (5, "indexes", [f("unused_index", "public.i1", W), f("unused_index", "public.i2", W),
                        f("unused_index", "public.i3", W)]),
        (6, "health", [f("xid_wraparound", "app", C)]),
    ]),
    "pg-b": ({"env": "dev"}, [
        (1, "health", [f("connections_near_limit", "server", C), f("pg_stat_statements_missing", "b", I)]),
        (2, "indexes", [f("unused_index", "public.j1", I), f("unused_index", "public.j2", W)]),
    ]),
    "pg-c": ({"env": "prod"}, [
        (3, "health", [f("pg_stat_statements_missing", "c", I), f("xid_wraparound", "c", W)]),
    ]),
}
LIVE = 10  # everything above but public.gone, resolved by pg-a's second indexes run


@pytest.fixture
async def planted(clean_store) -> dict[str, int]:
    ids = {}
    async with clean_store.raw() as conn:
        for name, (tags, runs) in PLAN.items():
            iid = await conn.fetchval(
                "insert into instances (name, engine, host, port, dbname, \"user\", tls_mode, tags) "
                "values ($1, 'postgres', 'h', 5432, '', '', 'prefer', $2::text::jsonb) returning id", name, json.dumps(tags))
            ids[name] = iid
            for minutes, collector, found in runs:
                await record_run(conn, InstanceRef(iid, name, "postgres", tags), collector, Result(findings=found),
                                 T0 + timedelta(minutes=minutes), 1.0)
    return ids


async def get(client, headers, **params) -> dict:
    r = await client.get(URL, params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def keys_of(client, headers, **params) -> list[tuple[str, str, str]]:
    return [(i["instance"], i["check"], i["object"]) for i in (await get(client, headers, **params))["items"]]


async def test_default_lists_live_findings_in_the_one_json_shape(client, auth, planted):
    page = await get(client, auth["viewer"])
    assert len(page["items"]) == LIVE and page["next_cursor"] is None
    item = next(i for i in page["items"] if i["check"] == "xid_wraparound" and i["instance"] == "pg-a")
    assert {k: item[k] for k in ("instance", "check", "object", "severity", "state", "title", "recommendation")} == {
        "instance": "pg-a", "check": "xid_wraparound", "object": "app", "severity": "critical", "state": "open",
        "title": "xid_wraparound on app", "recommendation": "fix it"}
    assert item["details"] == {"n": 1}
    assert datetime.fromisoformat(item["first_seen"]) == T0 + timedelta(minutes=6)
    i1 = next(i for i in page["items"] if i["object"] == "public.i1")
    assert (datetime.fromisoformat(i1["first_seen"]), datetime.fromisoformat(i1["last_seen"])) == \
        (T0, T0 + timedelta(minutes=5))


@pytest.mark.parametrize("params, expected", [
    ({"instance": "pg-b"}, {("pg-b", "connections_near_limit", "server"), ("pg-b", "pg_stat_statements_missing", "b"),
                            ("pg-b", "unused_index", "public.j1"), ("pg-b", "unused_index", "public.j2")}),
    ({"tag": "env=prod", "check": "xid_wraparound"}, {("pg-a", "xid_wraparound", "app"),
                                                      ("pg-c", "xid_wraparound", "c")}),
    ({"tag": ["env=prod", "team=x"], "severity": "critical"}, {("pg-a", "xid_wraparound", "app")}),
    ({"severity": ["info"], "instance": "pg-b"}, {("pg-b", "pg_stat_statements_missing", "b"),
                                                 ("pg-b", "unused_index", "public.j1")}),
    ({"state": "resolved"}, {("pg-a", "unused_index", "public.gone")}),
    ({"state": ["resolved", "open"], "check": "unused_index", "instance": "pg-a"},
     {("pg-a", "unused_index", f"public.{o}") for o in ("i1", "i2", "i3", "gone")}),
    ({"instance": "nobody"}, set()),
])
async def test_filters(client, auth, planted, params, expected):
    assert set(await keys_of(client, auth["viewer"], **params)) == expected


@pytest.mark.parametrize("params", [{"severity": "fatal"}, {"state": "closed"}, {"sort": "name"}, {"limit": 0},
                                    {"limit": 1001}, {"tag": "env"}, {"cursor": "garbage"}])
async def test_bad_query_parameters_are_422(client, auth, planted, params):
    assert (await client.get(URL, params=params, headers=auth["viewer"])).status_code == 422


RANK = {"info": 1, "warning": 2, "critical": 3}
SORTS = ["-severity", "severity", "-last_seen", "last_seen", "-first_seen", "first_seen"]


@pytest.mark.parametrize("sort", SORTS)
async def test_sort_orders_by_the_key_then_id(client, auth, planted, sort):
    items = (await get(client, auth["viewer"], sort=sort, state=["open", "resolved"]))["items"]
    field = sort.lstrip("-")
    key = (lambda i: RANK[i["severity"]]) if field == "severity" else (lambda i: datetime.fromisoformat(i[field]))
    pairs = [(key(i), i["id"]) for i in items]
    assert pairs == sorted(pairs, reverse=sort.startswith("-"))
    assert len(items) == LIVE + 1


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_cursor_pagination_walks_every_page_once(client, auth, planted, sort, limit):
    everything = [i["id"] for i in (await get(client, auth["viewer"], sort=sort))["items"]]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"sort": sort, "limit": limit, **({"cursor": cursor} if cursor else {})}
        page = await get(client, auth["viewer"], **params)
        assert len(page["items"]) <= limit
        seen += [i["id"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 50
    assert seen == everything and len(set(seen)) == LIVE


async def test_filters_hold_across_pages(client, auth, planted):
    seen, cursor = [], None
    while True:
        page = await get(client, auth["viewer"], check="unused_index", limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [(i["instance"], i["object"]) for i in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert sorted(seen) == [("pg-a", "public.i1"), ("pg-a", "public.i2"), ("pg-a", "public.i3"),
                            ("pg-b", "public.j1"), ("pg-b", "public.j2")]


async def _one(client, auth, check: str) -> dict:
    return next(i for i in (await get(client, auth["viewer"], check=check))["items"])


async def test_ack_and_resolve_record_who_when_and_note(client, auth, planted, clean_store):
    item = await _one(client, auth, "connections_near_limit")
    before = datetime.now(timezone.utc)
    r = await client.post(f"{URL}/{item['id']}:ack", json={"note": "pooler rollout on Friday"},
                          headers=auth["operator"])
    assert r.status_code == 200, r.text
    acked = r.json()
    assert (acked["state"], acked["state_by"], acked["state_note"]) == \
        ("acknowledged", "test-operator", "pooler rollout on Friday")
    assert datetime.fromisoformat(acked["state_at"]) >= before - timedelta(seconds=1)
    assert (await client.get(f"{URL}/{item['id']}", headers=auth["viewer"])).json()["state"] == "acknowledged"
    # Acknowledged findings are still live.
    assert item["id"] in [i["id"] for i in (await get(client, auth["viewer"], state="acknowledged"))["items"]]

    r = await client.post(f"{URL}/{item['id']}:resolve", headers=auth["admin"])
    assert r.status_code == 200
    assert (r.json()["state"], r.json()["state_by"], r.json()["state_note"]) == ("resolved", "test-admin", None)
    assert r.json()["resolved_at"] is not None
    r = await client.post(f"{URL}/{item['id']}:ack", headers=auth["operator"])
    assert r.status_code == 409
    async with clean_store.raw() as conn:
        sent = await conn.fetch("select status, ends_at, labels from outbox where finding_id = $1 order by id",
                                item["id"])
    # Acknowledging writes no outbox row (the dispatcher reads the finding's state); resolving by hand
    # ends the alert.
    assert [s["status"] for s in sent] == ["firing", "resolved"]
    assert sent[-1]["ends_at"] is not None and sent[-1]["labels"]["alertname"] == "connections_near_limit"
    async with clean_store.raw() as conn:
        rows = await conn.fetch("select actor, action, target, details from audit_log order by id")
    assert [(a["actor"], a["action"], a["target"]) for a in rows] == [
        ("test-operator", "finding.acknowledged", "pg-b/connections_near_limit/server"),
        ("test-admin", "finding.resolved", "pg-b/connections_near_limit/server")]
    assert rows[0]["details"] == {"finding_id": item["id"], "from": "open", "note": "pooler rollout on Friday"}


async def test_state_changes_need_the_operator_role_and_an_existing_finding(client, auth, planted):
    item = await _one(client, auth, "xid_wraparound")
    for action in (":ack", ":resolve"):
        r = await client.post(f"{URL}/{item['id']}{action}", headers=auth["viewer"])
        assert r.status_code == 403 and "operator" in r.json()["detail"]
        assert (await client.post(f"{URL}/{item['id']}{action}")).status_code == 401
        assert (await client.post(f"{URL}/999999{action}", headers=auth["operator"])).status_code == 404
    r = await client.post(f"{URL}/{item['id']}:ack", json={"note": "x" * 2001}, headers=auth["operator"])
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "note"]
    assert (await client.get(f"{URL}/{item['id']}", headers=auth["viewer"])).json()["state"] == "open"
    assert (await client.get(f"{URL}/999999", headers=auth["viewer"])).status_code == 404


async def test_silence_for_a_while_or_until_a_time_then_reopen(client, auth, planted, clean_store):
    item = await _one(client, auth, "xid_wraparound")
    before = datetime.now(timezone.utc)
    r = await client.post(f"{URL}/{item['id']}:silence", json={"duration": "4h", "note": "vacuum tonight"},
                          headers=auth["operator"])
    assert r.status_code == 200, r.text
    until = datetime.fromisoformat(r.json()["state_until"])
    after = datetime.now(timezone.utc)
    assert before + timedelta(hours=4) - timedelta(seconds=1) <= until <= after + timedelta(hours=4)
    at = (datetime.now(timezone.utc) + timedelta(days=2)).replace(microsecond=0)
    r = await client.post(f"{URL}/{item['id']}:silence", json={"until": at.isoformat()}, headers=auth["operator"])
    assert (r.json()["state"], datetime.fromisoformat(r.json()["state_until"])) == ("silenced", at)
    r = await client.post(f"{URL}/{item['id']}:silence", headers=auth["operator"])  # until it resolves
    assert (r.json()["state"], r.json()["state_until"]) == ("silenced", None)
    r = await client.post(f"{URL}/{item['id']}:reopen", json={"note": "done early"}, headers=auth["operator"])
    assert (r.json()["state"], r.json()["state_by"], r.json()["state_until"]) == ("open", "test-operator", None)
    assert (await client.post(f"{URL}/{item['id']}:reopen", headers=auth["operator"])).status_code == 409
    async with clean_store.raw() as conn:
        rows = await conn.fetch("select action, details from audit_log order by id")
    assert [a["action"] for a in rows] == ["finding.silenced"] * 3 + ["finding.open"]
    assert rows[1]["details"]["until"] == at.isoformat() and "until" not in rows[2]["details"]


@pytest.mark.parametrize("body, field", [
    ({"duration": "soon"}, "duration"),
    ({"duration": "0s"}, "duration"),
    ({"duration": "91d"}, "duration"),
    ({"until": "2020-01-01T00:00:00Z"}, "until"),
    ({"until": "2099-01-01T00:00:00"}, "until"),  # no time zone
    ({"until": "next week"}, "until"),
])
async def test_bad_silence_ends_are_422_naming_the_field(client, auth, planted, body, field):
    item = await _one(client, auth, "xid_wraparound")
    r = await client.post(f"{URL}/{item['id']}:silence", json=body, headers=auth["operator"])
    assert r.status_code == 422 and r.json()["errors"][0]["loc"][:2] == ["body", field], r.text
    assert (await client.get(f"{URL}/{item['id']}", headers=auth["viewer"])).json()["state"] == "open"


async def test_until_and_duration_together_are_refused(client, auth, planted):
    item = await _one(client, auth, "xid_wraparound")
    body = {"duration": "1h", "until": (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()}
    r = await client.post(f"{URL}/{item['id']}:silence", json=body, headers=auth["operator"])
    assert r.status_code == 422 and "until or duration" in r.text
