"""docs/grafana/dbfleet-freshness.json: every panel's SQL runs on a real store after a check run
and shows the source, its tables' lag against the SLA, and the lag history."""

from __future__ import annotations

import json
import re
from pathlib import Path

from app.quality.runner import QualityRunner
from tests.quality.conftest import define, register

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "dbfleet-freshness.json"


def _as_sql(text: str, sources: list[str]) -> str:
    """Grafana's macros and variables as the PostgreSQL data source expands them."""
    text = re.sub(r"\$__timeFilter\(([^)]+)\)", r"\1 > now() - interval '1 day'", text)
    return text.replace("$source", ", ".join(f"'{s}'" for s in sources))


async def test_every_panel_query_runs_on_the_store(qstore, settings, pg_db):
    board = json.loads(DASHBOARD.read_text())
    db = await pg_db("create table orders (id int, loaded_at timestamptz); create index on orders (loaded_at);"
                     "insert into orders values (1, now() - interval '20 minutes')")
    await register(qstore, "shop-db", "postgres", db, {"source": "shop"})
    await define(qstore, {"name": "orders_fresh", "kind": "freshness", "tables": ["orders"], "loaded_at_field": "loaded_at"})
    runner = QualityRunner(qstore, settings)
    try:
        await runner.run()
    finally:
        await runner.close()
    [var] = [v for v in board["templating"]["list"] if v["type"] == "query"]
    async with qstore.raw() as conn:
        assert [r[0] for r in await conn.fetch(var["query"])] == ["shop"]
        results = {p["title"]: [dict(r) for r in await conn.fetch(_as_sql(p["targets"][0]["rawSql"], ["shop"]))]
                   for p in board["panels"]}
    assert results["Freshness by source system"] == [{"source": "shop", "worst state": 2,
                                                      "max lag_seconds": results["Tables: lag against SLA"][0][
                                                          "lag_seconds"], "tables": 1}]
    [row] = results["Tables: lag against SLA"]
    assert (row["table"], row["state"], row["sla_seconds"]) == ("public.orders", "error", 900)
    [point] = results["Lag by source system (worst table)"]
    assert point["metric"] == "shop" and point["lag_seconds"] > 1100
    for panel in board["panels"]:
        assert panel["datasource"]["type"] == "grafana-postgresql-datasource" and panel["gridPos"]["w"] <= 24
