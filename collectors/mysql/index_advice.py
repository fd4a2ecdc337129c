"""Index advice: unused, duplicate/redundant indexes and tables without a primary key.

fk_without_index is not checked here: InnoDB creates an index for every foreign key that has none
(and refuses to drop the last index a foreign key needs), so the PostgreSQL problem cannot arise.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from collectors.common.indexes import IndexShape
from collectors.common.indexes import redundant_indexes as common_redundant_indexes
from collectors.mysql._common import (
    MARIADB_MIN,
    MYSQL_57,
    MYSQL_80,
    SYSTEM_SCHEMAS_SQL,
    as_int,
    qualified,
    quote_ident,
    scoped_snapshot,
    snapshot_hook,
    snapshot_of,
)
from collectors.registry import register
from collectors.spec import CollectorSpec, Context, Finding, Result, Severity

_SERVER = ("SELECT @@performance_schema AS ps_enabled, "
           "(SELECT VARIABLE_VALUE FROM {} WHERE VARIABLE_NAME = 'Uptime') AS uptime_s")
_INDEXES = f"""
SELECT TABLE_SCHEMA AS table_schema, TABLE_NAME AS table_name, INDEX_NAME AS index_name,
       NON_UNIQUE AS non_unique, SEQ_IN_INDEX AS seq, {{column}} AS column_name,
       SUB_PART AS sub_part, INDEX_TYPE AS index_type
FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA NOT IN {SYSTEM_SCHEMAS_SQL}
ORDER BY TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX
"""
_USAGE = f"""
SELECT OBJECT_SCHEMA AS table_schema, OBJECT_NAME AS table_name, INDEX_NAME AS index_name,
       COUNT_STAR AS count_star
FROM performance_schema.table_io_waits_summary_by_index_usage
WHERE INDEX_NAME IS NOT NULL AND OBJECT_TYPE = 'TABLE' AND OBJECT_SCHEMA NOT IN {SYSTEM_SCHEMAS_SQL}
"""
_NO_PRIMARY_KEY = f"""
SELECT t.TABLE_SCHEMA AS table_schema, t.TABLE_NAME AS table_name, t.ENGINE AS engine,
       t.TABLE_ROWS AS table_rows
FROM information_schema.TABLES t
WHERE t.TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') AND t.TABLE_SCHEMA NOT IN {SYSTEM_SCHEMAS_SQL}
  AND NOT EXISTS (SELECT 1 FROM information_schema.TABLE_CONSTRAINTS c
                  WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME
                    AND c.CONSTRAINT_TYPE = 'PRIMARY KEY')
ORDER BY 1, 2
"""
QUERIES = {
    "server": {MYSQL_57: _SERVER.format("performance_schema.global_status"),
               MARIADB_MIN: _SERVER.format("information_schema.GLOBAL_STATUS")},
    # MySQL 8 functional key parts have no COLUMN_NAME, only EXPRESSION.
    "indexes": {MYSQL_57: _INDEXES.format(column="COLUMN_NAME"),
                MYSQL_80: _INDEXES.format(column="COALESCE(COLUMN_NAME, CONCAT('(', EXPRESSION, ')'))"),
                MARIADB_MIN: _INDEXES.format(column="COLUMN_NAME")},
    "usage": {MYSQL_57: _USAGE},
    "no_primary_key": {MYSQL_57: _NO_PRIMARY_KEY},
}

# A week of uptime covers weekly jobs and reports; an index unused for less may just be waiting
# for month-end. Tests set 0.
THRESHOLDS = {"unused_index_min_uptime_days": 7}


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    result = Result()
    snap = snapshot_of(rows)
    if snap is None:
        return result
    snap = scoped_snapshot(snap, ctx)
    t = ctx.thresholds
    tables = _indexes_by_table(snap.get("indexes", []))
    idle = _idle_indexes(snap, t)
    # When the covering index is the idle one and the "redundant" one does the work, dropping the
    # covering one (reported as unused) is the right advice, not dropping both.
    redundant = [r for r in redundant_indexes(tables)
                 if not ((r[0], r[1], r[3]["name"]) in idle and (r[0], r[1], r[2]["name"]) not in idle)]
    result.findings += [_duplicate_finding(*r, ctx) for r in redundant]
    dropped = {(s, tb, a["name"]) for s, tb, a, _ in redundant}
    result.findings += _unused_findings(snap, tables, idle - dropped, ctx)
    result.findings += [_no_pk_finding(row, tables) for row in snap.get("no_primary_key", [])]
    return result


def _idle_indexes(snap: Mapping[str, Any], t: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    """Indexes with no reads since the restart, if the PS is on and the server has been up long enough."""
    server = (snap.get("server") or [{}])[0]
    if not as_int(server.get("ps_enabled")) or as_int(server.get("uptime_s")) < t["unused_index_min_uptime_days"] * 86400:
        return set()
    return {(r["table_schema"], r["table_name"], r["index_name"])
            for r in snap.get("usage", []) if as_int(r["count_star"]) == 0}


def _indexes_by_table(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """{(schema, table): {index: {name, unique, type, cols}}} with prefix lengths in the column key."""
    tables: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        idx = tables[(row["table_schema"], row["table_name"])].setdefault(row["index_name"], {
            "name": row["index_name"], "unique": not as_int(row["non_unique"]),
            "type": row["index_type"], "cols": []})
        col = str(row["column_name"])
        idx["cols"].append(f"{col}({row['sub_part']})" if row.get("sub_part") else col)
    return tables


def redundant_indexes(tables: Mapping[tuple[str, str], Mapping[str, Mapping[str, Any]]]) -> list[tuple]:
    """(schema, table, redundant index, index that covers it) as sys.schema_redundant_indexes finds:
    the neutral rule (collectors.common.indexes) with PRIMARY as the index that enforces something.
    FULLTEXT and SPATIAL indexes serve other lookups than their columns' order: never compared."""
    out = []
    for (schema, table), indexes in sorted(tables.items()):
        shapes = [IndexShape(table=table, name=ix["name"], keys=tuple(ix["cols"]), unique=ix["unique"],
                             constraint=ix["name"] == "PRIMARY", kind=ix["type"])
                  for ix in sorted(indexes.values(), key=lambda i: i["name"])
                  if ix["type"] not in ("FULLTEXT", "SPATIAL")]
        out += [(schema, table, indexes[a.name], indexes[b.name]) for a, b in common_redundant_indexes(shapes)]
    return out


def _duplicate_finding(schema: str, table: str, a: Mapping[str, Any], b: Mapping[str, Any], ctx: Context) -> Finding:
    same = a["cols"] == b["cols"]
    return Finding(
        check="duplicate_index",
        object=f"{schema}.{table}.{a['name']}",
        severity=Severity.warning,
        title=(f"Index {a['name']} on {schema}.{table} "
               + (f"duplicates {b['name']}" if same else f"is a leading prefix of {b['name']}")),
        details={"index": a["name"], "columns": a["cols"], "covered_by": b["name"],
                 "covered_by_columns": b["cols"],
                 "sql": f"SHOW INDEX FROM {qualified(schema, table)}"},
        recommendation=f"ALTER TABLE {qualified(schema, table)} DROP INDEX {quote_ident(a['name'])};\n"
                       + _drop_risk(schema, table, a["name"], ctx),
    )


def _drop_risk(schema: str, table: str, index: str, ctx: Context) -> str:
    where = f"ALTER TABLE {qualified(schema, table)} ALTER INDEX {quote_ident(index)}"
    if ctx.server_version >= 100600:
        trial = f"Try it first with {where} IGNORED (MariaDB 10.6+), which the optimizer stops using at once."
    elif MYSQL_80 <= ctx.server_version < MARIADB_MIN:
        trial = f"Try it first with {where} INVISIBLE, which the optimizer stops using at once."
    else:
        trial = "Check the slow log for queries that name it in an index hint before dropping it."
    return (f"{trial} Queries with FORCE/USE INDEX ({index}) fail once it is gone. The DROP is "
            "online in InnoDB (metadata lock only) but waits behind long transactions on the table.")


def _unused_findings(snap: Mapping[str, Any], tables: Mapping, idle: set, ctx: Context) -> list[Finding]:
    uptime_days = as_int((snap.get("server") or [{}])[0].get("uptime_s")) / 86400
    out = []
    for schema, table, name in sorted(idle):
        idx = tables.get((schema, table), {}).get(name)
        # FULLTEXT lookups go through InnoDB's auxiliary FTS tables, not this index's I/O counters,
        # so a zero count proves nothing for them.
        if idx is None or name == "PRIMARY" or idx["unique"] or idx["type"] in ("FULLTEXT", "SPATIAL"):
            continue
        out.append(Finding(
            check="unused_index",
            object=f"{schema}.{table}.{name}",
            severity=Severity.info,
            title=f"Index {name} on {schema}.{table} was not used in {uptime_days:.1f} days of uptime",
            details={"index": name, "columns": idx["cols"], "uptime_days": round(uptime_days, 1),
                     "sql": "SELECT * FROM sys.schema_unused_indexes"},
            recommendation=f"ALTER TABLE {qualified(schema, table)} DROP INDEX {quote_ident(name)};\n"
                           "Usage counts start at the last restart and are per server: check every "
                           "replica that serves reads before dropping. " + _drop_risk(schema, table, name, ctx),
        ))
    return out


def _no_pk_finding(row: Mapping[str, Any], tables: Mapping) -> Finding:
    schema, table = row["table_schema"], row["table_name"]
    has_unique = any(i["unique"] for i in tables.get((schema, table), {}).values())
    return Finding(
        check="table_without_primary_key",
        object=f"{schema}.{table}",
        # A unique key still lets row-based replication find rows, so it is less urgent.
        severity=Severity.info if has_unique else Severity.warning,
        title=f"Table {schema}.{table} has no primary key",
        details={"engine": row.get("engine"), "estimated_rows": as_int(row.get("table_rows")),
                 "has_unique_key": has_unique,
                 "sql": f"SHOW CREATE TABLE {qualified(schema, table)}"},
        recommendation=f"ALTER TABLE {qualified(schema, table)} ADD COLUMN id BIGINT UNSIGNED NOT NULL "
                       "AUTO_INCREMENT PRIMARY KEY; (or a PRIMARY KEY on an existing unique, NOT NULL "
                       "column set). Without one, row-based replication scans the whole table for "
                       "every changed row, Galera/Group Replication refuse writes and online schema "
                       "tools cannot chunk it. The ALTER rebuilds the table: run it off-peak.",
    )


SPEC = register(CollectorSpec(
    name="index_advice",
    engine="mysql",
    description="Unused and redundant indexes, tables without a primary key",
    sql=QUERIES["indexes"],
    run=snapshot_hook(QUERIES, transform, optional=("usage",)),
    transform=transform,
    interval_s=3600,
    timeout_s=60,
    thresholds=THRESHOLDS,
    needs=('schemas',),
))
