"""Index advice for application schemas: unused indexes from DBA_INDEX_USAGE (12.2+),
duplicate / prefix-redundant indexes from DBA_IND_COLUMNS, and unindexed foreign keys (a child
table without an index on its foreign key takes a table lock when parent rows are deleted or
their keys updated). Missing-index advice needs the licensed SQL Tuning Advisor: not done here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from collectors.common.indexes import IndexShape, fk_is_indexed, redundant_indexes
from collectors.common.rows import DAY_S, as_utc, by_kind, fetch_tagged, num
from collectors.registry import register
from collectors.spec import CollectorSpec, Connection, Context, Finding, Result, Severity

_APP_OWNERS = "NOT IN (SELECT username FROM dba_users WHERE oracle_maintained = 'Y')"

# DBA_INDEX_USAGE is sampled and flushed from memory every 15 minutes, so an index used rarely
# may show no row for a while: judge only over a long window from the index's creation.
INDEXES_SQL = f"""
SELECT i.owner, i.index_name, i.table_owner, i.table_name, i.index_type, i.uniqueness, i.visibility,
       o.created, u.total_access_count, u.total_exec_count, u.last_used,
       (SELECT SUM(s.bytes) FROM dba_segments s WHERE s.owner = i.owner AND s.segment_name = i.index_name) AS size_bytes,
       (SELECT COUNT(*) FROM dba_constraints c
        WHERE c.owner = i.table_owner AND c.index_name = i.index_name AND c.constraint_type IN ('P', 'U')) AS constraint_count
FROM dba_indexes i
JOIN dba_objects o ON o.owner = i.owner AND o.object_name = i.index_name AND o.object_type = 'INDEX'
LEFT JOIN dba_index_usage u ON u.owner = i.owner AND u.name = i.index_name
WHERE i.owner {_APP_OWNERS} AND i.index_type NOT IN ('LOB', 'IOT - TOP', 'DOMAIN')
"""

INDEX_COLUMNS_SQL = f"""
SELECT index_owner, index_name, table_owner, table_name, column_name, column_position, descend
FROM dba_ind_columns
WHERE index_owner {_APP_OWNERS}
"""

FOREIGN_KEYS_SQL = f"""
SELECT c.owner, c.table_name, c.constraint_name, cc.column_name, cc.position,
       r.owner || '.' || r.table_name AS referenced_table
FROM dba_constraints c
JOIN dba_cons_columns cc ON cc.owner = c.owner AND cc.constraint_name = c.constraint_name
JOIN dba_constraints r ON r.owner = c.r_owner AND r.constraint_name = c.r_constraint_name
WHERE c.constraint_type = 'R' AND c.owner {_APP_OWNERS}
"""

QUERIES = {"index": INDEXES_SQL, "index_column": INDEX_COLUMNS_SQL, "foreign_key": FOREIGN_KEYS_SQL}
THRESHOLDS = {"unused_min_window_days": 35, "unused_min_size_bytes": 10 * 1024 * 1024}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    t = ctx.thresholds
    kinds = by_kind(rows)
    indexes = {(r["owner"], r["index_name"]): {**r, "keys": []} for r in kinds.get("index", [])}
    for c in sorted(kinds.get("index_column", []), key=lambda c: c["column_position"]):
        ix = indexes.get((c["index_owner"], c["index_name"]))
        if ix is not None:
            ix["keys"].append(c["column_name"] + (" DESC" if c.get("descend") == "DESC" else ""))
    result = Result()
    result.findings += [f for ix in indexes.values() if (f := _unused(ix, ctx, t))]
    result.findings += _duplicates(indexes.values())
    result.findings += _unindexed_fks(kinds.get("foreign_key", []), indexes.values())
    return result


def _unused(ix: Mapping[str, Any], ctx: Context, t) -> Finding | None:
    if ix["uniqueness"] == "UNIQUE" or num(ix.get("constraint_count")) > 0:
        return None
    created = as_utc(ix.get("created"))
    window = (ctx.now - created).total_seconds() if created else 0.0
    last_used = as_utc(ix.get("last_used"))
    cutoff = ctx.now - timedelta(days=t["unused_min_window_days"])
    if window < t["unused_min_window_days"] * DAY_S or (last_used is not None and last_used >= cutoff):
        return None
    size = int(num(ix.get("size_bytes")))
    if size < t["unused_min_size_bytes"]:
        return None
    name = f"{ix['owner']}.{ix['index_name']}"
    since = f"last used {last_used:%Y-%m-%d}" if last_used else "never used since tracking began"
    return Finding(
        check="unused_index", object=name, severity=Severity.warning,
        title=f"Index {name} on {ix['table_owner']}.{ix['table_name']} is unused ({since})",
        details={"size_bytes": size, "created": str(created), "last_used": str(last_used) if last_used else None,
                 "total_access_count": ix.get("total_access_count"), "window_days": t["unused_min_window_days"],
                 "note": "DBA_INDEX_USAGE is sampled and flushed every 15 minutes",
                 "sql": INDEXES_SQL.strip()},
        recommendation=f"ALTER INDEX {_q(ix['owner'])}.{_q(ix['index_name'])} INVISIBLE;\n"
                       "Watch a full business cycle (month end, batch runs); if nothing slows down: "
                       f"DROP INDEX {_q(ix['owner'])}.{_q(ix['index_name'])};\nMaking it visible again is instant.",
    )


def _shape(ix: Mapping[str, Any]) -> IndexShape:
    return IndexShape(table=f"{ix['table_owner']}.{ix['table_name']}", name=f"{ix['owner']}.{ix['index_name']}",
                      keys=tuple(ix["keys"]), unique=ix["uniqueness"] == "UNIQUE",
                      constraint=num(ix.get("constraint_count")) > 0, kind=ix["index_type"],
                      size_bytes=int(num(ix.get("size_bytes"))))


def _duplicates(indexes) -> list[Finding]:
    out = []
    for a, b in redundant_indexes([_shape(ix) for ix in indexes if ix["keys"]]):
        owner, name = a.name.split(".", 1)
        out.append(Finding(
            check="duplicate_index", object=a.name, severity=Severity.warning,
            title=f"Index {a.name} on {a.table} is redundant with {b.name}",
            details={"columns": list(a.keys), "covered_by": b.name, "covered_by_columns": list(b.keys),
                     "size_bytes": a.size_bytes, "sql": INDEX_COLUMNS_SQL.strip()},
            recommendation=f"ALTER INDEX {_q(owner)}.{_q(name)} INVISIBLE;\nthen, after a business cycle, "
                           f"DROP INDEX {_q(owner)}.{_q(name)};\n{b.name} serves the same access paths.",
        ))
    return out


def _unindexed_fks(fk_rows, indexes) -> list[Finding]:
    fks: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in fk_rows:
        fks.setdefault((r["owner"], r["table_name"], r["constraint_name"]), []).append(r)
    out = []
    for (owner, table, fk), cols in fks.items():
        columns = [c["column_name"] for c in sorted(cols, key=lambda c: c["position"])]
        keys = [ix["keys"] for ix in indexes if (ix["table_owner"], ix["table_name"]) == (owner, table)]
        if fk_is_indexed(columns, keys):
            continue
        ix_name = f"{table}_{fk}_IX"[:128]
        out.append(Finding(
            check="fk_without_index", object=f"{owner}.{table}.{fk}", severity=Severity.warning,
            title=f"Foreign key {fk} on {owner}.{table}({', '.join(columns)}) has no index",
            details={"columns": columns, "references": cols[0]["referenced_table"], "sql": FOREIGN_KEYS_SQL.strip()},
            recommendation=f"CREATE INDEX {_q(owner)}.{_q(ix_name)} ON {_q(owner)}.{_q(table)} "
                           f"({', '.join(_q(c) for c in columns)}) ONLINE;\nWithout it, deleting or updating the key "
                           f"of a row in {cols[0]['referenced_table']} locks all of {owner}.{table} (enq: TM - contention).",
        ))
    return out


async def run(conn: Connection, ctx: Context) -> Result:
    return transform(await fetch_tagged(conn, QUERIES), ctx)


SPEC = register(CollectorSpec(
    name="index_advice",
    engine="oracle",
    description="Unused (DBA_INDEX_USAGE) and redundant indexes, unindexed foreign keys",
    sql={120200: INDEXES_SQL},
    transform=transform,
    run=run,
    interval_s=3600,
    timeout_s=60,
    thresholds=THRESHOLDS,
))
