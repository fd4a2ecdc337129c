"""Partition parsing, interval inference, the pure DDL plan and the findings, on recorded rows."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from collectors.mysql import partitions
from collectors.mysql.partition_plan import (
    Interval,
    KeepFacts,
    Partition,
    Policy,
    RangeTable,
    infer_interval,
    parse_bound,
    plan_table,
)

from .conftest import ctx_for, recorded

MYSQL8_NOW = datetime(2024, 3, 1, 10, 0, tzinfo=timezone.utc)
MARIADB_NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def _tables(data):
    return {t.name: t for t in partitions.tables_from(data["partitions"])}


@pytest.mark.parametrize("raw, func, expected", [
    ("739282", "to_days", datetime(2024, 2, 1)),
    ("1706745600", "unix_timestamp", datetime(2024, 2, 1)),
    ("'2024-03-01 00:00:00'", "column", datetime(2024, 3, 1)),
    ("'2024-02-01'", "column", datetime(2024, 2, 1)),
    ("MAXVALUE", "to_days", None),
])
def test_parse_bound(raw, func, expected):
    assert parse_bound(raw, func) == expected


@pytest.mark.parametrize("bounds, interval", [
    ([datetime(2024, 1, 1), datetime(2024, 2, 1)], Interval("months", 1)),
    ([datetime(2024, 1, 1), datetime(2025, 1, 1)], Interval("months", 12)),
    ([datetime(2024, 1, 1), datetime(2024, 1, 2)], Interval("days", 1)),
    ([datetime(2024, 2, 19), datetime(2024, 2, 26)], Interval("days", 7)),
    ([datetime(2024, 1, 31), datetime(2024, 3, 31)], Interval("days", 60)),  # not calendar-safe
    ([datetime(2024, 1, 1, 0), datetime(2024, 1, 1, 6)], None),
    ([datetime(2024, 1, 1)], None),
])
def test_infer_interval(bounds, interval):
    assert infer_interval(bounds) == interval


def test_mysql8_tables_parsed_and_integer_ranges_ignored():
    tables = _tables(recorded("mysql_8_0"))
    assert set(tables) == {"shop.sales", "shop.clicks", "shop.logins"}
    assert (tables["shop.sales"].func, tables["shop.sales"].column) == ("to_days", "created_at")
    assert tables["shop.clicks"].method == "RANGE COLUMNS" and tables["shop.logins"].catchall is None


def test_mysql8_plans_exact_ddl():
    tables = _tables(recorded("mysql_8_0"))
    sales = plan_table(tables["shop.sales"], Policy(premake=4, retention_days=20), MYSQL8_NOW)
    assert sales.statements == [
        "ALTER TABLE `shop`.`sales` REORGANIZE PARTITION `pmax` INTO ("
        "PARTITION `p202404` VALUES LESS THAN (TO_DAYS('2024-05-01')), "
        "PARTITION `p202405` VALUES LESS THAN (TO_DAYS('2024-06-01')), "
        "PARTITION `p202406` VALUES LESS THAN (TO_DAYS('2024-07-01')), "
        "PARTITION `p202407` VALUES LESS THAN (TO_DAYS('2024-08-01')), "
        "PARTITION `pmax` VALUES LESS THAN MAXVALUE)",
        "ALTER TABLE `shop`.`sales` DROP PARTITION `p202401`",
    ]
    logins = plan_table(tables["shop.logins"], Policy(premake=2), MYSQL8_NOW)
    assert logins.statements == [
        "ALTER TABLE `shop`.`logins` ADD PARTITION ("
        "PARTITION `p20240226` VALUES LESS THAN (1709510400), "
        "PARTITION `p20240304` VALUES LESS THAN (1710115200), "
        "PARTITION `p20240311` VALUES LESS THAN (1710720000))",
    ]
    assert plan_table(tables["shop.clicks"], Policy(premake=4), MYSQL8_NOW).statements == []


def test_mariadb_recorded_range_columns_plan():
    tables = _tables(recorded("mariadb_10_11"))
    plan = plan_table(tables["dbf_my_rec.metrics"], Policy(premake=4), MARIADB_NOW)
    assert plan.statements == [
        "ALTER TABLE `dbf_my_rec`.`metrics` REORGANIZE PARTITION `pmax` INTO ("
        "PARTITION `p20261127` VALUES LESS THAN ('2026-11-28'), "
        "PARTITION `p20261128` VALUES LESS THAN ('2026-11-29'), "
        "PARTITION `p20261129` VALUES LESS THAN ('2026-11-30'), "
        "PARTITION `p20261130` VALUES LESS THAN ('2026-12-01'), "
        "PARTITION `pmax` VALUES LESS THAN (MAXVALUE))",
    ]


def _applied(table: RangeTable, plan) -> RangeTable:
    """The table as it would be after running the plan (what a second plan sees)."""
    kept = [p for p in table.bounded if p not in plan.drop] + list(plan.create)
    return replace(table, partitions=tuple(kept + ([table.catchall] if table.catchall else [])))


@pytest.mark.parametrize("flavour_name, now", [("mysql_8_0", MYSQL8_NOW), ("mariadb_10_11", MARIADB_NOW)])
def test_plan_is_idempotent(flavour_name, now):
    for table in _tables(recorded(flavour_name)).values():
        policy = Policy(premake=3, retention_days=30)
        first = plan_table(table, policy, now)
        assert plan_table(_applied(table, first), policy, now).statements == []


def test_retention_keeps_one_partition_and_quotes_identifiers():
    old = RangeTable("s", "we`ird", "RANGE", "to_days", "d", "date",
                     (Partition("p1", datetime(2020, 1, 1)), Partition("p2", datetime(2020, 2, 1))))
    plan = plan_table(old, Policy(premake=0, retention_days=1), MYSQL8_NOW)
    assert plan.statements == ["ALTER TABLE `s`.`we``ird` DROP PARTITION `p1`"]


def test_findings_mysql8_shapes():
    data = recorded("mysql_8_0")
    thresholds = {"partition_policies": [{"table": "shop.sales", "retention_days": 20}]}
    result = partitions.transform([data["partitions"]], ctx_for(partitions.SPEC, data, now=MYSQL8_NOW, thresholds=thresholds))
    assert {(f.check, f.object, f.severity.value) for f in result.findings} == {
        ("missing_future_partitions", "shop.sales", "warning"),
        ("partition_retention_due", "shop.sales", "info"),
        ("catchall_partition_rows", "shop.sales", "warning"),
        ("missing_future_partitions", "shop.logins", "critical"),  # no catch-all: inserts fail now
    }
    catchall = next(f for f in result.findings if f.check == "catchall_partition_rows")
    assert catchall.details["rows"] == 37 and catchall.details["min_value"] == "2024-04-01"
    missing = next(f for f in result.findings if f.object == "shop.sales" and f.check == "missing_future_partitions")
    assert missing.recommendation.startswith("ALTER TABLE `shop`.`sales` REORGANIZE PARTITION `pmax`")


def test_findings_mariadb_recorded():
    data = recorded("mariadb_10_11")
    result = partitions.transform([data["partitions"]], ctx_for(partitions.SPEC, data, now=MARIADB_NOW))
    found = {(f.check, f.object, f.severity.value) for f in result.findings}
    assert ("missing_future_partitions", "dbf_my_rec.metrics", "warning") in found
    assert ("catchall_partition_rows", "dbf_my_rec.metrics", "warning") in found


def test_policy_first_match_wins():
    t = {"premake": 4, "retention_days": None,
         "partition_policies": [{"table": "shop.sales*", "premake": 6}, {"table": "shop.*", "retention": "3 months"}]}
    assert partitions.policy_for("shop.sales_2", t) == Policy(premake=6, retention_days=None)
    assert partitions.policy_for("shop.clicks", t) == Policy(premake=4, retention_days=93)
    assert partitions.policy_for("other.x", t) == Policy(premake=4, retention_days=None)


@pytest.mark.parametrize("policy, days", [
    ({"retention_days": 20}, 20), ({"retention": "90 days"}, 90), ({"retention": "3 months"}, 93),
    ({"retention": "1 year"}, 366), ({"retention": 14}, 14), ({}, None),
])
def test_retention_reads_the_postgresql_policy_shape(policy, days):
    from collectors.mysql.partitions import retention_days

    assert retention_days(policy) == days


def test_unreadable_retention_is_refused():
    from collectors.mysql.partitions import retention_days

    with pytest.raises(ValueError, match="retention 'soon'"):
        retention_days({"retention": "soon"})


# --- keep_table: retention keeps the rows (EXCHANGE into an archive table, then drop the emptied partition)

KEEP = Policy(premake=0, retention_days=90, keep_table=True)
KEEP_NOW = datetime(2024, 4, 15, tzinfo=timezone.utc)  # 90 days back: before 2024-01-16
_OLD = RangeTable("shop", "events", "RANGE", "to_days", "created", "date",
                  (Partition("p202311", datetime(2023, 12, 1), rows=7),
                   Partition("p202312", datetime(2024, 1, 1), rows=9),
                   Partition("p202401", datetime(2024, 2, 1), rows=4), Partition("pmax", None)))


def _steps_by_partition(plan) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for step in plan.retention:
        out.setdefault(step.partition.name, []).append(step.action)
    return out


def test_keep_table_plans_no_drop_before_the_exchange_of_that_partition():
    plan = plan_table(_OLD, KEEP, KEEP_NOW)
    assert _steps_by_partition(plan) == {
        p: ["create_archive", "unpartition_archive", "exchange_partition", "drop_emptied_partition"]
        for p in ("p202311", "p202312")}
    assert plan.statements[:4] == [
        "CREATE TABLE `shop`.`events_p202311` LIKE `shop`.`events`",
        "ALTER TABLE `shop`.`events_p202311` REMOVE PARTITIONING",
        "ALTER TABLE `shop`.`events` EXCHANGE PARTITION `p202311` WITH TABLE `shop`.`events_p202311`",
        "ALTER TABLE `shop`.`events` DROP PARTITION `p202311`",
    ]
    for i, sql in enumerate(plan.statements):
        if " DROP PARTITION " in sql:
            name = sql.rsplit(" ", 1)[1]
            assert any(f"EXCHANGE PARTITION {name} " in s for s in plan.statements[:i]), sql
    assert all(step.why for step in plan.retention) and not plan.refused


def test_keep_table_false_still_drops():
    plan = plan_table(_OLD, replace(KEEP, keep_table=False), KEEP_NOW)
    assert plan.statements == ["ALTER TABLE `shop`.`events` DROP PARTITION `p202311`",
                               "ALTER TABLE `shop`.`events` DROP PARTITION `p202312`"]
    assert {s.action for s in plan.retention} == {"drop_partition"}


@pytest.mark.parametrize("facts, steps", [
    # the archive is there already (an earlier apply stopped after CREATE / after REMOVE PARTITIONING)
    (KeepFacts(partition_has_rows=True, archive_exists=True, archive_partitioned=True),
     ["unpartition_archive", "exchange_partition", "drop_emptied_partition"]),
    (KeepFacts(partition_has_rows=True, archive_exists=True), ["exchange_partition", "drop_emptied_partition"]),
    # the rows are in the archive already, or the partition never held any: only the empty partition goes
    (KeepFacts(partition_has_rows=False, archive_exists=True, archive_has_rows=True), ["drop_emptied_partition"]),
    (KeepFacts(partition_has_rows=False, archive_exists=False), ["drop_emptied_partition"]),
])
def test_keep_table_plan_follows_what_the_server_says(facts, steps):
    plan = plan_table(_OLD, KEEP, KEEP_NOW, {"p202311": facts})
    assert _steps_by_partition(plan)["p202311"] == steps


def test_an_archive_table_that_already_holds_rows_is_never_overwritten():
    facts = {"p202311": KeepFacts(partition_has_rows=True, archive_exists=True, archive_has_rows=True)}
    plan = plan_table(_OLD, KEEP, KEEP_NOW, facts)
    assert "p202311" not in _steps_by_partition(plan) and [p.name for p in plan.drop] == ["p202312"]
    assert "shop.events_p202311 already exists and holds rows" in plan.refused["p202311"]


def test_an_archive_name_longer_than_mysql_allows_is_refused():
    long_table = replace(_OLD, table="e" * 60)
    plan = plan_table(long_table, KEEP, KEEP_NOW)
    assert plan.retention == [] and set(plan.refused) == {"p202311", "p202312"}
    assert "64" in plan.refused["p202311"]


@pytest.mark.parametrize("raw, keep", [(True, True), (False, False), ("true", True), ("false", False),
                                       ("no", False), (1, True), (0, False), ("absent", False)])
def test_keep_table_reads_the_postgresql_policy_shape(raw, keep):
    policy = {"table": "shop.*", "retention": "90 days"} | ({} if raw == "absent" else {"keep_table": raw})
    assert partitions.policy_for("shop.events", {"partition_policies": [policy]}) == \
        Policy(retention_days=90, keep_table=keep)


@pytest.mark.parametrize("raw", ["maybe", None, 2, 0.5])
def test_an_unreadable_keep_table_is_refused(raw):
    """As PostgreSQL's policy model refuses it: a typo must not silently mean 'drop the data'."""
    with pytest.raises(ValueError, match=f"keep_table {raw!r}"):
        partitions.policy_for("shop.events", {"partition_policies": [{"table": "*", "keep_table": raw}]})


@pytest.mark.parametrize("raw", [True, False, "true", "false", "yes", "no", "on", "off", "1", "0", "t", "f",
                                 "TRUE", "No", 1, 0, 1.0, "maybe", None, 2, 0.5, " true", ""])
def test_keep_table_means_what_postgresql_reads_on_every_engine(raw):
    """One policy, one meaning: the MySQL and SQL Server/Oracle readers agree with PostgreSQL's model."""
    from collectors.postgres.partition_plan import PartitionPolicy
    from collectors.common.partition_maths import keep_table as sqlserver_keep_table

    def read(reader):
        try:
            return reader()
        except ValueError:  # pydantic's ValidationError is a ValueError too
            return "refused"

    pg = read(lambda: PartitionPolicy(keep_table=raw).keep_table)
    assert read(lambda: partitions.keep_table({"keep_table": raw})) == pg
    assert read(lambda: sqlserver_keep_table({"keep_table": raw})) == pg


def test_keep_table_finding_says_the_rows_are_kept_and_why_a_partition_is_not():
    data = recorded("mysql_8_0")
    thresholds = {"partition_policies": [{"table": "shop.sales", "retention_days": 20, "keep_table": True}]}
    snap = {**data["partitions"], "keep": [
        {"table_schema": "shop", "table_name": "sales", "partition_name": "p202401", "partition_has_rows": True,
         "archive_exists": True, "archive_partitioned": False, "archive_has_rows": True}]}
    result = partitions.transform([snap], ctx_for(partitions.SPEC, data, now=MYSQL8_NOW, thresholds=thresholds))
    due = next(f for f in result.findings if f.check == "partition_retention_due")
    assert "EXCHANGE" not in due.details["ddl"] and "deletes those rows" not in due.recommendation
    assert due.details["refused"]["p202401"].startswith("shop.sales_p202401 already exists and holds rows")
    result = partitions.transform([data["partitions"]], ctx_for(partitions.SPEC, data, now=MYSQL8_NOW, thresholds=thresholds))
    due = next(f for f in result.findings if f.check == "partition_retention_due")
    assert "EXCHANGE PARTITION `p202401` WITH TABLE `shop`.`sales_p202401`" in due.details["ddl"]
    assert "kept" in due.recommendation and "deletes those rows" not in due.recommendation
