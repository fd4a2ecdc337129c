"""SQL Server partition plan -> apply on recorded catalog rows (no SQL Server can run here).

plan_live reads the recorded sys.partition_* rows through a tiny session; apply_on runs against
the same session, which changes its rows the way SQL Server would for SPLIT / MERGE RANGE, so the
re-plan before each statement and the idempotence of a second apply are tested. apply itself is
tested up to a real connection attempt (a closed loopback port through FreeTDS). Nothing here
proves the DDL against a live server.
"""

from __future__ import annotations

import copy
import re
import socket
from datetime import datetime

import pyodbc
import pytest
import sqlglot
from sqlglot import exp

from collectors.engines.base import SessionLimits, Target
from collectors.engines.sqlserver import connection_string, writable_session_statements
from collectors.sqlserver.partition_apply import (
    BadPolicy,
    NotRangePartitioned,
    PlanRefused,
    apply,
    apply_on,
    plan_live,
)
from collectors.sqlserver import partitions
from collectors.sqlserver.partitions import ARCHIVES_SQL, BOUNDARIES_SQL, PARTITIONS_SQL

from .conftest import context, load
from .test_sql_parses import DDL_SHAPES

NOW = datetime.fromisoformat(load("planted")["now"])
POLICIES = [{"table": "dbo.*", "premake": 4, "retention": "365 days"}]
PASSWORD = "Sup3r;Secret{pw}"
_SPLIT = re.compile(r"\(\) SPLIT RANGE \('([^']+)'\)$")
_MERGE = re.compile(r"\(\) MERGE RANGE \('([^']+)'\)$")
_FUNCTION = re.compile(r"^ALTER PARTITION FUNCTION \[((?:[^\]]|\]\])+)\]")
_SWITCH = re.compile(r"^ALTER TABLE \[([^\]]+)\]\.\[([^\]]+)\] SWITCH PARTITION 1 TO \[([^\]]+)\]\.\[([^\]]+)\]$")


def _iso(literal: str) -> str:
    return datetime.strptime(literal, "%Y%m%d").isoformat() if len(literal) == 8 else literal


class RecordedCatalog:
    """Answers the catalog SELECTs from recorded rows; SPLIT / MERGE RANGE and SWITCH change the
    rows as SQL Server would (one boundary and one partition per table on the function; a MERGE
    folds the rows of the two partitions together; SWITCH needs an existing, empty target)."""

    def __init__(self, rows: list[dict], fail_on: str | None = None, error: str = "lock request time out period exceeded"):
        self.boundaries = [{k: v for k, v in r.items() if k != "kind"} for r in rows if r["kind"] == "boundary"]
        self.partitions = [{k: v for k, v in r.items() if k != "kind"} for r in rows if r["kind"] == "partition"]
        self.archives = [{k: v for k, v in r.items() if k != "kind"} for r in rows if r["kind"] == "archive"]
        self.fail_on, self.error = fail_on, error
        self.fetched: list[str] = []
        self.executed: list[str] = []

    async def fetch(self, sql: str, *args) -> list[dict]:
        assert not args, "the catalog is read without parameters"
        self.fetched.append(sql)
        rows = {BOUNDARIES_SQL: self.boundaries, PARTITIONS_SQL: self.partitions, ARCHIVES_SQL: self.archives}[sql]
        return copy.deepcopy(rows)

    async def execute(self, sql: str) -> None:
        if self.fail_on and self.fail_on in sql:
            raise pyodbc.OperationalError("HYT00", f"[HYT00] {self.error}")
        self.executed.append(sql)
        function = _FUNCTION.match(sql)
        if m := _SWITCH.match(sql):
            self._switch((m.group(1), m.group(2)), m.group(4))
        elif (m := _SPLIT.search(sql)) and function:
            self._split(function.group(1).replace("]]", "]"), _iso(m.group(1)))
        elif (m := _MERGE.search(sql)) and function:
            self._merge(function.group(1).replace("]]", "]"), _iso(m.group(1)))

    def _split(self, function: str, value: str) -> None:
        template = next(b for b in self.boundaries if b["function_name"] == function)
        self.boundaries.append({**template, "boundary_value": value})
        self._renumber(function)
        for table in {(p["schema_name"], p["table_name"]) for p in self.partitions if p["function_name"] == function}:
            last = max((p for p in self.partitions if (p["schema_name"], p["table_name"]) == table),
                       key=lambda p: p["partition_number"])
            self.partitions.append({**last, "partition_number": last["partition_number"] + 1, "rows": 0})

    def _merge(self, function: str, value: str) -> None:
        k = next(b["boundary_id"] for b in self.boundaries
                 if b["function_name"] == function and b["boundary_value"] == value)
        self.boundaries = [b for b in self.boundaries
                           if not (b["function_name"] == function and b["boundary_value"] == value)]
        self._renumber(function)
        for table in {(p["schema_name"], p["table_name"]) for p in self.partitions if p["function_name"] == function}:
            mine = sorted((p for p in self.partitions if (p["schema_name"], p["table_name"]) == table),
                          key=lambda p: p["partition_number"])
            mine[k - 1]["rows"] += mine[k]["rows"]   # boundary k separates partitions k and k + 1
            self.partitions.remove(mine[k])
            for p in mine[k + 1:]:
                p["partition_number"] -= 1

    def _switch(self, table: tuple[str, str], target: str) -> None:
        first = next(p for p in self.partitions
                     if (p["schema_name"], p["table_name"]) == table and p["partition_number"] == 1)
        if target.endswith("_dbfleet_staging"):
            first["rows"] = 0   # the staging table is truncated next
            return
        archive = next((a for a in self.archives if (a["schema_name"], a["table_name"]) == (table[0], target)), None)
        if archive is None:
            raise pyodbc.ProgrammingError("42S02", f"Invalid object name '{target}'")
        if archive["rows"]:
            raise pyodbc.ProgrammingError("42000", "ALTER TABLE SWITCH statement failed. "
                                                   "The target table must be empty")
        archive["rows"], first["rows"] = first["rows"], 0

    def rows(self, table: str = "events") -> int:
        return sum(p["rows"] for p in self.partitions if p["table_name"] == table)

    def archived(self) -> dict[str, int]:
        return {a["table_name"]: a["rows"] for a in self.archives}

    def _values(self, function: str) -> list[str]:
        return [b["boundary_value"] for b in self.boundaries if b["function_name"] == function]

    def _renumber(self, function: str) -> None:
        mine = sorted((b for b in self.boundaries if b["function_name"] == function), key=lambda b: b["boundary_value"])
        for i, b in enumerate(mine, 1):
            b["boundary_id"] = i

    def bounds(self, function: str = "pf_events_month") -> list[str]:
        return sorted(self._values(function))


def _planted_rows() -> list[dict]:
    return load("planted")["partitions"]["rows"]


def _second_table(rows: list[dict], function: str = "pf_orders_day", scheme: str = "ps_orders_day",
                  table: str = "orders") -> list[dict]:
    """A second table on its own daily function, two days ahead of NOW."""
    out = [{"kind": "boundary", "function_name": function, "boundary_value_on_right": True, "boundary_id": i,
            "value_type": "date", "boundary_value": f"2025-06-{d:02d}T00:00:00"} for i, d in enumerate((15, 16, 17), 1)]
    out += [{"kind": "partition", "schema_name": "sales", "table_name": table, "scheme_name": scheme,
             "function_name": function, "partition_number": n, "rows": 10, "filegroup_name": "PRIMARY"}
            for n in range(1, 5)]
    return rows + out


def _parses(sql: str) -> None:
    trees = sqlglot.parse(sql, read="tsql", error_level=sqlglot.ErrorLevel.RAISE)
    assert len(trees) == 1, sql
    if isinstance(trees[0], exp.Command):
        assert any(shape.match(sql) for shape in DDL_SHAPES), sql


async def test_plan_live_on_recorded_catalog_rows():
    catalog = RecordedCatalog(_planted_rows())
    plan = await plan_live(catalog, POLICIES, NOW)
    assert catalog.fetched == [BOUNDARIES_SQL, PARTITIONS_SQL, ARCHIVES_SQL]
    assert [s.action for s in plan] == ["next_used", "split_range"] * 4 + ["switch_out", "truncate_staging", "merge_range"] * 3
    assert [s.partition for s in plan if s.action == "split_range"] == [
        "2025-07-01T00:00:00", "2025-08-01T00:00:00", "2025-09-01T00:00:00", "2025-10-01T00:00:00"]
    assert plan[0].sql == "ALTER PARTITION SCHEME [ps_events_month] NEXT USED [FG_2025]"
    assert plan[1].sql == "ALTER PARTITION FUNCTION [pf_events_month]() SPLIT RANGE ('2025-07-01T00:00:00')"
    assert plan[8].sql == "ALTER TABLE [dbo].[events] SWITCH PARTITION 1 TO [dbo].[events_dbfleet_staging]"
    assert plan[10].sql == "ALTER PARTITION FUNCTION [pf_events_month]() MERGE RANGE ('2024-01-01T00:00:00')"
    assert {s.table for s in plan} == {"dbo.events"} and all(s.why for s in plan)


async def test_every_planned_statement_parses_as_tsql():
    plan = await plan_live(RecordedCatalog(_second_table(_planted_rows())), POLICIES + [{"table": "sales.*", "premake": 5}], NOW)
    assert len(plan) > 20
    for s in plan:
        _parses(s.sql)
    for statement in writable_session_statements(SessionLimits(lock_timeout_ms=1500)):
        _parses(statement)


async def test_no_policy_match_gets_the_default_premake_and_no_retention():
    plan = await plan_live(RecordedCatalog(_planted_rows()), [{"table": "other.*", "retention_days": 1}], NOW)
    assert {s.action for s in plan} == {"next_used", "split_range"} and len(plan) == 8


KEEP = [{**POLICIES[0], "keep_table": True}]


def _with_archives(rows: list[dict], *days: str, held: int = 0) -> list[dict]:
    """Archive tables the DBA created for keep_table: dbo.events_before_<day>, holding `held` rows."""
    return rows + [{"kind": "archive", "schema_name": "dbo", "table_name": f"events_before_{d}", "rows": held}
                   for d in days]


def _retention(plan) -> list[tuple[str, str]]:
    return [(s.action, s.partition[:10]) for s in plan if s.action not in ("next_used", "split_range")]


async def test_keep_table_switches_into_kept_archive_tables_then_merges():
    catalog = RecordedCatalog(_with_archives(_planted_rows(), "20240201", "20240301"))
    plan = await plan_live(catalog, KEEP, NOW)
    # Partition 1 (before 2024-01-01) is empty: its boundary merges with nothing to keep.
    assert _retention(plan) == [("merge_range", "2024-01-01"), ("switch_to_archive", "2024-02-01"),
                                ("merge_range", "2024-02-01"), ("switch_to_archive", "2024-03-01"),
                                ("merge_range", "2024-03-01")]
    assert "ALTER TABLE [dbo].[events] SWITCH PARTITION 1 TO [dbo].[events_before_20240201]" in [s.sql for s in plan]
    assert not [s for s in plan if "TRUNCATE" in s.sql or "_dbfleet_staging" in s.sql]
    for s in plan:
        _parses(s.sql)
    total = catalog.rows()
    outcomes = await apply_on(catalog, plan, NOW)
    assert [(o.status, o.message) for o in outcomes if o.status != "ok"] == []
    assert catalog.archived() == {"events_before_20240201": 410_000, "events_before_20240301": 388_000}
    assert catalog.rows() + sum(catalog.archived().values()) == total
    assert await plan_live(catalog, KEEP, NOW) == []


async def test_keep_table_without_its_archive_table_switches_nothing_and_names_the_table_to_create(planted):
    catalog = RecordedCatalog(_planted_rows())
    plan = await plan_live(catalog, KEEP, NOW)
    assert _retention(plan) == [("merge_range", "2024-01-01")]   # empty: MERGE keeps whatever it holds
    assert not [s for s in plan if "SWITCH" in s.sql or "TRUNCATE" in s.sql]
    result = partitions.transform(_planted_rows(), context(planted, "partitions", keep_table=True))
    [due] = [f for f in result.findings if f.check == "partition_retention_due"]
    assert "create [dbo].[events_before_20240201]" in due.recommendation.lower()
    # RANGE RIGHT: MERGE RANGE of 2024-01-01 leaves the merged partition 1 on partition 1's filegroup.
    assert "on filegroup FG_2023" in due.recommendation and "TRUNCATE" not in due.recommendation
    assert due.details["keep_table"] and due.details["archive_needed"] == "[dbo].[events_before_20240201]"


async def test_an_archive_table_holding_rows_is_never_switched_into(planted):
    rows = _with_archives(_planted_rows(), "20240201", "20240301", held=5)
    plan = await plan_live(RecordedCatalog(rows), KEEP, NOW)
    assert _retention(plan) == [("merge_range", "2024-01-01")]
    result = partitions.transform(rows, context(planted, "partitions", keep_table=True))
    [due] = [f for f in result.findings if f.check == "partition_retention_due"]
    assert "[dbo].[events_before_20240201] already holds 5 rows" in due.recommendation


async def test_a_stale_switch_into_a_missing_archive_is_skipped_not_run():
    catalog = RecordedCatalog(_with_archives(_planted_rows(), "20240201"))
    plan = await plan_live(catalog, KEEP, NOW)
    catalog.archives.clear()   # the DBA dropped the archive table between plan and apply
    outcomes = {(o.statement.action, o.statement.partition[:10]): o.status for o in await apply_on(catalog, plan, NOW)}
    assert outcomes[("switch_to_archive", "2024-02-01")] == "skipped" and catalog.rows() == 6_499_000


@pytest.mark.parametrize("raw, truncates", [(False, True), ("false", True), ("no", True),
                                            (True, False), ("yes", False)])
async def test_keep_table_is_read_as_postgresql_reads_it(raw, truncates):
    plan = await plan_live(RecordedCatalog(_planted_rows()), [{**POLICIES[0], "keep_table": raw}], NOW)
    assert any(s.action == "truncate_staging" for s in plan) == truncates


def test_the_sqlserver_engine_imports_no_other_engine():
    from pathlib import Path

    import collectors.sqlserver as family

    for path in Path(family.__path__[0]).glob("*.py"):
        assert not re.search(r"collectors\.(mysql|postgres|oracle)\b", path.read_text()), path.name


@pytest.mark.parametrize("table", ["dbo.events", "DBO.Events"])
async def test_one_table_by_name(table):
    rows = _second_table(_planted_rows())
    plan = await plan_live(RecordedCatalog(rows), POLICIES, NOW, table=table)
    assert plan and {s.table for s in plan} == {"dbo.events"}


@pytest.mark.parametrize("table", ["dbo.nope", "events", "dbo.events; DROP TABLE dbo.events--", "dbo.[events]"])
async def test_a_table_not_on_a_range_function_is_refused(table):
    catalog = RecordedCatalog(_planted_rows())
    with pytest.raises(NotRangePartitioned, match="date-keyed RANGE partition function"):
        await plan_live(catalog, POLICIES, NOW, table=table)
    assert catalog.fetched == [BOUNDARIES_SQL, PARTITIONS_SQL, ARCHIVES_SQL], "the name never reaches the server"


async def test_hostile_names_from_the_catalog_are_bracket_quoted():
    hostile = "ev]ents; DROP TABLE x--"
    rows = [{**r, "table_name": hostile} if r["kind"] == "partition" else r for r in _planted_rows()]
    rows = [{**r, "function_name": "pf]; SHUTDOWN--"} for r in rows]
    plan = await plan_live(RecordedCatalog(rows), POLICIES, NOW)
    truncate = next(s.sql for s in plan if s.action == "truncate_staging")
    assert truncate == "TRUNCATE TABLE [dbo].[ev]]ents; DROP TABLE x--_dbfleet_staging]"
    [tree] = sqlglot.parse(truncate, read="tsql")
    assert [t.name for t in tree.find_all(exp.Table)] == [f"{hostile}_dbfleet_staging"]
    for s in plan:
        assert len(sqlglot.parse(s.sql, read="tsql")) == 1, s.sql
    assert all("[pf]]; SHUTDOWN--]()" in s.sql for s in plan if s.action in ("split_range", "merge_range"))


async def test_apply_runs_the_plan_and_a_second_apply_changes_nothing():
    catalog = RecordedCatalog(_planted_rows())
    plan = await plan_live(catalog, POLICIES, NOW)
    outcomes = await apply_on(catalog, plan, NOW)
    assert [o.status for o in outcomes] == ["ok"] * len(plan)
    assert catalog.executed == [s.sql for s in plan]
    assert catalog.bounds() == ["2025-05-01T00:00:00", "2025-06-01T00:00:00", "2025-07-01T00:00:00",
                                "2025-08-01T00:00:00", "2025-09-01T00:00:00", "2025-10-01T00:00:00"]
    # The same statements again (a stale list): every one is re-planned away, nothing runs.
    again = await apply_on(catalog, plan, NOW)
    assert {o.status for o in again} == {"skipped"} and len(catalog.executed) == len(plan)
    assert all("no longer needed" in o.message for o in again)
    assert await plan_live(catalog, POLICIES, NOW) == []


async def test_a_catalog_changed_since_the_plan_skips_what_is_already_there():
    catalog = RecordedCatalog(_planted_rows())
    plan = await plan_live(catalog, POLICIES, NOW)
    await catalog.execute("ALTER PARTITION FUNCTION [pf_events_month]() SPLIT RANGE ('2025-07-01T00:00:00')")
    outcomes = await apply_on(catalog, plan, NOW)
    assert [o.status for o in outcomes[:2]] == ["skipped", "skipped"]
    assert {o.status for o in outcomes[2:]} == {"ok"}
    assert catalog.bounds().count("2025-07-01T00:00:00") == 1


async def test_a_failure_stops_its_table_and_the_others_go_on():
    rows = _second_table(_planted_rows())
    catalog = RecordedCatalog(rows, fail_on="[pf_events_month]() SPLIT RANGE ('2025-08-01", error=f"timeout pwd={PASSWORD}")
    plan = await plan_live(catalog, POLICIES + [{"table": "sales.*", "premake": 4}], NOW)
    outcomes = await apply_on(catalog, plan, NOW, secret=PASSWORD)
    events = [o for o in outcomes if o.statement.table == "dbo.events"]
    assert [o.status for o in events[:4]] == ["ok", "ok", "ok", "failed"]
    assert {o.status for o in events[4:]} == {"skipped"}
    assert all("earlier statement" in o.message for o in events[4:])
    assert PASSWORD not in events[3].message and "HYT00" in events[3].message
    orders = [o for o in outcomes if o.statement.table == "sales.orders"]
    assert orders and {o.status for o in orders} == {"ok"}


async def test_tables_sharing_a_function_split_once_with_next_used_on_every_scheme():
    rows = _second_table([], scheme="ps_orders_a", table="orders_a")
    rows += [{**r, "table_name": "orders_b", "scheme_name": "ps_orders_b"} for r in rows if r["kind"] == "partition"]
    plan = await plan_live(RecordedCatalog(rows), [{"table": "*", "premake": 3, "retention_days": 1}], NOW)
    assert [s.action for s in plan] == ["next_used", "next_used", "split_range"]
    assert [s.sql.split()[3] for s in plan[:2]] == ["[ps_orders_a]", "[ps_orders_b]"]
    assert not [s for s in plan if s.action == "merge_range"], "MERGE would change both tables"


def test_the_writable_session_is_not_read_only_intent_and_gives_up_on_locks():
    t = Target("mssql1", "sqlserver", "db1", 1433, user="dbfleet", password=PASSWORD, options={"odbc_driver": "FreeTDS"})
    assert "ApplicationIntent" not in connection_string(t, SessionLimits(), read_only=False)
    assert "ApplicationIntent=ReadOnly" in connection_string(t, SessionLimits())
    assert writable_session_statements(SessionLimits(lock_timeout_ms=1500)) == [
        "SET LOCK_TIMEOUT 1500", "SET DEADLOCK_PRIORITY LOW"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_apply_against_a_closed_port_fails_each_statement_cleanly():
    plan = await plan_live(RecordedCatalog(_planted_rows()), POLICIES, NOW)
    target = Target("mssql1", "sqlserver", "127.0.0.1", _closed_port(), dbname="master", user="dbfleet",
                    password=PASSWORD, tls_mode="disable", options={"odbc_driver": "FreeTDS"})
    outcomes = await apply(target, plan, lock_timeout_ms=500)
    assert len(outcomes) == len(plan) and {o.status for o in outcomes} == {"failed"}
    assert all(PASSWORD not in o.message and o.message for o in outcomes)
    if any("freetds" in d.lower() for d in pyodbc.drivers()):
        assert "cannot connect to 127.0.0.1" in outcomes[0].message


async def test_apply_of_nothing_opens_no_session():
    assert await apply(Target("x", "sqlserver", "127.0.0.1", _closed_port()), []) == []


@pytest.mark.parametrize("policy", [{"retention": "3 fortnights"}, {"premake": "many"}, {"premake": -1},
                                    {"retention_days": 0}, {"keep_table": "maybe"}])
async def test_an_unreadable_policy_is_refused_before_anything_runs(policy):
    catalog = RecordedCatalog(_planted_rows())
    with pytest.raises(BadPolicy, match="partition policy 'dbo.\\*'") as e:
        await plan_live(catalog, [{"table": "dbo.*", **policy}], NOW)
    assert isinstance(e.value, PlanRefused) and catalog.executed == []


async def test_the_app_drives_sqlserver_through_its_maintenance_spec():
    from collectors.registry import maintenance_for

    catalog = RecordedCatalog(_planted_rows())
    plan = await maintenance_for("sqlserver").plan(catalog, POLICIES, NOW, "dbo.events")
    assert plan == await plan_live(catalog, POLICIES, NOW)
    target = Target("mssql1", "sqlserver", "127.0.0.1", _closed_port(), password=PASSWORD, tls_mode="disable",
                    options={"odbc_driver": "FreeTDS"})
    outcomes = await maintenance_for("sqlserver").apply(target, plan[:2], 500)
    assert [(o.status, o.sql) for o in outcomes] == [("failed", s.sql) for s in plan[:2]]


@pytest.mark.parametrize(("last_rows", "splits"), [(0, 6), (5_000, 0)])
async def test_no_split_at_a_past_boundary_of_a_last_partition_holding_rows(last_rows, splits):
    """Bounds up to 2025-04-01 on 2025-06-15: SPLIT at 2025-05-01 would move May's rows under Sch-M."""
    rows = [r for r in _planted_rows() if r.get("boundary_id", 0) <= 3 and r.get("partition_number", 0) <= 4]
    rows = [{**r, "boundary_value": "2025-04-01T00:00:00"} if r.get("boundary_id") == 3 else r for r in rows]
    rows = [{**r, "boundary_value": "2025-03-01T00:00:00"} if r.get("boundary_id") == 2 else r for r in rows]
    rows = [{**r, "rows": last_rows} if r.get("partition_number") == 4 else r for r in rows]
    plan = await plan_live(RecordedCatalog(rows), [{"table": "*", "premake": 4}], NOW)
    assert sum(s.action == "split_range" for s in plan) == splits
