"""The console's Freshness page: signed in, a viewer sees each source, its tables' lag against
the SLA and their state; not signed in, it is sent to the sign-in page."""

from __future__ import annotations

import httpx

from app.quality.runner import QualityRunner
from tests.quality.conftest import define, register


async def test_freshness_page_lists_sources_and_tables(app, keys, qstore, settings, pg_db):
    db = await pg_db("create table orders (id int, loaded_at timestamptz); create index on orders (loaded_at);"
                     "insert into orders values (1, now() - interval '20 minutes')")
    await register(qstore, "shop-db", "postgres", db)
    await define(qstore, {"name": "orders_fresh", "kind": "freshness", "tables": ["orders"],
                          "loaded_at_field": "loaded_at", "labels": {"source": "shop<b>"}})
    runner = QualityRunner(qstore, settings)
    try:
        await runner.run()
    finally:
        await runner.close()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://test") as client:
        r = await client.get("/freshness")
        assert r.status_code == 303 and r.headers["location"] == "/signin"
        r = await client.post("/signin", data={"key": keys["viewer"]})
        assert r.status_code == 303
        page = await client.get("/freshness")
        assert page.status_code == 200
        assert "shop&lt;b&gt;" in page.text and "<b>" not in page.text.split("<main", 1)[1]
        assert "public.orders" in page.text and "15.0 min" in page.text and "state-error" in page.text
        assert '<a href="/freshness">Freshness</a>' in page.text
        other = await client.get("/freshness", params={"source": "erp"})
        assert "No freshness check has run yet" in other.text
