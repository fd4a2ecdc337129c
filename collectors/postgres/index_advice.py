"""Index advice: unused, duplicate, invalid and missing indexes, unindexed foreign keys, bloat,
sequences running out (PgHero + Dexter + sp_BlitzIndex ideas).

The run hook reads several catalog views and returns one flat list of rows, each tagged with a
``kind``; the pure transform turns those rows into findings, so recorded rows replay the whole
collector without a server.

Cluster awareness: when the caller puts ``ctx.extra["peer_index_scans"]`` (a mapping
``"schema.index" -> idx_scan summed over the other instances tagged as the same cluster``), an
index only counts as unused when it is unused there too; a replica's reads use indexes the
primary never scans.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from collectors.postgres import capacity, hypothetical
from collectors.registry import register
from collectors.spec import CollectorSpec, Connection, Context, Finding, Result, Sample, Severity

WINDOW_SQL = """
select 'window' as kind, coalesce(d.stats_reset, pg_postmaster_start_time()) as stats_since, now() as now
from pg_stat_database d where d.datname = current_database()
"""

INDEX_SQL = """
select 'index' as kind, n.nspname as schema, t.relname as "table", i.relname as index,
       quote_ident(n.nspname) || '.' || quote_ident(i.relname) as qualified,
       x.indexrelid::bigint as oid, x.indrelid::bigint as table_oid, am.amname as am,
       x.indisunique as is_unique, x.indisprimary as is_primary, x.indisvalid as is_valid,
       x.indisreplident as is_replica_identity, x.indkey::text as indkey, x.indnkeyatts as nkey,
       x.indclass::text as opclasses, x.indcollation::text as collations,
       pg_get_expr(x.indexprs, x.indrelid) as exprs, pg_get_expr(x.indpred, x.indrelid) as pred,
       exists(select 1 from pg_constraint c where c.conindid = x.indexrelid and c.contype in ('p', 'u', 'x'))
         as backs_constraint,
       i.relkind = 'I' or exists(select 1 from pg_inherits h where h.inhrelid = x.indexrelid) as partitioned,
       pg_relation_size(x.indexrelid) as size_bytes, coalesce(s.idx_scan, 0) as idx_scan,
       pg_get_indexdef(x.indexrelid) as definition
from pg_index x
join pg_class i on i.oid = x.indexrelid
join pg_class t on t.oid = x.indrelid
join pg_namespace n on n.oid = t.relnamespace
join pg_am am on am.oid = i.relam
left join pg_stat_user_indexes s on s.indexrelid = x.indexrelid
where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
order by 2, 3, 4
"""

BUILD_SQL = """
select 'build' as kind, index_relid::bigint as index_oid, relid::bigint as table_oid, command, phase
from pg_stat_progress_create_index
"""

# conparentid = 0: a foreign key on a partitioned table is reported once, on the parent.
FK_SQL = """
select 'fk' as kind, n.nspname as schema, t.relname as "table", c.conname as constraint,
       c.conrelid::bigint as table_oid, c.conkey::int[] as columns,
       quote_ident(n.nspname) || '.' || quote_ident(t.relname) as qualified_table,
       (select string_agg(quote_ident(a.attname), ', ' order by k.ord)
          from unnest(c.conkey) with ordinality k(attnum, ord)
          join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum) as quoted_columns,
       c.confrelid::regclass::text as referenced, pg_total_relation_size(c.conrelid) as table_bytes
from pg_constraint c
join pg_class t on t.oid = c.conrelid
join pg_namespace n on n.oid = t.relnamespace
where c.contype = 'f' and c.conparentid = 0
order by 2, 3, 4
"""

TABLE_SQL = """
select 'table' as kind, schemaname as schema, relname as "table", relid::bigint as table_oid,
       quote_ident(schemaname) || '.' || quote_ident(relname) as qualified,
       seq_scan, seq_tup_read, coalesce(idx_scan, 0) as idx_scan, n_live_tup,
       pg_total_relation_size(relid) as size_bytes
from pg_stat_user_tables
where n_live_tup >= $1
order by seq_tup_read desc
"""

THRESHOLDS = {
    # An unused index costs a write on every insert/update and space in every backup; below
    # 10 MB it is rarely worth a change ticket. A week covers weekly jobs and reports.
    "unused_index_min_bytes": 10 * 1024 * 1024,
    "unused_index_min_window_days": 7,
    # The parent's DELETE/UPDATE scans the child table once per row when the FK is unindexed;
    # on a child under 1 MB that scan is a few pages.
    "fk_min_table_bytes": 1024 * 1024,
    **hypothetical.THRESHOLDS,
    **capacity.THRESHOLDS,
}


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    t = {**THRESHOLDS, **ctx.thresholds}
    by: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by[row["kind"]].append(row)
    indexes = by["index"]
    findings = unused_indexes(indexes, by["window"], t, ctx.extra.get("peer_index_scans"))
    findings += duplicate_indexes(indexes)
    findings += invalid_indexes(indexes, by["build"])
    findings += fks_without_index(by["fk"], indexes, t)
    findings += hypothetical.missing_indexes(by["table"], by["hypothetical"], by["hypopg"], t)
    findings += capacity.bloat_findings(by["table_bloat"], by["index_bloat"], t)
    findings += capacity.sequence_findings(by["sequence"], t)
    # Each index's scan count, so that cluster peers can tell whether an index is used anywhere.
    samples = [Sample("index_scans", float(ix["idx_scan"]), ix["qualified"]) for ix in indexes]
    return Result(findings=findings, samples=samples)


def _when(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _droppable(ix: Mapping[str, Any]) -> bool:
    """DROP INDEX works on it and nothing but lookups depend on it."""
    return (ix["is_valid"] and not ix["is_unique"] and not ix["is_primary"] and not ix["backs_constraint"]
            and not ix["is_replica_identity"] and not ix["partitioned"])


def _drop_ddl(ix: Mapping[str, Any]) -> str:
    return (f"DROP INDEX CONCURRENTLY {ix['qualified']};\n-- to undo: {ix['definition'].replace(' INDEX ', ' INDEX CONCURRENTLY ', 1)};\n"
            "-- CONCURRENTLY cannot run inside a transaction block; it waits for open transactions "
            "on the table but does not block reads or writes.")


def unused_indexes(indexes: Sequence[Mapping[str, Any]], window: Sequence[Mapping[str, Any]],
                   t: Mapping[str, Any], peer_scans: Mapping[str, int] | None) -> list[Finding]:
    if not window:
        return []
    since = _when(window[0]["stats_since"])
    days = (_when(window[0]["now"]) - since).total_seconds() / 86400
    if days < t["unused_index_min_window_days"]:
        return []  # too short a window to call anything unused
    out = []
    for ix in indexes:
        name = f"{ix['schema']}.{ix['index']}"
        peers = (peer_scans or {}).get(name, 0)
        if not _droppable(ix) or ix["idx_scan"] or peers or ix["size_bytes"] < t["unused_index_min_bytes"]:
            continue
        out.append(Finding(
            check="unused_index", object=name, severity=Severity.info,
            title=f"Index {name} ({ix['size_bytes'] / 2**20:,.1f} MB) has not been used in {days:,.1f} days",
            details={"table": f"{ix['schema']}.{ix['table']}", "size_bytes": ix["size_bytes"], "idx_scan": 0,
                     "stats_window_days": round(days, 1), "stats_since": since.isoformat(),
                     "checked_peers": peer_scans is not None, "definition": ix["definition"],
                     "sql": f"select idx_scan, pg_size_pretty(pg_relation_size(indexrelid)) from pg_stat_user_indexes where indexrelid = '{ix['qualified']}'::regclass"},
            recommendation="If no replica, report or monthly job uses it (idx_scan is per instance), drop it:\n"
                           + _drop_ddl(ix),
        ))
    return out


def _cols(ix: Mapping[str, Any], field: str = "indkey") -> list[str]:
    return ix[field].split()


def _covers(longer: Mapping[str, Any], shorter: Mapping[str, Any]) -> bool:
    """`longer` serves every lookup `shorter` does: same shape, shorter's keys lead longer's."""
    n, m = shorter["nkey"], longer["nkey"]
    if n > m or (n < m and longer["am"] != "btree"):
        return False
    if any(_cols(longer, f)[:n] != _cols(shorter, f)[:n] for f in ("indkey", "opclasses", "collations")):
        return False
    included = set(_cols(shorter)[n:])  # INCLUDE columns must be there too, in any position
    return included <= set(_cols(longer))


def _same_shape(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return (a["table_oid"] == b["table_oid"] and a["am"] == b["am"] and a["pred"] == b["pred"]
            and a["exprs"] == b["exprs"] and a["is_valid"] and b["is_valid"]
            and not a["partitioned"] and not b["partitioned"])


def _redundant(a: Mapping[str, Any], b: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Which of a pair to drop, or None; for identical indexes keep the one enforcing something."""
    if _covers(b, a) and _covers(a, b):
        keep_a = (a["is_unique"], a["backs_constraint"], b["index"]) > (b["is_unique"], b["backs_constraint"], a["index"])
        drop = b if keep_a else a
        return drop if _droppable(drop) else None
    if _covers(b, a) and not a["is_unique"] and _droppable(a):
        return a
    if _covers(a, b) and not b["is_unique"] and _droppable(b):
        return b
    return None


def duplicate_indexes(indexes: Sequence[Mapping[str, Any]]) -> list[Finding]:
    by_table: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for ix in indexes:
        by_table[ix["table_oid"]].append(ix)
    found: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]] = {}
    for group in by_table.values():
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if _same_shape(a, b) and (drop := _redundant(a, b)) is not None:
                    found.setdefault(drop["qualified"], (drop, b if drop is a else a))
    return [_duplicate_finding(drop, keep) for drop, keep in found.values()]


def _duplicate_finding(drop: Mapping[str, Any], keep: Mapping[str, Any]) -> Finding:
    name = f"{drop['schema']}.{drop['index']}"
    return Finding(
        check="duplicate_index", object=name, severity=Severity.warning,
        title=f"Index {name} is redundant: {keep['index']} covers the same lookups",
        details={"table": f"{drop['schema']}.{drop['table']}", "redundant": drop["definition"],
                 "covered_by": keep["definition"], "size_bytes": drop["size_bytes"], "idx_scan": drop["idx_scan"],
                 "sql": f"select indexrelid::regclass, pg_get_indexdef(indexrelid) from pg_index where indrelid = '{drop['schema']}.{drop['table']}'::regclass"},
        recommendation=f"Queries using {drop['index']} can use {keep['index']} instead. Drop it:\n" + _drop_ddl(drop),
    )


def invalid_indexes(indexes: Sequence[Mapping[str, Any]], builds: Sequence[Mapping[str, Any]]) -> list[Finding]:
    building = {b["index_oid"] for b in builds}
    # Early in a build the progress view has no index yet: spare every invalid index on that table.
    busy_tables = {b["table_oid"] for b in builds if not b["index_oid"]}
    out = []
    for ix in indexes:
        if ix["is_valid"] or ix["oid"] in building or ix["table_oid"] in busy_tables:
            continue
        name = f"{ix['schema']}.{ix['index']}"
        out.append(Finding(
            check="invalid_index", object=name, severity=Severity.warning,
            title=f"Index {name} is invalid: a CREATE INDEX CONCURRENTLY or REINDEX failed",
            details={"table": f"{ix['schema']}.{ix['table']}", "definition": ix["definition"], "size_bytes": ix["size_bytes"],
                     "sql": "select indexrelid::regclass from pg_index where not indisvalid"},
            recommendation="The planner never uses it but every write still maintains it. Rebuild it "
                           f"with REINDEX INDEX CONCURRENTLY {ix['qualified']}; or drop it with "
                           f"DROP INDEX CONCURRENTLY {ix['qualified']}; and create it again. Find why "
                           "the build failed first (a unique violation, a deadlock, a cancel).",
        ))
    return out


def fks_without_index(fks: Sequence[Mapping[str, Any]], indexes: Sequence[Mapping[str, Any]],
                      t: Mapping[str, Any]) -> list[Finding]:
    usable: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for ix in indexes:
        if ix["is_valid"] and ix["pred"] is None:  # a partial index does not serve every row
            usable[ix["table_oid"]].append(ix)
    out = []
    for fk in fks:
        cols = [str(c) for c in fk["columns"]]
        served = any(set(_cols(ix)[: len(cols)]) == set(cols) for ix in usable[fk["table_oid"]])
        if served or fk["table_bytes"] < t["fk_min_table_bytes"]:
            continue
        name = f"{fk['schema']}.{fk['table']}.{fk['constraint']}"
        out.append(Finding(
            check="fk_without_index", object=name, severity=Severity.info,
            title=f"Foreign key {fk['constraint']} on {fk['schema']}.{fk['table']} ({fk['quoted_columns']}) has no index",
            details={"table": f"{fk['schema']}.{fk['table']}", "columns": fk["quoted_columns"],
                     "references": fk["referenced"], "table_bytes": fk["table_bytes"],
                     "sql": f"select conname, pg_get_constraintdef(oid) from pg_constraint where conrelid = '{fk['qualified_table']}'::regclass and contype = 'f'"},
            recommendation=f"Every DELETE or key UPDATE on {fk['referenced']} scans {fk['schema']}.{fk['table']} "
                           f"and locks it for the check. Index the referencing columns:\n"
                           f"CREATE INDEX CONCURRENTLY ON {fk['qualified_table']} ({fk['quoted_columns']});\n"
                           "-- builds without blocking writes; takes longer and must not run in a transaction block.",
        ))
    return out


async def collect(conn: Connection, ctx: Context) -> list[dict[str, Any]]:
    """Every row the transform needs: catalogs, scan statistics, hypopg-costed candidates."""
    t = {**THRESHOLDS, **ctx.thresholds}
    rows: list[dict[str, Any]] = []
    for sql in (WINDOW_SQL, INDEX_SQL, BUILD_SQL, FK_SQL):
        rows += await conn.fetch(sql)
    tables = await conn.fetch(TABLE_SQL, int(t["missing_index_min_rows"]))
    rows += tables
    rows += await hypothetical.validate(conn, hypothetical.heavy_tables(tables, t), t)
    rows += await capacity.fetch(conn)
    return rows


async def run(conn: Connection, ctx: Context) -> Result:
    return transform(await collect(conn, ctx), ctx)


SPEC = register(CollectorSpec(
    name="index_advice",
    engine="postgres",
    description="Unused, duplicate, invalid and missing indexes (hypopg-validated), unindexed FKs, bloat, sequences",
    sql={120000: INDEX_SQL},
    transform=transform,
    run=run,
    interval_s=3600,
    timeout_s=120,
    thresholds=THRESHOLDS,
    peer_metrics=("index_scans",),
))
