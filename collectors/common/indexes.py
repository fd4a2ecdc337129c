"""Index-redundancy rules over a neutral index description, for every engine's index advice."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

@dataclass(frozen=True, slots=True)
class IndexShape:
    """What decides whether one index makes another redundant, in any engine's terms.

    Each engine fills it from its catalog: `keys` carry whatever changes the order the index
    serves (" DESC", a PostgreSQL operator class or collation, a MySQL prefix length), so two
    keys are the same lookup only when they are equal strings.
    """

    table: str
    name: str
    keys: tuple[str, ...]          # key columns in order, each with what changes its order
    includes: frozenset[str] = frozenset()   # INCLUDE columns, in any order
    unique: bool = False
    # Enforces something (a primary key, a unique constraint, PostgreSQL's replica identity...):
    # never the one to drop. The engine decides what counts.
    constraint: bool = False
    kind: str = ""                 # access method: btree, NONCLUSTERED, BITMAP, BTREE, ...
    predicate: str = ""            # filtered / partial index condition (and index expressions)
    size_bytes: int = 0
    # The plain column names of `keys`, for covering INCLUDE columns; empty: `keys` themselves.
    key_columns: tuple[str, ...] = ()
    # Whether a leading prefix of the keys serves the same lookups (a btree does; hash, GIN do not).
    ordered: bool = True


def covers(longer: IndexShape, shorter: IndexShape) -> bool:
    """`longer` serves every lookup `shorter` does: same table, kind and predicate, shorter's keys
    lead longer's (equal keys for an unordered kind), shorter's INCLUDE columns are in longer."""
    if (longer.table, longer.kind, longer.predicate) != (shorter.table, shorter.kind, shorter.predicate):
        return False
    n = len(shorter.keys)
    if longer.keys[:n] != shorter.keys or (n < len(longer.keys) and not longer.ordered):
        return False
    return shorter.includes <= set(longer.key_columns or longer.keys) | longer.includes


def _kept_first(ix: IndexShape) -> tuple[bool, bool, str]:
    """Of two identical indexes keep the unique one, then the one enforcing something, then the
    name that sorts first (so the report is stable)."""
    return (not ix.unique, not ix.constraint, ix.name)


def redundant_over(a: IndexShape, b: IndexShape) -> bool:
    """Whether `a` is redundant because of `b`: b covers it, and a is not the one to keep."""
    if a is b or a.constraint or not covers(b, a):
        return False
    if covers(a, b):  # identical lookups: drop only the one kept last
        return _kept_first(b) < _kept_first(a)
    return not a.unique  # a unique index enforces what the longer one does not


def redundant_indexes(indexes: Sequence[IndexShape]) -> list[tuple[IndexShape, IndexShape]]:
    """(redundant, covering) pairs, one per redundant index: covered by the covering index with
    the fewest keys (then by name), as sys.schema_redundant_indexes and pg_idx_dups report them."""
    pairs = []
    for a in indexes:
        cover = min((b for b in indexes if redundant_over(a, b)), key=lambda b: (len(b.keys), b.name), default=None)
        if cover is not None:
            pairs.append((a, cover))
    return pairs


def fk_is_indexed(fk_columns: Sequence[str], index_keys: Iterable[Sequence[str]]) -> bool:
    """A foreign key is covered when its columns, in any order, lead some index."""
    want = {c.upper() for c in fk_columns}
    return any({k.upper().removesuffix(" DESC") for k in keys[:len(want)]} == want
               for keys in index_keys if len(keys) >= len(want))
