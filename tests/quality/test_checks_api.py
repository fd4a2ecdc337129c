"""/api/v1/checks and /api/v1/freshness: viewers read, operators define and delete; a bad SQL
text is a 422 naming it, a scan refusal a 409 with the index, a duplicate name a 409; freshness
groups tables by source with lag, SLA and state."""

from __future__ import annotations

from app.quality.runner import QualityRunner
from tests.conftest import bearer
from tests.quality.conftest import register

BASE = "/api/v1/checks"
FRESH = {"name": "orders_fresh", "kind": "freshness", "tables": ["public.orders"], "loaded_at_field": "loaded_at",
         "labels": {"source": "shop", "pipeline": "orders_etl"}}


async def test_define_read_list_and_delete(client, keys, qstore, settings, pg_db):
    db = await pg_db("create table orders (id int, loaded_at timestamptz); "
                     "insert into orders values (1, now() - interval '20 minutes')")
    await register(qstore, "shop-db", "postgres", db)
    viewer, operator = bearer(keys["viewer"]), bearer(keys["operator"])
    assert (await client.post(BASE, json=FRESH, headers=viewer)).status_code == 403
    r = await client.post(BASE, json=FRESH, headers=operator)
    assert r.status_code == 201, r.text
    assert r.json()["definition"]["error_after"] == {"count": 15, "period": "minute"} and r.json()["origin"] == "api"
    assert (await client.post(BASE, json=FRESH, headers=operator)).status_code == 409

    runner = QualityRunner(qstore, settings)
    try:
        await runner.run()
    finally:
        await runner.close()
    got = (await client.get(f"{BASE}/orders_fresh", headers=viewer)).json()
    assert [(x["instance"], x["object"], x["state"]) for x in got["results"]] == [("shop-db", "public.orders", "error")]
    assert [c["name"] for c in (await client.get(BASE, params={"kind": "freshness"}, headers=viewer)).json()] == [
        "orders_fresh"]
    assert (await client.get(BASE, params={"kind": "volume"}, headers=viewer)).json() == []

    [source] = (await client.get("/api/v1/freshness", headers=viewer)).json()
    assert (source["source"], source["state"]) == ("shop", "error")
    [table] = source["tables"]
    assert table["table_name"] == "public.orders" and table["sla_seconds"] == 900 and table["lag_seconds"] > 1100
    assert table["pipeline"] == "orders_etl"
    assert (await client.get("/api/v1/freshness", params={"source": "erp"}, headers=viewer)).json() == []

    assert (await client.delete(f"{BASE}/orders_fresh", headers=viewer)).status_code == 403
    assert (await client.delete(f"{BASE}/orders_fresh", headers=operator)).status_code == 200
    assert (await client.get(f"{BASE}/orders_fresh", headers=viewer)).status_code == 404
    async with qstore.raw() as conn:
        # The breach the check had open is resolved with it, through the outbox like any finding.
        assert await conn.fetchval("select state from findings where findings.check = 'freshness_sla_breached'") == \
            "resolved"
        assert await conn.fetchval("select count(*) from outbox where status = 'resolved'") == 1


async def test_bad_definitions_are_refused_and_nothing_is_stored(client, keys, qstore, pg_db):
    db = await pg_db("create table orders (id int, loaded_at timestamptz); "
                     "insert into orders select g, now() from generate_series(1, 120000) g; analyze orders")
    await register(qstore, "shop-db", "postgres", db)
    operator = bearer(keys["operator"])
    r = await client.post(BASE, json={**FRESH, "filter": "1=1; drop table orders"}, headers=operator)
    assert r.status_code == 422 and "one statement" in r.json()["detail"]
    r = await client.post(BASE, json={"name": "w", "kind": "assertion", "query": "delete from orders"}, headers=operator)
    assert r.status_code == 422 and "DELETE" in r.json()["detail"]
    r = await client.post(BASE, json={**FRESH, "warn_after": {"count": 2, "period": "hour"}, "error_after": {"count": 1, "period": "hour"}}, headers=operator)
    assert r.status_code == 422 and "longer than error_after" in r.text
    r = await client.post(BASE, json=FRESH, headers=operator)
    assert r.status_code == 409 and 'CREATE INDEX CONCURRENTLY "ix_orders_loaded_at"' in r.json()["detail"]
    assert r.json()["errors"][0]["type"] == "scan_refused"
    assert r.json()["errors"][0]["loc"] == ["body", "loaded_at_field"]
    r = await client.post(BASE, json={"name": "late", "kind": "assertion", "instances": ["shop-db"],
                                      "query": "select id from orders where loaded_at < now() - interval '1 day'"},
                          headers=operator)
    assert r.status_code == 409 and "orders" in r.json()["detail"]
    assert r.json()["errors"][0]["loc"] == ["body", "query"]
    assert (await client.get(BASE, headers=operator)).json() == []
    r = await client.post(BASE, json={**FRESH, "allow_scan": True}, headers=operator)
    assert r.status_code == 201


async def test_put_replaces_an_api_check_through_the_same_review_and_refuses_the_rest(client, keys, qstore, pg_db):
    db = await pg_db("create table orders (id int, loaded_at timestamptz, shipped_at timestamptz); "
                     "create index on orders (loaded_at); "
                     "insert into orders select g, now(), now() from generate_series(1, 120000) g; analyze orders")
    await register(qstore, "shop-db", "postgres", db)
    viewer, operator = bearer(keys["viewer"]), bearer(keys["operator"])
    assert (await client.post(BASE, json=FRESH, headers=operator)).status_code == 201
    later = {**FRESH, "error_after": {"count": 2, "period": "hour"}}
    assert (await client.put(f"{BASE}/orders_fresh", json=later, headers=viewer)).status_code == 403
    r = await client.put(f"{BASE}/orders_fresh", json=later, headers=operator)
    assert r.status_code == 200, r.text
    assert r.json()["definition"]["error_after"] == {"count": 2, "period": "hour"}
    # The replacement is reviewed like a new check: an unindexed column is refused, the old one kept.
    r = await client.put(f"{BASE}/orders_fresh", json={**FRESH, "loaded_at_field": "shipped_at"}, headers=operator)
    assert r.status_code == 409 and "shipped_at" in r.json()["detail"]
    assert r.json()["errors"][0]["loc"] == ["body", "loaded_at_field"]
    kept = (await client.get(f"{BASE}/orders_fresh", headers=viewer)).json()["definition"]
    assert (kept["loaded_at_field"], kept["error_after"]) == ("loaded_at", {"count": 2, "period": "hour"})

    r = await client.put(f"{BASE}/orders_fresh", json={**FRESH, "name": "other"}, headers=operator)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "name"]
    r = await client.put(f"{BASE}/nowhere", json={**FRESH, "name": "nowhere"}, headers=operator)
    assert r.status_code == 404 and "POST" in r.json()["detail"]
    async with qstore.raw() as conn:
        await conn.execute("update quality_checks set origin = 'config' where name = 'orders_fresh'")
        actions = await conn.fetch("select action, target from audit_log where action like 'check.%' order by id")
    r = await client.put(f"{BASE}/orders_fresh", json=later, headers=operator)
    assert r.status_code == 409 and "config" in r.json()["detail"]
    assert [tuple(a) for a in actions] == [("check.create", "orders_fresh"), ("check.replace", "orders_fresh")]
