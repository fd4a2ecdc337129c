"""/api/v1/instances: CRUD, filters, import/export, auth and roles, 422/409, audit, no secrets."""

from __future__ import annotations

import uuid

import pytest

from app.settings import Settings

SECRET = "s3cret-" + uuid.uuid4().hex
BASE = "/api/v1/instances"


def body(name: str = "pg-a", **kw) -> dict:
    return {"name": name, "engine": "postgres", "host": "db.internal", **kw}


async def count(store, sql: str, *args) -> int:
    async with store.raw() as conn:
        return await conn.fetchval(sql, *args)


async def audit(store) -> list[tuple[str, str, str]]:
    async with store.raw() as conn:
        return [tuple(r) for r in await conn.fetch("select actor, action, target from audit_log order by id")]


async def test_crud_round_trip_with_audit(client, auth, clean_store):
    r = await client.post(BASE, json=body(credential="env:DBFLEET_CRED_T_PW", tags={"env": "prod"}), headers=auth["admin"])
    assert r.status_code == 201, r.text
    created = r.json()
    assert (created["name"], created["port"], created["credential"], created["tags"], created["enabled"]) == \
        ("pg-a", 5432, "env:DBFLEET_CRED_T_PW", {"env": "prod"}, True)
    assert (await client.get(f"{BASE}/pg-a", headers=auth["viewer"])).json()["id"] == created["id"]

    r = await client.patch(f"{BASE}/pg-a", json={"port": 6432, "tags": {"env": "dev"}}, headers=auth["admin"])
    assert r.status_code == 200, r.text
    assert (r.json()["port"], r.json()["tags"], r.json()["host"]) == (6432, {"env": "dev"}, "db.internal")

    assert (await client.delete(f"{BASE}/pg-a", headers=auth["admin"])).status_code == 204
    assert (await client.get(f"{BASE}/pg-a", headers=auth["viewer"])).status_code == 404
    assert await count(clean_store, "select count(*) from instances") == 0
    assert [a[1:] for a in await audit(clean_store)] == [
        ("instance.create", "pg-a"), ("instance.update", "pg-a"), ("instance.delete", "pg-a")]
    assert {a[0] for a in await audit(clean_store)} == {"test-admin"}


async def test_unknown_instance_is_404(client, auth):
    r = await client.get(f"{BASE}/nope", headers=auth["viewer"])
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert (await client.patch(f"{BASE}/nope", json={"port": 1}, headers=auth["admin"])).status_code == 404
    assert (await client.delete(f"{BASE}/nope", headers=auth["admin"])).status_code == 404


async def test_list_filters(client, auth):
    for b in (body("a", tags={"env": "prod", "team": "x"}), body("b", engine="mysql", tags={"env": "prod"}),
              body("c", tags={"env": "dev"}, enabled=False)):
        assert (await client.post(BASE, json=b, headers=auth["admin"])).status_code == 201

    async def names(**params) -> list[str]:
        r = await client.get(BASE, params=params, headers=auth["viewer"])
        assert r.status_code == 200, r.text
        return [i["name"] for i in r.json()]

    assert await names() == ["a", "b", "c"]
    assert await names(engine="mysql") == ["b"]
    assert await names(tag="env=prod") == ["a", "b"]
    assert await names(tag=["env=prod", "team=x"]) == ["a"]
    assert await names(enabled="false") == ["c"]
    assert await names(enabled="true", engine="postgres") == ["a"]
    r = await client.get(BASE, params={"tag": "nonsense"}, headers=auth["viewer"])
    assert r.status_code == 422 and [e["loc"] for e in r.json()["errors"]] == [["query", "tag", 0]]


async def test_duplicate_name_is_409(client, auth, clean_store):
    assert (await client.post(BASE, json=body(), headers=auth["admin"])).status_code == 201
    r = await client.post(BASE, json=body(host="other"), headers=auth["admin"])
    assert r.status_code == 409 and "pg-a" in r.json()["detail"]
    assert await count(clean_store, "select count(*) from instances where host = 'other'") == 0


@pytest.mark.parametrize("bad, loc", [
    ({"port": 0}, ["body", "port"]),
    ({"port": 70000}, ["body", "port"]),
    ({"engine": "db2"}, ["body", "engine"]),
    ({"pasword": "x"}, ["body", "pasword"]),
    ({"tags": {"env": 1}}, ["body", "tags", "env"]),
    ({"overrides": {"health": {"interval_s": 1}}}, ["body", "overrides", "health", "interval_s"]),
    ({"credential": SECRET}, ["body", "credential"]),
    ({"tags": {"team": "a;b"}}, ["body", "tags"]),
])
async def test_bad_bodies_are_422_with_the_field_path(client, auth, clean_store, bad, loc):
    r = await client.post(BASE, json={**body(), **bad}, headers=auth["admin"])
    assert r.status_code == 422
    assert loc in [e["loc"] for e in r.json()["errors"]]
    assert SECRET not in r.text, "a password pasted in the wrong place must not be echoed"
    assert await count(clean_store, "select count(*) from instances") == 0


OUTSIDE = ["env:HOME", "env:DBFLEET_DATABASE_URL", "file:/etc/passwd", "file:/var/run/secrets/dbfleet/../../../etc/passwd"]


@pytest.mark.parametrize("reference", OUTSIDE)
async def test_a_credential_outside_the_allow_list_is_422_on_create_and_patch(client, auth, clean_store, reference):
    r = await client.post(BASE, json=body(credential=reference), headers=auth["admin"])
    assert r.status_code == 422
    [error] = r.json()["errors"]
    assert error["loc"] == ["body", "credential"]
    assert "DBFLEET_CRED_" in error["msg"] or "/var/run/secrets/dbfleet" in error["msg"]
    assert await count(clean_store, "select count(*) from instances") == 0
    await client.post(BASE, json=body(credential="env:DBFLEET_CRED_T_PW"), headers=auth["admin"])
    r = await client.patch(f"{BASE}/pg-a", json={"credential": reference, "port": 6432}, headers=auth["admin"])
    assert r.status_code == 422 and [e["loc"] for e in r.json()["errors"]] == [["body", "credential"]]
    assert await count(clean_store, "select count(*) from instances where credential = 'env:DBFLEET_CRED_T_PW' "
                                    "and port = 5432") == 1


@pytest.mark.parametrize("settings", [Settings(credentials={"env_prefixes": ["TEAM_A_"], "file_dirs": ["/srv/team-a"]})])
async def test_the_allow_list_is_the_services_configuration(client, auth, settings):
    assert (await client.post(BASE, json=body("a", credential="env:TEAM_A_PW"), headers=auth["admin"])).status_code == 201
    assert (await client.post(BASE, json=body("b", credential="file:/srv/team-a/pw"),
                              headers=auth["admin"])).status_code == 201
    r = await client.post(BASE, json=body("c", credential="env:DBFLEET_CRED_PW"), headers=auth["admin"])
    assert r.status_code == 422 and "TEAM_A_" in r.json()["errors"][0]["msg"]
    r = await client.post(f"{BASE}:import", content="- {name: d, engine: postgres, host: h, credential: 'env:TEAM_A_X'}\n",
                          headers={**auth["admin"], "Content-Type": "application/yaml"})
    assert r.status_code == 200, r.text


async def test_patch_validates_too(client, auth):
    await client.post(BASE, json=body(), headers=auth["admin"])
    r = await client.patch(f"{BASE}/pg-a", json={"port": 0, "name": "renamed"}, headers=auth["admin"])
    assert r.status_code == 422
    assert {tuple(e["loc"]) for e in r.json()["errors"]} == {("body", "port"), ("body", "name")}


async def test_auth_and_roles(client, auth):
    assert (await client.get(BASE)).status_code == 401
    r = await client.get(BASE, headers={"Authorization": "Bearer dbf_not-a-key"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert (await client.get(BASE, headers={"Authorization": "Basic abc"})).status_code == 401
    for role in ("viewer", "operator"):
        r = await client.post(BASE, json=body(), headers=auth[role])
        assert r.status_code == 403 and "admin" in r.json()["detail"]
        assert (await client.post(f"{BASE}:import", content="[]", headers=auth[role])).status_code == 403
    assert (await client.get(BASE, headers=auth["viewer"])).status_code == 200


async def test_no_secret_in_any_response(client, auth, monkeypatch):
    monkeypatch.setenv("DBFLEET_CRED_T_PW", SECRET)
    await client.post(BASE, json=body(credential="env:DBFLEET_CRED_T_PW"), headers=auth["admin"])
    for url in (BASE, f"{BASE}/pg-a", f"{BASE}:export", f"{BASE}:export?format=csv"):
        r = await client.get(url, headers=auth["admin"])
        assert r.status_code == 200 and SECRET not in r.text and "env:DBFLEET_CRED_T_PW" in r.text


YAML = """\
instances:
  - {name: y1, engine: postgres, host: h1, tags: {env: prod}}
  - {name: y2, engine: mysql, host: h2, port: 3307}
"""
CSV = "name,engine,host,port,tags\nc1,postgres,h1,,env=prod;team=x\nc2,oracle,h2,1522,\n"


@pytest.mark.parametrize("content_type, text, names", [
    ("application/yaml", YAML, ["y1", "y2"]),
    ("text/csv", CSV, ["c1", "c2"]),
])
async def test_import_is_idempotent_and_audited(client, auth, clean_store, content_type, text, names):
    headers = {**auth["admin"], "Content-Type": content_type}
    r = await client.post(f"{BASE}:import", content=text, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"created": names, "updated": [], "unchanged": []}
    r = await client.post(f"{BASE}:import", content=text, headers=headers)
    assert r.json() == {"created": [], "updated": [], "unchanged": names}
    assert [a[1:] for a in await audit(clean_store)] == [("inventory.import", n) for n in names]


async def test_import_format_query_overrides_content_type(client, auth):
    r = await client.post(f"{BASE}:import?format=csv", content=CSV, headers=auth["admin"])
    assert r.status_code == 200 and r.json()["created"] == ["c1", "c2"]


@pytest.mark.parametrize("content_type, text, expected", [
    ("application/yaml", YAML + "  - {name: y3, engine: db2, host: h}\n", "line 4: engine"),
    ("application/yaml", YAML + "  - {name: y1, engine: postgres, host: h}\n", "line 4: name: duplicate name 'y1'"),
    ("application/yaml", "instances: [", "line 1: not valid YAML"),
    ("text/csv", CSV + "c3,postgres,h,70000,\n", "row 4: port"),
    ("text/csv", CSV + "c3,postgres,h,,env\n", "row 4: tags"),
    ("text/csv", "name,engine,host,colour\nz,postgres,h,red\n", "row 1: unknown column(s) colour"),
    ("application/yaml", YAML + "  - {name: y3, engine: postgres, host: h, credential: 'env:HOME'}\n",
     "line 4: credential: env: references must name a variable starting with DBFLEET_CRED_"),
    ("text/csv", "name,engine,host,credential\nc3,postgres,h,file:/etc/passwd\n",
     "row 2: credential: file: references must point inside /var/run/secrets/dbfleet"),
])
async def test_a_bad_import_writes_nothing(client, auth, clean_store, content_type, text, expected):
    await client.post(BASE, json=body("keep"), headers=auth["admin"])
    before = await count(clean_store, "select count(*) from audit_log")
    r = await client.post(f"{BASE}:import", content=text, headers={**auth["admin"], "Content-Type": content_type})
    assert r.status_code == 422
    errors = [e["msg"] for e in r.json()["errors"]]
    assert any(e.startswith(expected) for e in errors), errors
    assert await count(clean_store, "select count(*) from instances") == 1
    assert await count(clean_store, "select count(*) from audit_log") == before


async def test_export_round_trips_through_import(client, auth, clean_store):
    headers = {**auth["admin"], "Content-Type": "application/yaml"}
    await client.post(f"{BASE}:import", content=YAML, headers=headers)
    await client.post(BASE, json=body("z", overrides={"health": {"thresholds": {"connections_warning_pct": 70}}},
                                      enabled=False), headers=auth["admin"])
    for fmt, ctype in (("yaml", "application/yaml"), ("csv", "text/csv")):
        r = await client.get(f"{BASE}:export", params={"format": fmt}, headers=auth["viewer"])
        assert r.status_code == 200 and ctype in r.headers["content-type"]
        again = await client.post(f"{BASE}:import", content=r.text, headers={**auth["admin"], "Content-Type": ctype})
        got = again.json()
        assert (got["created"], got["updated"], sorted(got["unchanged"])) == ([], [], ["y1", "y2", "z"]), r.text
        # YAML is the servers form: each instance under the server at its endpoint, all unchanged.
        assert fmt == "csv" or (got["servers"]["created"], got["servers"]["updated"]) == ([], []), r.text
    assert (await client.get(f"{BASE}:export?format=json", headers=auth["viewer"])).status_code == 422


async def test_deleting_an_instance_resolves_its_alerts(client, auth, clean_store):
    """Its findings go with it (cascade); the alerts they raised must be told, or they fire forever."""
    from datetime import datetime, timezone

    from app.findings import InstanceRef, record_run
    from collectors.spec import Finding, Result, Severity

    inst = (await client.post(BASE, json=body(tags={"env": "prod"}), headers=auth["admin"])).json()
    ref = InstanceRef(inst["id"], "pg-a", "postgres", {"env": "prod"})
    found = [Finding("xid_wraparound", "app", Severity.critical, "old"), Finding("unused_index", "i", Severity.info, "x")]
    async with clean_store.raw() as conn:
        await record_run(conn, ref, "health", Result(findings=found), datetime.now(timezone.utc), 1.0)
        await record_run(conn, ref, "health", Result(findings=found[:1]), datetime.now(timezone.utc), 1.0)
    assert (await client.delete(f"{BASE}/pg-a", headers=auth["admin"])).status_code == 204
    async with clean_store.raw() as conn:
        rows = await conn.fetch("select fingerprint, status, ends_at, labels from outbox order by id")
    last = {}
    for r in rows:
        last[r["fingerprint"]] = r
    assert {r["status"] for r in last.values()} == {"resolved"}
    assert len(last) == 2 and all(r["ends_at"] is not None for r in last.values())
    assert [r["labels"]["instance"] for r in rows].count("pg-a") == len(rows)
    assert await count(clean_store, "select count(*) from findings") == 0


async def test_disabling_an_instance_resolves_its_findings_and_alerts(client, auth, clean_store):
    """Sweeps skip a disabled instance, so nothing else would ever resolve what it had open."""
    from datetime import datetime, timezone

    from app.findings import InstanceRef, record_run
    from collectors.spec import Finding, Result, Severity

    inst = (await client.post(BASE, json=body(), headers=auth["admin"])).json()
    ref = InstanceRef(inst["id"], "pg-a", "postgres", {})
    async with clean_store.raw() as conn:
        await record_run(conn, ref, "health", Result(findings=[Finding("xid_wraparound", "app", Severity.critical, "old")]),
                         datetime.now(timezone.utc), 1.0)
    r = await client.patch(f"{BASE}/pg-a", json={"enabled": False}, headers=auth["admin"])
    assert r.status_code == 200 and r.json()["enabled"] is False
    async with clean_store.raw() as conn:
        finding = await conn.fetchrow("select state, state_note from findings")
        outbox = await conn.fetch("select status from outbox order by id")
    assert tuple(finding) == ("resolved", "instance disabled")
    assert [r["status"] for r in outbox] == ["firing", "resolved"]


async def test_each_instance_names_its_server_and_mysql_entries_carry_their_schemas(client, auth, clean_store):
    r = await client.post(BASE, json=body("shop", engine="mariadb", host="DB2.internal", schemas=["shop", "shop_old"]),
                          headers=auth["admin"])
    assert r.status_code == 201, r.text
    assert (r.json()["server"], r.json()["dbname"], r.json()["schemas"]) == ("DB2.internal:3306", "shop",
                                                                            ["shop", "shop_old"])
    # Another schema entry on the same server (host case aside; MySQL and MariaDB alike) shares it.
    r = await client.post(BASE, json=body("clean", engine="mysql", host="db2.internal", dbname="clean"),
                          headers=auth["admin"])
    assert r.json()["server"] == "DB2.internal:3306"
    assert [i["name"] for i in (await client.get(BASE, params={"server": "DB2.internal:3306"},
                                                 headers=auth["viewer"])).json()] == ["clean", "shop"]
    # Moving an instance to another endpoint moves it to that server.
    r = await client.patch(f"{BASE}/clean", json={"host": "db3.internal"}, headers=auth["admin"])
    assert r.json()["server"] == "db3.internal:3306"
    await client.post(BASE, json=body("pg"), headers=auth["admin"])
    r = await client.patch(f"{BASE}/pg", json={"schemas": ["a", "b"]}, headers=auth["admin"])
    assert r.status_code == 422 and ["body", "schemas"] in [e["loc"] for e in r.json()["errors"]]
