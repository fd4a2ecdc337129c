"""The pure side on recorded rows, no server: the model's rules, the SQL each engine gets (quoted,
user text parsed), the baseline, and each verdict's state, finding and sample."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from collectors.quality import sql, verdicts
from collectors.quality.baseline import baseline_for
from collectors.quality.checks import parse_check

NOW = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)


def check(**kw):
    return parse_check({"name": "c", "tables": ["s.t"], **kw})


@pytest.mark.parametrize("raw, message", [
    ({"kind": "freshness"}, "exactly one of loaded_at_field or loaded_at_query"),
    ({"kind": "freshness", "loaded_at_field": "a", "loaded_at_query": "select 1"}, "exactly one"),
    ({"kind": "volume"}, "method count needs loaded_at_field"),
    ({"kind": "completeness", "columns": ["a"], "window": {"count": 1, "period": "day"}}, "needs loaded_at_field"),
    ({"kind": "freshness", "loaded_at_field": "a", "every": {"count": 0, "period": "minute"}}, "greater than"),
    ({"kind": "freshness", "loaded_at_field": "a", "tables": ["a.b.c"]}, "'schema.table' or 'table'"),
    ({"kind": "freshness", "loaded_at_field": "a", "labels": {"bad-name": "x"}}, "label name"),
    ({"kind": "assertion", "query": "select 1", "name": "has space"}, "pattern"),
    ({"kind": "freshness", "loaded_at_field": "a\x00"}, "NUL"),
    ({"kind": "nope"}, "does not match any of the expected tags"),
])
def test_bad_definitions_name_what_is_wrong(raw, message):
    with pytest.raises(ValidationError, match=message):
        check(**raw)


def test_default_sla_is_fifteen_minutes_and_scope_matching():
    c = check(kind="freshness", loaded_at_field="at", instances=["shop-*"], tags={"env": "prod"},
              tables=["public.orders", "sales.*", "events"])
    assert (c.sla.seconds, c.error_after.seconds, c.warn_after) == (900, 900, None)
    assert c.applies("shop-1", {"env": "prod"}) and not c.applies("shop-1", {"env": "dev"})
    assert not c.applies("erp-1", {"env": "prod"})
    assert [c.matches_table(s, t) for s, t in [("public", "orders"), ("sales", "x"), ("any", "events"),
                                               ("public", "events2")]] == [True, True, True, False]


@pytest.mark.parametrize("family, expected", [
    ("postgres", ('select max("loaded_at") as newest, current_timestamp as now_tz, localtimestamp as now_local '
                 'from "we""ird"."t" where (status = 1)')),
    ("mysql", "select max(`loaded_at`) as newest, now() as now_local from `we\"ird`.`t` where (status = 1)"),
])
def test_identifiers_are_quoted_per_engine(family, expected):
    assert sql.freshness_sql(family, sql.qualified(family, 'we"ird', "t"), "loaded_at", "status = 1") == (
        f"/* dbfleet:quality:freshness */ {expected}")
    assert sql.quote_ident("mysql", "a`b") == "`a``b`" and sql.quote_ident("postgres", 'a"b') == '"a""b"'
    # An expression is kept as written once it parses; a column name is quoted.
    assert "max(to_timestamp(epoch))" in sql.freshness_sql(family, "t", "to_timestamp(epoch)", None)


@pytest.mark.parametrize("text", ["select 1; select 2", "delete from t", "insert into t values (1)",
                                  "select * from t for update", "create table x (a int)", ("with a as "
                                  "(delete from t returning *) select * from a")])
def test_only_one_read_only_select_passes(text):
    with pytest.raises(sql.CheckRefused):
        sql.check_select(text, "postgres")


@pytest.mark.parametrize("text", ["1=1; drop table t", "a = 1) or (1 = 1", "a = 1 order by 1"])
def test_a_filter_is_one_condition(text):
    with pytest.raises(sql.CheckRefused):
        sql.check_condition(text, "postgres")


def test_baseline_prefers_the_same_hour_of_the_week():
    history = [(NOW - timedelta(days=7 * k), 1000.0 + k) for k in (1, 2, 3)]
    history += [(NOW - timedelta(days=d), 10.0) for d in (1, 2, 3, 4)]  # other weekdays, same hour
    base = baseline_for(history, NOW, 3)
    assert (base.basis, base.points, round(base.mean)) == ("hour of week", 3, 1002)
    assert baseline_for(history[3:], NOW, 3).basis == "hour of day"
    assert baseline_for(history[:2], NOW, 3) is None


def test_freshness_verdicts():
    c = check(kind="freshness", loaded_at_field="at", warn_after={"count": 10, "period": "minute"},
              error_after={"count": 1, "period": "hour"}, labels={"source": "shop"})
    for age, state, severity in [(5, "pass", None), (20, "warn", "warning"), (90, "error", "critical")]:
        v = verdicts.freshness(c, "s.t", NOW - timedelta(minutes=age), NOW, None)
        assert (v.state, v.value) == (state, age * 60)
        assert [f.severity for f in v.findings] == ([severity] if severity else [])
        assert v.samples[0].metric == "quality_freshness_lag_seconds"
    # A naive load time is compared with the server's local clock, not UTC.
    local = datetime(2026, 12, 3, 15, 0)
    assert verdicts.freshness(c, "s.t", local - timedelta(minutes=5), NOW, local).state == "pass"
    assert verdicts.freshness(c, "s.t", None, NOW, None).findings[0].details["source"] == "shop"


def test_volume_completeness_assertion_and_schema_verdicts():
    base = baseline_for([(NOW - timedelta(days=d), 1000.0) for d in range(1, 8)], NOW, 3)
    vol = check(kind="volume", loaded_at_field="at")
    assert verdicts.volume(vol, "s.t", 1020, base).state == "pass"
    assert verdicts.volume(vol, "s.t", 100, base).findings[0].details["direction"] == "drop"
    assert verdicts.volume(vol, "s.t", 5000, base).findings[0].details["direction"] == "spike"
    assert verdicts.volume(vol, "s.t", 100, None).details["baseline"] == "learning"
    comp = check(kind="completeness", columns=["a", "b"], max_null_share=0.1)
    v = verdicts.completeness(comp, "s.t", {"total": 10, "missing_0": 0, "missing_1": 2})
    assert [f.details["column"] for f in v.findings] == ["b"] and v.details["null_share"] == {"a": 0, "b": 0.2}
    assert verdicts.completeness(comp, "s.t", {"total": 0, "missing_0": 0, "missing_1": 0}).findings == []
    asrt = parse_check({"name": "a", "kind": "assertion", "query": "select 1", "max_evidence_rows": 1})
    v = verdicts.assertion(asrt, "a", [{"dbfleet_violations": 4, "id": 1, "at": NOW}])
    assert v.findings[0].details["evidence"] == [{"id": 1, "at": NOW.isoformat()}] and v.state == "error"
    assert verdicts.assertion(asrt, "a", []).state == "pass"
    shape = check(kind="schema", expected_columns={"id": "integer", "name": None})
    v = verdicts.schema_drift(shape, "s.t", {"id": "bigint", "extra": "text"}, None)
    d = v.findings[0].details
    assert (d["added"], d["dropped"], d["retyped"]) == (["extra"], ["name"], {"id": {"expected": "integer",
                                                                                    "found": "bigint"}})
    first = check(kind="schema")
    assert verdicts.schema_drift(first, "s.t", {"id": "int"}, None).details["baseline"] == {"id": "int"}


def test_collectors_quality_imports_nothing_from_app_nor_an_engine_package():
    root = Path(__file__).parents[2] / "collectors" / "quality"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith("app"), f"{path.name} imports {name}"
                assert name.split(".")[:2] not in (["collectors", e] for e in ("postgres", "mysql", "sqlserver",
                                                                               "oracle", "cloud")), path.name
