"""`dbfleet checks import-dbt` and `dbfleet checks run`: a dbt sources.yml with three sources
imports into the matching checks (source- and table-level freshness, a model), and `run` exits
non-zero when a check fails, zero when all pass."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from typer.testing import CliRunner

from app.cli import cli
from app.quality.dbt import checks_from_dbt, parse_mapping
from app.settings import get_settings
from tests.quality.conftest import pg_exec, register

runner = CliRunner()

SOURCES = """
version: 2
sources:
  - name: shop
    database: shopdb
    schema: public
    loaded_at_field: _loaded_at
    freshness:
      warn_after: {count: 12, period: minute}
      error_after: {count: 1, period: hour}
    meta: {pipeline: shop_cdc, owner: team-shop}
    tables:
      - name: orders
      - name: customers
        loaded_at_field: updated_at
        freshness:
          error_after: {count: 6, period: hour}
          filter: "deleted_at is null"
      - name: countries
        freshness: null
  - name: erp
    schema: erp_raw
    freshness:
      error_after: {count: 1, period: day}
    loaded_at_field: "to_timestamp(batch_epoch)"
    tables:
      - name: invoices
        identifier: inv_2024
  - name: clicks
    database: events
    schema: web
    tables:
      - name: pageviews
        loaded_at_field: ts
        freshness:
          warn_after: {count: 5, period: minute}
models:
  - name: fct_orders
    config:
      schema: marts
      loaded_at_field: built_at
      freshness:
        warn_after: {count: 2, period: hour}
"""
MAP = ["shop=shop-db", "erp_raw=erp-db", "events.web=events-db", "fct_orders=dw"]


def test_three_dbt_sources_become_freshness_checks():
    checks, problems = checks_from_dbt(yaml.safe_load(SOURCES), parse_mapping(MAP))
    assert problems == []
    by_name = {c["name"]: c for c in checks}
    assert sorted(by_name) == ["dbt_clicks_pageviews", "dbt_erp_invoices", "dbt_model_fct_orders",
                               "dbt_shop_customers", "dbt_shop_orders"]
    orders = by_name["dbt_shop_orders"]
    assert (orders["instances"], orders["tables"], orders["loaded_at_field"]) == (["shop-db"], ["public.orders"],
                                                                                 "_loaded_at")
    assert (orders["warn_after"], orders["error_after"]) == ({"count": 12, "period": "minute"},
                                                             {"count": 1, "period": "hour"})
    assert orders["labels"] == {"source": "shop", "pipeline": "shop_cdc", "owner": "team-shop"}
    # A table's freshness keys override the source's, one by one, as dbt merges them.
    customers = by_name["dbt_shop_customers"]
    assert (customers["warn_after"], customers["error_after"], customers["filter"], customers["loaded_at_field"]) == (
        {"count": 12, "period": "minute"}, {"count": 6, "period": "hour"}, "deleted_at is null", "updated_at")
    erp = by_name["dbt_erp_invoices"]
    assert (erp["instances"], erp["tables"], erp["loaded_at_field"]) == (["erp-db"], ["erp_raw.inv_2024"],
                                                                        "to_timestamp(batch_epoch)")
    assert by_name["dbt_clicks_pageviews"]["instances"] == ["events-db"]
    assert by_name["dbt_model_fct_orders"]["tables"] == ["marts.fct_orders"]


def test_an_unmapped_source_is_named():
    _, problems = checks_from_dbt(yaml.safe_load(SOURCES), parse_mapping(MAP[:2]))
    assert problems == ["source clicks: no --map for clicks or events.web or web", "models[0] fct_orders: no --map for it"]
    with pytest.raises(ValueError, match="--map 'shop'"):
        parse_mapping(["shop"])


@pytest.fixture
def env(qstore, monkeypatch):
    for k, v in {"DBFLEET_DATABASE_URL": qstore.url, "DBFLEET_WORKER__BACKOFF_BASE_S": "0",
                 "DBFLEET_WORKER__CONNECT_TIMEOUT_S": "2"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("DBFLEET_CONFIG", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def invoke(*args: str):
    return await asyncio.to_thread(runner.invoke, cli, list(args))


async def test_import_dbt_then_run_gates_on_failure(env, qstore, pg_db, tmp_path):
    db = await pg_db("create table public.orders (id int, _loaded_at timestamptz); create index on orders (_loaded_at);"
                     "insert into orders values (1, now() - interval '3 minutes');"
                     "create table public.customers (id int, updated_at timestamptz, deleted_at timestamptz);"
                     "insert into customers values (1, now() - interval '2 hours', null)")
    await register(qstore, "shop-db", "postgres", db)
    path = tmp_path / "sources.yml"
    path.write_text(SOURCES)
    r = await invoke("checks", "import-dbt", str(path), "--map", "shop=shop-db", "--map", "erp_raw=erp-db",
                     "--map", "events.web=events-db", "--map", "fct_orders=dw")
    assert r.exit_code == 0, r.output
    assert "imported 5 checks" in r.output
    async with qstore.raw() as conn:
        assert await conn.fetchval("select count(*) from quality_checks where origin = 'dbt'") == 5
    r = await invoke("checks", "run", "--select", "dbt_shop_orders")
    assert r.exit_code == 0, r.output
    # customers: 2 hours behind, warn after 12 minutes, error after 6 hours: a warning passes...
    r = await invoke("checks", "run", "--select", "source:shop")
    assert r.exit_code == 0, r.output
    # ... unless warnings fail the run, as with dbt's --warn-error.
    r = await invoke("checks", "run", "--select", "source:shop", "--warn-error")
    assert r.exit_code == 1
    await pg_exec(db, "delete from orders")
    r = await invoke("checks", "run", "--select", "dbt_shop_*")
    assert r.exit_code == 1 and "1 of 2 failed" in r.output


async def test_import_dbt_with_an_unmapped_source_imports_nothing(env, qstore, tmp_path):
    path = tmp_path / "sources.yml"
    path.write_text(SOURCES)
    r = await invoke("checks", "import-dbt", str(path), "--map", "shop=shop-db")
    assert r.exit_code == 1 and "nothing was imported" in r.output and "no --map for clicks" in r.output
    async with qstore.raw() as conn:
        assert await conn.fetchval("select count(*) from quality_checks") == 0


async def test_config_checks_are_validated_and_stored_by_run(env, qstore, pg_db, tmp_path, monkeypatch):
    db = await pg_db("create table orders (id int, loaded_at timestamptz); create index on orders (loaded_at);"
                     "insert into orders values (1, now())")
    await register(qstore, "shop-db", "postgres", db)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"checks": [{"name": "x", "kind": "freshness", "tables": ["orders"],
                                               "loaded_at_field": "loaded_at", "filter": "a = 1; drop table orders"}]}))
    monkeypatch.setenv("DBFLEET_CONFIG", str(bad))
    get_settings.cache_clear()
    r = await invoke("checks", "run")
    assert r.exit_code == 2 and "line 2: checks[0]: check x: filter must be one statement" in r.output
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"checks": [{"name": "orders_fresh", "kind": "freshness", "tables": ["orders"],
                                                "loaded_at_field": "loaded_at"}]}))
    monkeypatch.setenv("DBFLEET_CONFIG", str(good))
    get_settings.cache_clear()
    r = await invoke("checks", "run")
    assert r.exit_code == 0, r.output
    async with qstore.raw() as conn:
        assert await conn.fetchval("select origin from quality_checks where name = 'orders_fresh'") == "config"
