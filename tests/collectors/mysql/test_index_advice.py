"""index_advice transform on recorded MySQL 8 and MariaDB catalog rows, and the redundancy rule."""

from __future__ import annotations

import copy

import pytest

from collectors.mysql import index_advice
from collectors.mysql.index_advice import redundant_indexes

from .conftest import ctx_for, recorded

NOW_OK = {"unused_index_min_uptime_days": 0}


def _found(data, **kw):
    result = index_advice.transform([data["index_advice"]], ctx_for(index_advice.SPEC, data, **kw))
    return {(f.check, f.object, f.severity.value) for f in result.findings}, result


def test_mysql8_shapes():
    # Covers MySQL 8 only shapes: functional key parts ((lower(`email`)) from EXPRESSION), prefix
    # key parts, FULLTEXT beside BTREE on one column.
    found, result = _found(recorded("mysql_8_0"))
    assert found == {
        ("duplicate_index", "shop.orders.idx_customer", "warning"),
        ("duplicate_index", "shop.orders.idx_order_no", "warning"),  # same columns as a UNIQUE key
        ("unused_index", "shop.users.idx_email_lower", "info"),
        ("table_without_primary_key", "shop.events", "warning"),
    }
    dup = next(f for f in result.findings if f.object == "shop.orders.idx_customer")
    assert dup.recommendation.startswith("ALTER TABLE `shop`.`orders` DROP INDEX `idx_customer`;")
    assert "INVISIBLE" in dup.recommendation


def test_mariadb_recorded_rows():
    found, result = _found(recorded("mariadb_10_11"), thresholds=NOW_OK)
    # k_customer is a prefix of k_customer_status, but it is the one in use: the advice is to drop
    # the idle k_customer_status, not both.
    assert found == {
        ("unused_index", "dbf_my_rec.orders.k_customer_status", "info"),
        ("unused_index", "dbf_my_rec.orders.k_status", "info"),
        ("table_without_primary_key", "dbf_my_rec.audit_log", "warning"),
        ("table_without_primary_key", "dbf_my_rec.notes", "info"),  # has a UNIQUE key
    }
    assert "IGNORED" in result.findings[0].recommendation


def test_unused_needs_uptime_and_performance_schema():
    data = recorded("mysql_8_0")
    short = copy.deepcopy(data)
    short["index_advice"]["server"][0]["uptime_s"] = str(86400 * 2)
    assert not any(c == "unused_index" for c, _, _ in _found(short)[0])
    assert any(c == "unused_index" for c, _, _ in _found(short, thresholds={"unused_index_min_uptime_days": 1})[0])
    off = copy.deepcopy(data)
    off["index_advice"]["server"][0]["ps_enabled"] = 0
    assert not any(c == "unused_index" for c, _, _ in _found(off)[0])


def _table(*indexes):
    return {("s", "t"): {name: {"name": name, "unique": unique, "type": typ, "cols": list(cols)}
                         for name, unique, typ, cols in indexes}}


@pytest.mark.parametrize("indexes, redundant", [
    ([("a", False, "BTREE", "x"), ("b", False, "BTREE", "xy")], {("a", "b")}),
    ([("a", True, "BTREE", "x"), ("b", False, "BTREE", "xy")], set()),              # unique prefix enforces
    ([("a", False, "BTREE", "x"), ("b", False, "BTREE", "x")], {("b", "a")}),        # keep first by name
    ([("a", False, "BTREE", "x"), ("PRIMARY", True, "BTREE", "x")], {("a", "PRIMARY")}),
    ([("a", True, "BTREE", "xy"), ("b", True, "BTREE", "xy")], {("b", "a")}),
    ([("a", False, "BTREE", "x"), ("b", False, "HASH", "xy")], set()),               # different type
    ([("a", False, "BTREE", "y"), ("b", False, "BTREE", "xy")], set()),              # not leading
    ([("a", False, "FULLTEXT", "x"), ("b", False, "FULLTEXT", "x")], set()),
])
def test_redundancy_rule(indexes, redundant):
    tables = _table(*[(n, u, t, [c for c in cols]) for n, u, t, cols in indexes])
    assert {(a["name"], b["name"]) for _, _, a, b in redundant_indexes(tables)} == redundant
