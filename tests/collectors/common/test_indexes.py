"""The one index-redundancy rule every engine's index advice uses, on neutral index shapes."""

from __future__ import annotations

import pytest

from collectors.common.indexes import IndexShape, covers, redundant_indexes


def ix(name: str, *keys: str, **kw) -> IndexShape:
    return IndexShape(table=kw.pop("table", "app.orders"), name=name, keys=keys, **kw)


@pytest.mark.parametrize(("case", "indexes", "expected"), [
    ("leading prefix", [ix("a", "x"), ix("b", "x", "y")], [("a", "b")]),
    ("not a prefix", [ix("a", "y"), ix("b", "x", "y")], []),
    ("other table", [ix("a", "x"), ix("b", "x", "y", table="app.lines")], []),
    ("other kind", [ix("a", "x", kind="HASH"), ix("b", "x", "y", kind="BTREE")], []),
    ("other predicate", [ix("a", "x", predicate="x > 0"), ix("b", "x", "y")], []),
    ("descending key is another order", [ix("a", "x DESC"), ix("b", "x", "y")], []),
    ("a unique prefix enforces something", [ix("a", "x", unique=True), ix("b", "x", "y", unique=True)], []),
    ("a constraint is never dropped", [ix("pk", "x", constraint=True, unique=True), ix("b", "x", "y")], []),
    ("identical: the name sorting last goes", [ix("b", "x"), ix("a", "x")], [("b", "a")]),
    ("identical: the unique one stays", [ix("a", "x"), ix("b", "x", unique=True)], [("a", "b")]),
    ("identical: the constraint stays", [ix("a", "x", unique=True), ix("pk", "x", unique=True, constraint=True)],
     [("a", "pk")]),
    ("identical constraints: both stay", [ix("a", "x", constraint=True), ix("b", "x", constraint=True)], []),
    ("unordered kind: only equal keys", [ix("a", "x", ordered=False), ix("b", "x", "y", ordered=False)], []),
    ("unordered kind, equal keys", [ix("a", "x", ordered=False), ix("b", "x", ordered=False)], [("b", "a")]),
    ("includes covered by keys", [ix("a", "x", includes=frozenset({"y"})), ix("b", "x", "y")], [("a", "b")]),
    ("includes not covered", [ix("a", "x", includes=frozenset({"z"})), ix("b", "x", "y")], []),
    ("includes by plain column name", [ix("a", "1 op", includes=frozenset({"2"})),
                                      ix("b", "1 op", "2 op", key_columns=("1", "2"))], [("a", "b")]),
    ("shortest cover is named", [ix("a", "x"), ix("c", "x", "y", "z"), ix("b", "x", "y")], [("a", "b"), ("b", "c")]),
])
def test_redundant_indexes(case: str, indexes: list[IndexShape], expected: list[tuple[str, str]]):
    assert [(a.name, b.name) for a, b in redundant_indexes(indexes)] == expected


def test_covers_is_about_lookups_not_names():
    assert covers(ix("long", "x", "y"), ix("short", "x")) and not covers(ix("short", "x"), ix("long", "x", "y"))
