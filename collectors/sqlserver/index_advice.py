"""Index advice for the current database: missing indexes ranked like sp_BlitzIndex, unused
indexes (when the usage window is long enough), duplicate / left-prefix indexes, unindexed
foreign keys and large heaps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from collectors.common.indexes import IndexShape, fk_is_indexed, redundant_indexes
from collectors.common.rows import DAY_S, by_kind, fetch_tagged, num
from collectors.registry import register
from collectors.spec import CollectorSpec, Connection, Context, Finding, Result, Severity

# Usage statistics are cleared when the server restarts and when the database is restored,
# attached or brought online; sys.databases.create_date moves with a restore. The window is the
# shortest of server uptime, database age and table age.
WINDOW_SQL = """
SELECT DATEDIFF(SECOND, si.sqlserver_start_time, SYSDATETIME()) AS uptime_s,
       (SELECT DATEDIFF(SECOND, d.create_date, SYSDATETIME()) FROM sys.databases AS d
        WHERE d.database_id = DB_ID()) AS database_age_s,
       DB_NAME() AS database_name
FROM sys.dm_os_sys_info AS si
"""

MISSING_SQL = """
SELECT OBJECT_SCHEMA_NAME(mid.object_id) AS schema_name, OBJECT_NAME(mid.object_id) AS table_name,
       mid.equality_columns, mid.inequality_columns, mid.included_columns,
       migs.user_seeks, migs.user_scans, migs.avg_total_user_cost, migs.avg_user_impact,
       migs.last_user_seek, migs.unique_compiles
FROM sys.dm_db_missing_index_details AS mid
JOIN sys.dm_db_missing_index_groups AS mig ON mig.index_handle = mid.index_handle
JOIN sys.dm_db_missing_index_group_stats AS migs ON migs.group_handle = mig.index_group_handle
WHERE mid.database_id = DB_ID()
"""

INDEXES_SQL = """
SELECT s.name AS schema_name, t.name AS table_name, i.name AS index_name, i.index_id, i.type_desc,
       i.is_unique, i.is_primary_key, i.is_unique_constraint, i.has_filter, i.filter_definition,
       i.is_disabled, DATEDIFF(SECOND, t.create_date, SYSDATETIME()) AS table_age_s,
       us.user_seeks, us.user_scans, us.user_lookups, us.user_updates, us.last_user_seek, us.last_user_scan,
       (SELECT SUM(ps.used_page_count) * 8192 FROM sys.dm_db_partition_stats AS ps
        WHERE ps.object_id = i.object_id AND ps.index_id = i.index_id) AS size_bytes,
       (SELECT SUM(ps.row_count) FROM sys.dm_db_partition_stats AS ps
        WHERE ps.object_id = i.object_id AND ps.index_id = i.index_id) AS row_count
FROM sys.indexes AS i
JOIN sys.tables AS t ON t.object_id = i.object_id
JOIN sys.schemas AS s ON s.schema_id = t.schema_id
LEFT JOIN sys.dm_db_index_usage_stats AS us
       ON us.database_id = DB_ID() AND us.object_id = i.object_id AND us.index_id = i.index_id
WHERE t.is_ms_shipped = 0 AND i.is_hypothetical = 0
"""

INDEX_COLUMNS_SQL = """
SELECT OBJECT_SCHEMA_NAME(ic.object_id) AS schema_name, OBJECT_NAME(ic.object_id) AS table_name,
       ic.index_id, c.name AS column_name, ic.key_ordinal, ic.is_descending_key, ic.is_included_column
FROM sys.index_columns AS ic
JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
JOIN sys.tables AS t ON t.object_id = ic.object_id
WHERE t.is_ms_shipped = 0
"""

FOREIGN_KEYS_SQL = """
SELECT fk.name AS fk_name, OBJECT_SCHEMA_NAME(fk.parent_object_id) AS schema_name,
       OBJECT_NAME(fk.parent_object_id) AS table_name, c.name AS column_name, fkc.constraint_column_id,
       OBJECT_SCHEMA_NAME(fk.referenced_object_id) + '.' + OBJECT_NAME(fk.referenced_object_id) AS referenced_table
FROM sys.foreign_keys AS fk
JOIN sys.foreign_key_columns AS fkc ON fkc.constraint_object_id = fk.object_id
JOIN sys.columns AS c ON c.object_id = fkc.parent_object_id AND c.column_id = fkc.parent_column_id
"""

QUERIES = {"window": WINDOW_SQL, "missing": MISSING_SQL, "index": INDEXES_SQL,
           "index_column": INDEX_COLUMNS_SQL, "foreign_key": FOREIGN_KEYS_SQL}

THRESHOLDS = {
    "unused_min_window_days": 7,
    "unused_min_size_bytes": 10 * 1024 * 1024,
    # sp_BlitzIndex's benefit per day of uptime; a floor so one-off ad hoc queries stay quiet.
    "missing_index_min_impact": 100_000,
    "heap_min_rows": 100_000,
}


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    t = ctx.thresholds
    kinds = by_kind(rows)
    window = (kinds.get("window") or [{}])[0]
    uptime_s = num(window.get("uptime_s"))
    window_s = min(uptime_s, num(window.get("database_age_s"), uptime_s))
    indexes = _indexes(kinds.get("index", []), kinds.get("index_column", []))
    result = Result()
    result.findings += _missing(kinds.get("missing", []), uptime_s, t)
    result.findings += [f for ix in indexes.values() if (f := _unused(ix, window_s, t))]
    result.findings += _duplicates(indexes)
    result.findings += _unindexed_fks(kinds.get("foreign_key", []), indexes)
    result.findings += [f for ix in indexes.values() if (f := _heap(ix, t))]
    return result


def _indexes(index_rows, column_rows) -> dict[tuple, dict[str, Any]]:
    out = {(r["schema_name"], r["table_name"], r["index_id"]): {**r, "keys": [], "includes": []}
           for r in index_rows}
    for c in sorted(column_rows, key=lambda c: c["key_ordinal"] or 0):
        ix = out.get((c["schema_name"], c["table_name"], c["index_id"]))
        if ix is None:
            continue
        if c["is_included_column"]:
            ix["includes"].append(c["column_name"])
        else:
            ix["keys"].append(c["column_name"] + (" DESC" if c["is_descending_key"] else ""))
    return out


def _q(name: str) -> str:
    return "[" + name.replace("]", "]]") + "]"


def _table(row: Mapping[str, Any]) -> str:
    return f"{row['schema_name']}.{row['table_name']}"


def _missing(rows, uptime_s: float, t) -> list[Finding]:
    days = max(uptime_s / DAY_S, 1.0)
    out = []
    for r in rows:
        uses = num(r.get("user_seeks")) + num(r.get("user_scans"))
        impact = uses * num(r.get("avg_total_user_cost")) * num(r.get("avg_user_impact")) / days
        if impact < t["missing_index_min_impact"]:
            continue
        keys = ", ".join(c for c in (r.get("equality_columns"), r.get("inequality_columns")) if c)
        include = f" INCLUDE ({r['included_columns']})" if r.get("included_columns") else ""
        ddl = (f"CREATE NONCLUSTERED INDEX {_q('ix_' + r['table_name'] + '_dbfleet')} ON "
               f"{_q(r['schema_name'])}.{_q(r['table_name'])} ({keys}){include} WITH (ONLINE = ON)")
        out.append(Finding(
            check="missing_index", object=f"{_table(r)}({keys})", severity=Severity.warning,
            title=f"Missing index on {_table(r)} ({keys}): est. benefit {impact:,.0f}/day",
            details={"equality_columns": r.get("equality_columns"), "inequality_columns": r.get("inequality_columns"),
                     "included_columns": r.get("included_columns"), "user_seeks": r.get("user_seeks"),
                     "user_scans": r.get("user_scans"), "avg_total_user_cost": r.get("avg_total_user_cost"),
                     "avg_user_impact_pct": r.get("avg_user_impact"), "impact_per_day": round(impact),
                     "uptime_days": round(uptime_s / DAY_S, 1), "sql": MISSING_SQL.strip()},
            recommendation=f"{ddl};\nThe optimizer's suggestion ignores existing indexes and column order "
                           "beyond equality/inequality: merge it into a similar index where one exists. "
                           "ONLINE = ON needs Enterprise edition; otherwise the build blocks writes.",
        ))
    return out


def _unused(ix: Mapping[str, Any], window_s: float, t) -> Finding | None:
    if ix["index_id"] <= 1 or ix["is_primary_key"] or ix["is_unique"] or ix["is_unique_constraint"]:
        return None
    reads = num(ix.get("user_seeks")) + num(ix.get("user_scans")) + num(ix.get("user_lookups"))
    window = min(window_s, num(ix.get("table_age_s"), window_s))
    if reads > 0 or window < t["unused_min_window_days"] * DAY_S or ix["is_disabled"]:
        return None
    size = int(num(ix.get("size_bytes")))
    if size < t["unused_min_size_bytes"]:
        return None
    name = f"{_table(ix)}.{ix['index_name']}"
    return Finding(
        check="unused_index", object=name, severity=Severity.warning,
        title=f"Index {name} has not been read in {window / DAY_S:.0f} days but is maintained on every write",
        details={"size_bytes": size, "user_updates": int(num(ix.get("user_updates"))), "reads": 0,
                 "window_days": round(window / DAY_S, 1), "sql": INDEXES_SQL.strip()},
        recommendation=f"DROP INDEX {_q(ix['index_name'])} ON {_q(ix['schema_name'])}.{_q(ix['table_name'])};\n"
                       "Check first that no month-end job or index hint (WITH (INDEX(...))) uses it: "
                       "usage statistics only cover the window above. Or disable it "
                       "(ALTER INDEX ... DISABLE) to keep the definition for a quick rebuild.",
    )


def _shape(ix: Mapping[str, Any]) -> IndexShape:
    return IndexShape(
        table=_table(ix), name=ix["index_name"] or "", keys=tuple(ix["keys"]), includes=frozenset(ix["includes"]),
        unique=bool(ix["is_unique"]), constraint=bool(ix["is_primary_key"] or ix["is_unique_constraint"]),
        kind=ix["type_desc"], predicate=ix.get("filter_definition") or "", size_bytes=int(num(ix.get("size_bytes"))),
    )


def _duplicates(indexes: Mapping[tuple, Mapping[str, Any]]) -> list[Finding]:
    shapes = [_shape(ix) for ix in indexes.values() if ix["index_id"] > 1 and ix["keys"] and not ix["is_disabled"]]
    out = []
    for a, b in redundant_indexes(shapes):
        schema, table = a.table.split(".", 1)
        out.append(Finding(
            check="duplicate_index", object=f"{a.table}.{a.name}", severity=Severity.warning,
            title=f"Index {a.name} on {a.table} is redundant with {b.name}",
            details={"index": a.name, "columns": list(a.keys), "includes": sorted(a.includes),
                     "covered_by": b.name, "covered_by_columns": list(b.keys), "size_bytes": a.size_bytes,
                     "sql": INDEX_COLUMNS_SQL.strip()},
            recommendation=f"DROP INDEX {_q(a.name)} ON {_q(schema)}.{_q(table)};\n"
                           f"{b.name} serves the same seeks. Check for index hints naming {a.name} first.",
        ))
    return out


def _unindexed_fks(fk_rows, indexes: Mapping[tuple, Mapping[str, Any]]) -> list[Finding]:
    fks: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in fk_rows:
        fks.setdefault((r["schema_name"], r["table_name"], r["fk_name"]), []).append(r)
    out = []
    for (schema, table, fk), cols in fks.items():
        columns = [c["column_name"] for c in sorted(cols, key=lambda c: c["constraint_column_id"])]
        keys = [ix["keys"] for ix in indexes.values() if (ix["schema_name"], ix["table_name"]) == (schema, table)]
        if fk_is_indexed(columns, keys):
            continue
        collist = ", ".join(_q(c) for c in columns)
        out.append(Finding(
            check="fk_without_index", object=f"{schema}.{table}.{fk}", severity=Severity.warning,
            title=f"Foreign key {fk} on {schema}.{table}({', '.join(columns)}) has no index",
            details={"columns": columns, "references": cols[0]["referenced_table"], "sql": FOREIGN_KEYS_SQL.strip()},
            recommendation=f"CREATE INDEX {_q('ix_' + table + '_' + '_'.join(columns))} ON {_q(schema)}.{_q(table)} "
                           f"({collist}) WITH (ONLINE = ON);\nDeletes and key updates on "
                           f"{cols[0]['referenced_table']} scan {schema}.{table} for each row without it.",
        ))
    return out


def _heap(ix: Mapping[str, Any], t) -> Finding | None:
    rows = int(num(ix.get("row_count")))
    if ix["index_id"] != 0 or rows < t["heap_min_rows"]:
        return None
    return Finding(
        check="heap_table", object=_table(ix), severity=Severity.info,
        title=f"Table {_table(ix)} is a heap ({rows:,} rows, no clustered index)",
        details={"rows": rows, "size_bytes": int(num(ix.get("size_bytes"))),
                 "user_scans": int(num(ix.get("user_scans"))), "sql": INDEXES_SQL.strip()},
        recommendation="Heaps collect forwarded records and do not release space from deletes without a "
                       "rebuild. Add a clustered index (often on the primary key), during a quiet period: "
                       "it rewrites the table and rebuilds every nonclustered index.",
    )


async def run(conn: Connection, ctx: Context) -> Result:
    return transform(await fetch_tagged(conn, QUERIES), ctx)


SPEC = register(CollectorSpec(
    name="index_advice",
    engine="sqlserver",
    description="Missing, unused and duplicate indexes, unindexed foreign keys and heaps in this database",
    sql={11_000_000: INDEXES_SQL},
    transform=transform,
    run=run,
    interval_s=3600,
    timeout_s=60,
    thresholds=THRESHOLDS,
))
