"""The partition-maintenance registry: every SQL engine family registers one MaintenanceSpec, and
its table-glob rule is the one its planner uses."""

from __future__ import annotations

import pytest

from collectors.common.maintenance import Outcome, PlannedStatement
from collectors.registry import maintenance_for


@pytest.mark.parametrize(("engine", "family"), [
    ("postgres", "postgres"), ("aurora-postgres", "postgres"), ("mysql", "mysql"), ("mariadb", "mysql"),
    ("aurora-mysql", "mysql"), ("sqlserver", "sqlserver"), ("oracle", "oracle"),
])
def test_every_sql_engine_has_partition_maintenance(engine: str, family: str):
    spec = maintenance_for(engine)
    assert spec is not None and spec.engine == family


@pytest.mark.parametrize("engine", ["aws", "azure", "db2"])
def test_engines_without_partition_maintenance_have_none(engine: str):
    assert maintenance_for(engine) is None


@pytest.mark.parametrize(("engine", "table", "policy", "names"), [
    ("postgres", "public.events", {"table": "public.*"}, True),
    ("postgres", "public.events", {}, True),                      # no table: every table
    ("postgres", "Public.Events", {"table": "public.*"}, False),   # PostgreSQL names keep their case
    ("mysql", "shop.orders", {"table": "shop.orders"}, True),
    ("mysql", "shop.orders", {}, False),                          # no '*' default on MySQL
    ("sqlserver", "DBO.Events", {"table": "dbo.events"}, True),   # SQL Server and Oracle fold case
    ("oracle", "APP.EVENTS", {"table": "app.*"}, True),
    ("oracle", "APP.EVENTS", {"table": "other.*"}, False),
])
def test_names_table_follows_the_engine_planner(engine: str, table: str, policy: dict, names: bool):
    assert maintenance_for(engine).names_table(table, policy) is names


def test_an_outcome_shows_its_statement_sql():
    stmt = PlannedStatement("drop_partition", "app", "events", "P2024", "ALTER TABLE ...", "retention", None)
    assert Outcome(stmt, "ok").sql == "ALTER TABLE ..." and stmt.table == "app.events"
    assert stmt.key == ("drop_partition", "P2024", "ALTER TABLE ...")
