"""/api/v1/servers: a server and its database entries (with open findings by severity), CRUD,
roles, 422 naming the field, 409, connection fields following to the entries, no secrets."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from app.findings import InstanceRef, record_run
from collectors.spec import Finding, Result, Severity

SECRET = "s3cret-" + uuid.uuid4().hex
BASE = "/api/v1/servers"


def server(name: str = "maria", **kw) -> dict:
    return {"name": name, "engine": "mariadb", "host": "db2.internal", "user": "dbfleet",
            "databases": ["shop", "clean"], **kw}


async def rows(store, sql: str, *args) -> list[tuple]:
    async with store.raw() as conn:
        return [tuple(r) for r in await conn.fetch(sql, *args)]


async def test_two_schemas_on_one_mariadb_server_are_one_server_with_two_entries(client, auth, clean_store):
    """Issue 13's case: shop and clean on one MariaDB are two entries of one server, not two servers."""
    r = await client.post(BASE, json=server(), headers=auth["admin"])
    assert r.status_code == 201, r.text
    got = r.json()
    assert (got["name"], got["port"], got["patterns"]) == ("maria", 3306, None)
    assert [(e["name"], e["dbname"], e["open_findings"]) for e in got["databases"]] == [
        ("maria.clean", "clean", {"critical": 0, "warning": 0, "info": 0}),
        ("maria.shop", "shop", {"critical": 0, "warning": 0, "info": 0})]
    assert await rows(clean_store, "select count(*), count(distinct server_id) from instances") == [(2, 1)]
    listed = (await client.get("/api/v1/instances", headers=auth["viewer"])).json()
    assert [(i["name"], i["server"]) for i in listed] == [("maria.clean", "maria"), ("maria.shop", "maria")]
    one = (await client.get("/api/v1/instances/maria.shop", headers=auth["viewer"])).json()
    assert (one["server"], one["host"], one["user"]) == ("maria", "db2.internal", "dbfleet")


async def test_crud_round_trip_entries_follow_the_server_and_everything_is_audited(client, auth, clean_store):
    assert (await client.post(BASE, json=server(tags={"env": "prod"}), headers=auth["admin"])).status_code == 201
    # An entry with its own user keeps it when the server's changes.
    r = await client.patch("/api/v1/instances/maria.clean", json={"user": "cleaner"}, headers=auth["admin"])
    assert r.status_code == 200 and r.json()["server"] == "maria"

    r = await client.patch(f"{BASE}/maria", json={"host": "db2-new.internal", "user": "mon", "tags": {"env": "dev"}},
                           headers=auth["admin"])
    assert r.status_code == 200, r.text
    assert (r.json()["host"], r.json()["user"], r.json()["tags"]) == ("db2-new.internal", "mon", {"env": "dev"})
    entries = {i["name"]: i for i in (await client.get("/api/v1/instances", params={"server": "maria"},
                                                        headers=auth["viewer"])).json()}
    assert {n: (e["host"], e["user"], e["tags"]) for n, e in entries.items()} == {
        "maria.shop": ("db2-new.internal", "mon", {"env": "dev"}),
        "maria.clean": ("db2-new.internal", "cleaner", {"env": "dev"})}
    assert len({e["id"] for e in entries.values()}) == 2

    r = await client.patch(f"{BASE}/maria", json={"databases": ["shop", {"name": "maria-reports",
                                                                         "schemas": ["reports", "reports_old"]}]},
                           headers=auth["admin"])
    assert r.status_code == 200, r.text
    assert [(e["name"], e["schemas"]) for e in r.json()["databases"]] == [
        ("maria-reports", ["reports", "reports_old"]), ("maria.clean", []), ("maria.shop", [])]

    assert (await client.get(f"{BASE}/maria", headers=auth["viewer"])).json()["host"] == "db2-new.internal"
    assert (await client.delete(f"{BASE}/maria", headers=auth["admin"])).status_code == 204
    assert (await client.get(f"{BASE}/maria", headers=auth["viewer"])).status_code == 404
    assert await rows(clean_store, "select count(*) from instances") == [(0,)]
    actions = [a for a in await rows(clean_store, "select action, target from audit_log order by id")]
    assert actions[0] == ("server.create", "maria") and ("server.update", "maria") in actions
    assert ("instance.create", "maria.shop") in actions and ("instance.update", "maria.clean") in actions
    assert actions[-1] == ("server.delete", "maria")


async def test_open_findings_are_counted_by_severity_and_deleting_the_server_resolves_alerts(client, auth, clean_store):
    created = (await client.post(BASE, json=server(), headers=auth["admin"])).json()
    shop = next(i for i in (await client.get("/api/v1/instances", headers=auth["viewer"])).json()
                if i["name"] == "maria.shop")
    ref = InstanceRef(shop["id"], "maria.shop", "mariadb", {})
    found = [Finding("duplicate_index", "shop.orders.k2", Severity.warning, "dup"),
             Finding("unused_index", "shop.orders.k3", Severity.info, "unused"),
             Finding("table_without_primary_key", "shop.log", Severity.warning, "no pk")]
    async with clean_store.raw() as conn:
        await record_run(conn, ref, "index_advice", Result(findings=found), datetime.now(timezone.utc), 1.0)
    # Acknowledged is no longer open.
    async with clean_store.raw() as conn:
        await conn.execute("update findings set state = 'acknowledged' where object = 'shop.log'")
    got = (await client.get(f"{BASE}/maria", headers=auth["viewer"])).json()
    assert {e["name"]: e["open_findings"] for e in got["databases"]} == {
        "maria.shop": {"critical": 0, "warning": 1, "info": 1}, "maria.clean": {"critical": 0, "warning": 0, "info": 0}}
    assert got["id"] == created["id"]
    assert (await client.delete(f"{BASE}/maria", headers=auth["admin"])).status_code == 204
    statuses = await rows(clean_store, "select distinct on (fingerprint) status from outbox order by fingerprint, id desc")
    assert statuses == [("resolved",)] * 3


@pytest.mark.parametrize("bad, loc", [
    ({"engine": "db2"}, ["body", "engine"]),
    ({"port": 0}, ["body", "port"]),
    ({"colour": "red"}, ["body", "colour"]),
    ({"credential": SECRET}, ["body", "credential"]),
    ({"credential": "env:HOME"}, ["body", "credential"]),
    ({"engine": "postgres", "databases": [{"dbname": "a", "schemas": ["a", "b"]}]}, ["body", "databases"]),
    ({"databases": {"include": []}}, ["body", "databases", "patterns", "include"]),
    ({"name": "has space"}, ["body", "name"]),
])
async def test_bad_bodies_are_422_with_the_field_path(client, auth, clean_store, bad, loc):
    r = await client.post(BASE, json={**server(), **bad}, headers=auth["admin"])
    assert r.status_code == 422, r.text
    assert loc in [e["loc"] for e in r.json()["errors"]]
    assert SECRET not in r.text
    assert await rows(clean_store, "select count(*) from servers") == [(0,)]


async def test_patch_validates_against_the_stored_fields(client, auth, clean_store):
    await client.post(BASE, json=server("pg", engine="postgres", databases=["a"]), headers=auth["admin"])
    r = await client.patch(f"{BASE}/pg", json={"databases": [{"dbname": "a", "schemas": ["a", "b"]}]},
                           headers=auth["admin"])
    assert r.status_code == 422 and ["body", "databases"] in [e["loc"] for e in r.json()["errors"]]
    r = await client.patch(f"{BASE}/pg", json={"credential": "file:/etc/shadow"}, headers=auth["admin"])
    assert r.status_code == 422 and [e["loc"] for e in r.json()["errors"]] == [["body", "credential"]]
    assert (await client.patch(f"{BASE}/nope", json={"port": 1}, headers=auth["admin"])).status_code == 404


async def test_name_or_endpoint_taken_is_409(client, auth, clean_store):
    assert (await client.post(BASE, json=server(), headers=auth["admin"])).status_code == 201
    r = await client.post(BASE, json=server(host="elsewhere"), headers=auth["admin"])
    assert r.status_code == 409 and "maria" in r.json()["detail"]
    # MySQL and MariaDB at one endpoint are one server.
    r = await client.post(BASE, json=server("other", engine="mysql", host="DB2.internal"), headers=auth["admin"])
    assert r.status_code == 409 and "'maria' is at" in r.json()["detail"]
    # An entry name that is another server's instance.
    await client.post("/api/v1/instances", json={"name": "x.shop", "engine": "postgres", "host": "h"},
                      headers=auth["admin"])
    r = await client.post(BASE, json=server("x", host="h9"), headers=auth["admin"])
    assert r.status_code == 409 and "databases.0: entry name 'x.shop'" in [e["msg"] for e in r.json()["errors"]][0]
    assert await rows(clean_store, "select name from servers where name = 'x'") == []


async def test_discovery_patterns_are_stored_and_shown(client, auth, clean_store):
    r = await client.post(BASE, json=server("pgx", engine="postgres", databases={"include": ["app_*"], "exclude": ["*_tmp"]}),
                          headers=auth["admin"])
    assert r.status_code == 201, r.text
    assert (r.json()["patterns"], r.json()["databases"]) == ({"include": ["app_*"], "exclude": ["*_tmp"]}, [])
    r = await client.patch(f"{BASE}/pgx", json={"tags": {"env": "prod"}}, headers=auth["admin"])
    assert r.json()["patterns"] == {"include": ["app_*"], "exclude": ["*_tmp"]}
    r = await client.patch(f"{BASE}/pgx", json={"databases": ["app_1"]}, headers=auth["admin"])
    assert r.json()["patterns"] is None and [e["name"] for e in r.json()["databases"]] == ["pgx.app_1"]


async def test_auth_roles_and_no_secret(client, auth, monkeypatch):
    monkeypatch.setenv("DBFLEET_CRED_SRV_PW", SECRET)
    assert (await client.get(BASE)).status_code == 401
    for role in ("viewer", "operator"):
        r = await client.post(BASE, json=server(), headers=auth[role])
        assert r.status_code == 403 and "admin" in r.json()["detail"]
        assert (await client.patch(f"{BASE}/maria", json={}, headers=auth[role])).status_code == 403
        assert (await client.delete(f"{BASE}/maria", headers=auth[role])).status_code == 403
    r = await client.post(BASE, json=server(credential="env:DBFLEET_CRED_SRV_PW"), headers=auth["admin"])
    assert r.status_code == 201
    for url in (BASE, f"{BASE}/maria", "/api/v1/instances", "/api/v1/instances:export"):
        r = await client.get(url, headers=auth["viewer"])
        assert r.status_code == 200 and SECRET not in r.text and "env:DBFLEET_CRED_SRV_PW" in r.text


async def test_import_and_export_speak_servers(client, auth, clean_store):
    text = ("servers:\n  - {name: maria, engine: mariadb, host: db2.internal, databases: [shop, clean]}\n"
            "instances:\n  - {name: legacy, engine: mariadb, host: DB2.internal, dbname: old, user: other}\n")
    headers = {**auth["admin"], "Content-Type": "application/yaml"}
    r = await client.post("/api/v1/instances:import", content=text, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"created": ["maria.shop", "maria.clean", "legacy"], "updated": [], "unchanged": [],
                        "servers": {"created": ["maria"], "updated": [], "unchanged": []}}
    got = (await client.get(f"{BASE}/maria", headers=auth["viewer"])).json()
    # The instance listed on its own is on the declared server (its endpoint), with its own user.
    assert [e["name"] for e in got["databases"]] == ["legacy", "maria.clean", "maria.shop"]
    exported = (await client.get("/api/v1/instances:export", headers=auth["viewer"])).text
    assert "servers:" in exported and "- shop\n" in exported and "name: legacy" in exported
    again = await client.post("/api/v1/instances:import", content=exported, headers=headers)
    assert (again.json()["created"], again.json()["updated"]) == ([], []), exported
    bad = text.replace("databases: [shop, clean]", "databases: [shop, shop]")
    r = await client.post("/api/v1/instances:import", content=bad, headers=headers)
    assert r.status_code == 422 and [e["msg"] for e in r.json()["errors"]][0].startswith("line 2: databases:")
