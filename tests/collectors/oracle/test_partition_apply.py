"""Oracle partition plan -> apply on recorded catalog rows (no Oracle can run here).

plan_live reads recorded DBA_PART_TABLES / DBA_TAB_PARTITIONS rows (HIGH_VALUE as its LONG text)
through a tiny session; apply_on runs against the same session, which changes its rows the way
Oracle would for ADD / SPLIT / DROP PARTITIONS, so the re-plan before each statement and the
idempotence of a second apply are tested. apply itself is tested up to a real connection attempt
(a closed loopback port, python-oracledb thin). Nothing here proves the DDL against a live server.
"""

from __future__ import annotations

import copy
import re
import socket
from datetime import datetime

import oracledb
import pytest
import sqlglot
from sqlglot import exp

from collectors.engines.base import Target
from collectors.engines.oracle import ddl_lock_timeout_s
from collectors.oracle.partition_apply import (
    NotRangePartitioned,
    apply,
    apply_on,
    plan_live,
)
from collectors.oracle import partitions
from collectors.oracle.partitions import ARCHIVES_SQL, SQL

from .conftest import context, load
from .test_sql_parses import DDL_SHAPES

NOW = datetime.fromisoformat(load("planted")["now"])
POLICIES = [{"table": "app.*", "premake": 4, "retention": "12 months"}]
PASSWORD = "0racle;Secret\"pw"
_Q = r'"((?:[^"]|"")+)"'
_TABLE = re.compile(rf'^ALTER TABLE {_Q}\.{_Q} ')
_ADD = re.compile(rf'ADD PARTITION {_Q} VALUES LESS THAN \(\w+ ?\(?\'([^\']+)\'')
_SPLIT = re.compile(rf'SPLIT PARTITION {_Q} AT \(\w+ ?\(?\'([^\']+)\'.*INTO \(PARTITION {_Q},')
_DROP = re.compile(rf'DROP PARTITIONS {_Q} UPDATE INDEXES$')
_CREATE = re.compile(rf'^CREATE TABLE {_Q}\.{_Q} FOR EXCHANGE WITH TABLE {_Q}\.{_Q}$')
_EXCHANGE = re.compile(rf'EXCHANGE PARTITION {_Q} WITH TABLE {_Q}\.{_Q} ')
_PROBE = re.compile(rf'^SELECT 1 AS found FROM {_Q}\.{_Q}(?: PARTITION \({_Q}\))? WHERE ROWNUM = 1$')


def _high_value(bound: str) -> str:
    return f"TO_DATE(' {bound}', 'SYYYY-MM-DD HH24:MI:SS', 'NLS_CALENDAR=GREGORIAN')"


class RecordedCatalog:
    """Answers the partitions SELECT from recorded rows (NUM_ROWS taken as the true row count), the
    archive-table lookup and the emptiness probes; ADD / SPLIT / DROP PARTITIONS, CREATE TABLE ... FOR
    EXCHANGE and EXCHANGE PARTITION change the rows as Oracle would."""

    def __init__(self, rows: list[dict], fail_on: str | None = None, error: str = "ORA-04021: timeout",
                 archives: dict[tuple[str, str], int] | None = None):
        self.rows = copy.deepcopy(rows)
        self.archives = dict(archives or {})   # (owner, table) -> rows
        self.fail_on, self.error = fail_on, error
        self.fetched: list[str] = []
        self.executed: list[str] = []

    async def fetch(self, sql: str, *args) -> list[dict]:
        self.fetched.append(sql)
        if sql == ARCHIVES_SQL:
            owner, prefix = args
            return [{"table_name": t} for o, t in self.archives if o == owner and t.startswith(prefix.rstrip("%"))]
        if m := _PROBE.match(sql):
            return [{"found": 1}] if self._rows_in(*(g and g.replace('""', '"') for g in m.groups())) else []
        assert sql == SQL and not args
        return copy.deepcopy(self.rows)

    def _rows_in(self, owner: str, table: str, partition: str | None) -> int:
        if partition is None:
            return self.archives[(owner, table)]
        return next(r["num_rows"] for r in self.rows
                    if (r["owner"], r["table_name"], r["partition_name"]) == (owner, table, partition))

    async def execute(self, sql: str) -> None:
        if self.fail_on and self.fail_on in sql:
            raise oracledb.DatabaseError(self.error)
        self.executed.append(sql)
        if m := _CREATE.match(sql):
            archive = tuple(n.replace('""', '"') for n in m.groups()[:2])
            if archive in self.archives:
                raise oracledb.DatabaseError("ORA-00955: name is already used by an existing object")
            self.archives[archive] = 0
            return
        owner, table = (n.replace('""', '"') for n in _TABLE.match(sql).groups())
        if m := _EXCHANGE.search(sql):
            part = next(r for r in self.rows
                        if (r["owner"], r["table_name"], r["partition_name"]) == (owner, table, m.group(1)))
            archive = (m.group(2), m.group(3))
            self.archives[archive], part["num_rows"] = part["num_rows"], self.archives[archive]
            return
        mine = sorted((r for r in self.rows if (r["owner"], r["table_name"]) == (owner, table)),
                      key=lambda r: r["partition_position"])
        if m := _ADD.search(sql):
            self._insert(mine, len(mine), m.group(1), m.group(2))
        elif m := _SPLIT.search(sql):
            self._insert(mine, len(mine) - 1, m.group(3), m.group(2))
        elif m := _DROP.search(sql):
            self.rows = [r for r in self.rows if not (r in mine and r["partition_name"] == m.group(1))]
            self._renumber(owner, table)

    def _insert(self, mine: list[dict], at: int, name: str, bound: str) -> None:
        self.rows.append({**mine[0], "partition_name": name.replace('""', '"'), "partition_position": at + 0.5,
                          "high_value": _high_value(bound), "num_rows": 0})
        self._renumber(mine[0]["owner"], mine[0]["table_name"])

    def _renumber(self, owner: str, table: str) -> None:
        mine = sorted((r for r in self.rows if (r["owner"], r["table_name"]) == (owner, table)),
                      key=lambda r: r["partition_position"])
        for i, r in enumerate(mine, 1):
            r["partition_position"] = i

    def partitions(self, table: str = "EVENTS") -> list[str]:
        return [r["partition_name"] for r in sorted(self.rows, key=lambda r: r["partition_position"])
                if r["table_name"] == table]


def _planted_rows() -> list[dict]:
    return load("planted")["partitions"]["rows"]


def _without_maxvalue(rows: list[dict]) -> list[dict]:
    return [{**r, "table_name": "ORDERS"} for r in rows if r["table_name"] == "EVENTS" and r["partition_name"] != "PMAX"]


def _parses(sql: str) -> None:
    trees = sqlglot.parse(sql, read="oracle", error_level=sqlglot.ErrorLevel.RAISE)
    assert len(trees) == 1, sql
    if isinstance(trees[0], exp.Command):
        assert any(shape.match(sql) for shape in DDL_SHAPES), sql


async def test_plan_live_on_recorded_catalog_rows():
    catalog = RecordedCatalog(_planted_rows())
    plan = await plan_live(catalog, POLICIES, NOW)
    assert catalog.fetched == [SQL]
    assert [(s.action, s.partition) for s in plan] == [
        ("split_partition", "P_20250701"), ("split_partition", "P_20250801"), ("split_partition", "P_20250901"),
        ("split_partition", "P_20251001"), ("drop_partition", "P_20240101"), ("drop_partition", "P_20240201")]
    assert plan[0].sql == ('ALTER TABLE "APP"."EVENTS" SPLIT PARTITION "PMAX" AT (TO_DATE(\'2025-08-01 00:00:00\', '
                           '\'YYYY-MM-DD HH24:MI:SS\')) INTO (PARTITION "P_20250701", PARTITION "PMAX") UPDATE INDEXES')
    assert plan[-1].sql == 'ALTER TABLE "APP"."EVENTS" DROP PARTITIONS "P_20240201" UPDATE INDEXES'
    assert all(s.table == "APP.EVENTS" and s.why for s in plan)


async def test_interval_tables_get_retention_but_no_premake():
    rows = [r for r in _planted_rows() if r["table_name"] == "AUDIT_TRAIL"]
    # 100 days before NOW, P_FIRST (up to 2025-01-01) is expired, but the range section must keep it.
    plan = await plan_live(RecordedCatalog(rows), [{"table": "APP.*", "premake": 12, "retention_days": 100}], NOW)
    assert plan == []
    rows.insert(1, {**rows[0], "partition_name": "SYS_P1000", "partition_position": 1.5,
                    "high_value": "TIMESTAMP' 2025-02-01 00:00:00'"})
    plan = await plan_live(RecordedCatalog(rows), [{"table": "APP.*", "premake": 12, "retention_days": 100}], NOW)
    assert [(s.action, s.partition) for s in plan] == [("drop_partition", "SYS_P1000")]


async def test_every_planned_statement_parses_as_oracle():
    rows = _planted_rows() + _without_maxvalue(_planted_rows())
    plan = await plan_live(RecordedCatalog(rows), POLICIES, NOW)
    assert {s.action for s in plan} == {"split_partition", "add_partition", "drop_partition"}
    for s in plan:
        _parses(s.sql)


KEEP = [{**POLICIES[0], "keep_table": True}]
EXPIRED = {"P_20240101": 410_000, "P_20240201": 388_000}   # planted rows: older than 12 months on NOW


def _retention(plan) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in plan:
        if s.action not in ("add_partition", "split_partition"):
            out.setdefault(s.partition, []).append(s.action)
    return out


def _events_rows(catalog) -> int:
    return sum(r["num_rows"] for r in catalog.rows if r["table_name"] == "EVENTS")


async def test_keep_table_plans_no_drop():
    plan = await plan_live(RecordedCatalog(_planted_rows()), KEEP, NOW)
    assert plan and "drop_partition" not in {s.action for s in plan}


async def test_keep_table_exchanges_every_expired_partition_into_an_archive_before_dropping_it():
    catalog = RecordedCatalog(_planted_rows())
    plan = await plan_live(catalog, KEEP, NOW)
    assert _retention(plan) == {p: ["create_archive", "exchange_partition", "drop_emptied_partition"] for p in EXPIRED}
    keep = [s.sql for s in plan if s.partition == "P_20240101"]
    assert keep == ['CREATE TABLE "APP"."EVENTS_P_20240101" FOR EXCHANGE WITH TABLE "APP"."EVENTS"',
                    'ALTER TABLE "APP"."EVENTS" EXCHANGE PARTITION "P_20240101" WITH TABLE "APP"."EVENTS_P_20240101" '
                    'EXCLUDING INDEXES WITHOUT VALIDATION UPDATE GLOBAL INDEXES',
                    'ALTER TABLE "APP"."EVENTS" DROP PARTITIONS "P_20240101" UPDATE INDEXES']
    for s in plan:
        _parses(s.sql)
    total = _events_rows(catalog)
    outcomes = await apply_on(catalog, plan, NOW)
    assert [(o.status, o.message) for o in outcomes if o.status != "ok"] == []
    assert catalog.archives == {("APP", f"EVENTS_{p}"): n for p, n in EXPIRED.items()}
    assert not set(EXPIRED) & set(catalog.partitions())
    assert _events_rows(catalog) + sum(catalog.archives.values()) == total
    assert await plan_live(catalog, KEEP, NOW) == []


async def test_an_empty_archive_left_by_an_earlier_apply_is_used_not_recreated():
    catalog = RecordedCatalog(_planted_rows(), archives={("APP", "EVENTS_P_20240101"): 0})
    plan = await plan_live(catalog, KEEP, NOW)
    assert _retention(plan)["P_20240101"] == ["exchange_partition", "drop_emptied_partition"]


async def test_an_archive_table_holding_rows_is_never_exchanged_into(planted):
    catalog = RecordedCatalog(_planted_rows(), archives={("APP", "EVENTS_P_20240101"): 3})
    plan = await plan_live(catalog, KEEP, NOW)
    assert set(_retention(plan)) == {"P_20240201"}
    assert {o.status for o in await apply_on(catalog, plan, NOW)} == {"ok"}
    assert catalog.archives[("APP", "EVENTS_P_20240101")] == 3 and "P_20240101" in catalog.partitions()
    # The collector's run hook probes the same way and says why that partition stays.
    result = await partitions.run(RecordedCatalog(_planted_rows(), archives={("APP", "EVENTS_P_20240101"): 3}),
                                  context(planted, "partitions", keep_table=True))
    [due] = [f for f in result.findings if f.check == "partition_retention_due" and f.object == "APP.EVENTS"]
    assert due.details["refused"]["P_20240101"].startswith("APP.EVENTS_P_20240101 already exists and holds rows")
    assert "Not done: APP.EVENTS_P_20240101 already exists" in due.recommendation


async def test_a_drop_is_refused_while_the_partition_still_holds_rows():
    catalog = RecordedCatalog(_planted_rows())
    plan = await plan_live(catalog, KEEP, NOW)
    drop = next(s for s in plan if s.action == "drop_emptied_partition" and s.partition == "P_20240101")
    [outcome] = await apply_on(catalog, [drop], NOW)
    assert outcome.status == "failed" and "still holds rows" in outcome.message
    assert "P_20240101" in catalog.partitions() and catalog.executed == []


@pytest.mark.parametrize("raw, drops", [("false", True), ("no", True), (0, True), ("true", False), (True, False)])
async def test_keep_table_is_read_as_postgresql_reads_it(raw, drops):
    plan = await plan_live(RecordedCatalog(_planted_rows()), [{**POLICIES[0], "keep_table": raw}], NOW)
    assert ("drop_partition" in {s.action for s in plan}) == drops


@pytest.mark.parametrize("table", ["APP.EVENTS", "app.events"])
async def test_one_table_by_name(table):
    plan = await plan_live(RecordedCatalog(_planted_rows() + _without_maxvalue(_planted_rows())), POLICIES, NOW, table=table)
    assert plan and {s.table for s in plan} == {"APP.EVENTS"}


@pytest.mark.parametrize("table", ["APP.NOPE", "EVENTS", "APP.EVENTS' OR '1'='1", 'APP."EVENTS"'])
async def test_a_table_not_range_partitioned_is_refused(table):
    catalog = RecordedCatalog(_planted_rows())
    with pytest.raises(NotRangePartitioned, match="RANGE-partitioned table on a DATE/TIMESTAMP column"):
        await plan_live(catalog, POLICIES, NOW, table=table)
    assert catalog.fetched == [SQL], "the name never reaches the server"


async def test_hostile_names_from_the_catalog_are_double_quoted():
    hostile = 'EV"; DROP TABLE X --'
    rows = [{**r, "table_name": hostile} for r in _without_maxvalue(_planted_rows())]
    plan = await plan_live(RecordedCatalog(rows), POLICIES, NOW)
    assert plan[0].sql.startswith('ALTER TABLE "APP"."EV""; DROP TABLE X --" ADD PARTITION')
    for s in plan:
        assert len(sqlglot.parse(s.sql, read="oracle")) == 1, s.sql


async def test_apply_runs_the_plan_and_a_second_apply_changes_nothing():
    catalog = RecordedCatalog(_planted_rows())
    plan = await plan_live(catalog, POLICIES, NOW)
    outcomes = await apply_on(catalog, plan, NOW)
    assert [o.status for o in outcomes] == ["ok"] * len(plan)
    assert catalog.executed == [s.sql for s in plan]
    assert catalog.partitions() == ["P_20250501", "P_20250601", "P_20250701", "P_20250801", "P_20250901",
                                    "P_20251001", "PMAX"]
    again = await apply_on(catalog, plan, NOW)
    assert {o.status for o in again} == {"skipped"} and len(catalog.executed) == len(plan)
    assert await plan_live(catalog, POLICIES, NOW) == []


async def test_a_catalog_changed_since_the_plan_skips_what_is_already_there():
    catalog = RecordedCatalog(_planted_rows())
    plan = await plan_live(catalog, POLICIES, NOW)
    await catalog.execute('ALTER TABLE "APP"."EVENTS" DROP PARTITIONS "P_20240101" UPDATE INDEXES')
    outcomes = await apply_on(catalog, plan, NOW)
    assert [(o.statement.partition, o.status) for o in outcomes if o.status != "ok"] == [("P_20240101", "skipped")]


async def test_a_failure_stops_its_table_and_the_others_go_on():
    rows = _planted_rows() + _without_maxvalue(_planted_rows())
    catalog = RecordedCatalog(rows, fail_on='"EVENTS" SPLIT PARTITION "PMAX" AT (TO_DATE(\'2025-09',
                              error=f"ORA-04021: timeout occurred while waiting to lock object; {PASSWORD}")
    plan = await plan_live(catalog, POLICIES, NOW)
    outcomes = await apply_on(catalog, plan, NOW, secret=PASSWORD)
    events = [o.status for o in outcomes if o.statement.table == "APP.EVENTS"]
    assert events == ["ok", "failed", "skipped", "skipped", "skipped", "skipped"]
    failed = next(o for o in outcomes if o.status == "failed")
    assert "ORA-04021" in failed.message and PASSWORD not in failed.message
    assert {o.status for o in outcomes if o.statement.table == "APP.ORDERS"} == {"ok"}


@pytest.mark.parametrize(("ms", "seconds"), [(0, 0), (500, 1), (2000, 2), (2001, 3)])
def test_ddl_lock_timeout_rounds_up_to_whole_seconds(ms, seconds):
    assert ddl_lock_timeout_s(ms) == seconds


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_apply_against_a_closed_port_fails_each_statement_cleanly():
    plan = await plan_live(RecordedCatalog(_planted_rows()), POLICIES, NOW)
    target = Target("ora1", "oracle", "127.0.0.1", _closed_port(), dbname="ORCLPDB1", user="dbfleet", password=PASSWORD)
    outcomes = await apply(target, plan, lock_timeout_ms=500)
    assert len(outcomes) == len(plan) and {o.status for o in outcomes} == {"failed"}
    assert all("DPY-6005" in o.message and PASSWORD not in o.message for o in outcomes)


async def test_the_app_drives_oracle_through_its_maintenance_spec():
    from collectors.registry import maintenance_for

    catalog = RecordedCatalog(_planted_rows())
    plan = await maintenance_for("oracle").plan(catalog, POLICIES, NOW, "app.events")
    assert plan == await plan_live(catalog, POLICIES, NOW)
    target = Target("ora1", "oracle", "127.0.0.1", _closed_port(), dbname="ORCLPDB1", user="dbfleet", password=PASSWORD)
    outcomes = await maintenance_for("oracle").apply(target, plan[:2], 500)
    assert [(o.status, o.sql) for o in outcomes] == [("failed", s.sql) for s in plan[:2]]


@pytest.mark.parametrize(("pmax_rows", "splits"), [(0, 6), (None, 6), (1200, 0)])
async def test_no_split_at_a_past_bound_of_a_maxvalue_partition_holding_rows(pmax_rows, splits):
    """Last bound 2025-05-01 on 2025-06-15: SPLIT of PMAX at 2025-06-01 would rewrite May's rows."""
    rows = [r for r in _planted_rows() if r["table_name"] == "EVENTS" and r["partition_position"] in (1, 2, 5)]
    rows[1] = {**rows[1], "high_value": _high_value("2025-05-01 00:00:00")}
    rows[0] = {**rows[0], "high_value": _high_value("2025-04-01 00:00:00")}
    rows[2] = {**rows[2], "num_rows": pmax_rows}
    plan = await plan_live(RecordedCatalog(rows), [{"table": "*", "premake": 4}], NOW)
    assert sum(s.action == "split_partition" for s in plan) == splits
