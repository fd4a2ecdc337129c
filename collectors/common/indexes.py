"""Index-redundancy rules over a neutral index description, for every engine's index advice."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# --- index rules ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IndexShape:
    """What decides whether one index makes another redundant."""

    table: str
    name: str
    keys: tuple[str, ...]          # key columns in order, with " DESC" where descending
    includes: frozenset[str] = frozenset()
    unique: bool = False
    constraint: bool = False       # backs a primary key / unique constraint: never the one to drop
    kind: str = ""                 # access method: NONCLUSTERED, BITMAP, ...
    predicate: str = ""            # filtered / partial index condition
    size_bytes: int = 0


def redundant_indexes(indexes: Sequence[IndexShape]) -> list[tuple[IndexShape, IndexShape]]:
    """(redundant, covering) pairs: same table, kind and predicate, keys equal or a leading
    prefix, included columns covered, and never a unique index made redundant by a non-unique one."""
    pairs = []
    for a in indexes:
        for b in indexes:
            if a is b or a.table != b.table or a.kind != b.kind or a.predicate != b.predicate:
                continue
            if a.constraint or (a.unique and not b.unique):
                continue
            if b.keys[:len(a.keys)] != a.keys or not a.includes <= (set(b.keys) | b.includes):
                continue
            identical = a.keys == b.keys and a.includes == b.includes and a.unique == b.unique
            if identical and not b.constraint and a.name < b.name:
                continue  # of two identical indexes, report only the one that sorts last
            pairs.append((a, b))
    return pairs


def fk_is_indexed(fk_columns: Sequence[str], index_keys: Iterable[Sequence[str]]) -> bool:
    """A foreign key is covered when its columns, in any order, lead some index."""
    want = {c.upper() for c in fk_columns}
    return any({k.upper().removesuffix(" DESC") for k in keys[:len(want)]} == want
               for keys in index_keys if len(keys) >= len(want))
