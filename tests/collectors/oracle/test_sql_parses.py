"""Every Oracle statement the collectors send or plan parses with sqlglot's oracle dialect
(ErrorLevel.RAISE). SELECTs must parse into a real tree; ADD/SPLIT PARTITION and CREATE INDEX
... ONLINE come back from sqlglot as an opaque Command, so their shape is also checked against
the documented grammar. Retention uses the 12c `DROP PARTITIONS name UPDATE INDEXES` form, which
sqlglot parses fully (its Oracle dialect rejects the singular DROP PARTITION name)."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest
import sqlglot
from sqlglot import exp

import collectors.oracle as family
from collectors.engines import oracle as adapter
from collectors.registry import specs_for

from .conftest import context, load

SAMPLE_FORMAT = {"sql_id": "7h35uxf5uhmm1"}
_Q = r'"[^"]+"'
DDL_SHAPES = [
    re.compile(rf"^ALTER TABLE {_Q}\.{_Q} ADD PARTITION {_Q} VALUES LESS THAN \((TO_DATE|TIMESTAMP).+\)$"),
    re.compile(rf"^ALTER TABLE {_Q}\.{_Q} SPLIT PARTITION {_Q} AT \(.+\) INTO \(PARTITION {_Q}, PARTITION {_Q}\) UPDATE INDEXES$"),
    re.compile(rf"^CREATE INDEX {_Q}\.{_Q} ON {_Q}\.{_Q} \({_Q}(, {_Q})*\) ONLINE$"),
    re.compile(rf"^ALTER INDEX {_Q}\.{_Q} INVISIBLE$"),
    re.compile(rf"^CREATE TABLE {_Q}\.{_Q} FOR EXCHANGE WITH TABLE {_Q}\.{_Q}$"),
    re.compile(rf"^ALTER TABLE {_Q}\.{_Q} EXCHANGE PARTITION {_Q} WITH TABLE {_Q}\.{_Q} "
               "EXCLUDING INDEXES WITHOUT VALIDATION UPDATE GLOBAL INDEXES$"),
]


def _module_sql() -> dict[str, str]:
    out = {}
    for info in pkgutil.iter_modules(family.__path__):
        module = importlib.import_module(f"{family.__name__}.{info.name}")
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, str) and re.match(r"\s*(SELECT|WITH)\b", value, re.I):
                out[f"{info.name}.{name}"] = value.format(**SAMPLE_FORMAT) if "{sql_id}" in value else value
    for spec in specs_for("oracle"):
        for version, sql in spec.sql.items():
            out[f"{spec.name}.sql[{version}]"] = sql
    out["adapter.ROLE_SQL"] = adapter.ROLE_SQL
    return out


def _planned_ddl() -> dict[str, str]:
    from collectors.oracle import index_advice, partitions
    planted = load("planted")
    out = {}
    for module, name in ((partitions, "partitions"), (index_advice, "index_advice")):
        for f in module.transform(planted[name]["rows"], context(planted, name)).findings:
            statements = list(f.details.get("plan", []))
            statements += [line.rstrip(";") for line in f.recommendation.splitlines()
                           if re.match(r"(CREATE|DROP|ALTER) ", line)]
            for i, sql in enumerate(dict.fromkeys(statements)):
                out[f"{f.check}:{f.object}:{i}"] = sql
    return out


SELECTS = _module_sql()
DDL = _planned_ddl()


def test_the_walk_found_the_statements():
    assert len(SELECTS) >= 10 and len(DDL) >= 8


@pytest.mark.parametrize("name", sorted(SELECTS))
def test_select_parses_into_a_tree(name):
    tree = sqlglot.parse_one(SELECTS[name], read="oracle", error_level=sqlglot.ErrorLevel.RAISE)
    assert isinstance(tree, (exp.Select, exp.Union)), type(tree)


@pytest.mark.parametrize("name", sorted(DDL))
def test_planned_statement_parses(name):
    sql = DDL[name]
    tree = sqlglot.parse_one(sql, read="oracle", error_level=sqlglot.ErrorLevel.RAISE)
    if isinstance(tree, exp.Command):
        assert any(shape.match(sql) for shape in DDL_SHAPES), sql
