"""Space and headroom checks for index_advice: table/index bloat estimates, sequences running out.

The bloat estimates follow the method of ioguix's pgsql-bloat-estimation (the queries PgHero,
pgexperts and postgres_dba build on): expected pages from pg_stats widths, tuple headers,
alignment and fillfactor, against relpages. They need no extension and read no table, so they
are estimates: good to rank, not to quote to the byte (pgstattuple gives the exact figure).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from collectors.spec import Connection, Finding, Severity

_MAXALIGN = "case when version() ~ 'mingw32|64-bit|x86_64|ppc64|ia64|amd64|aarch64|arm64' then 8 else 4 end"

TABLE_BLOAT_SQL = f"""
with cols as (
  select ns.nspname as schema, tbl.relname as tblname, tbl.reltuples, tbl.relpages as heap_pages,
         coalesce(toast.relpages, 0) as toast_pages, coalesce(toast.reltuples, 0) as toast_tuples,
         coalesce(substring(array_to_string(tbl.reloptions, ' ') from 'fillfactor=([0-9]+)')::int, 100) as fillfactor,
         current_setting('block_size')::numeric as bs, {_MAXALIGN} as ma,
         23 + case when max(coalesce(s.null_frac, 0)) > 0 then (7 + count(*)) / 8 else 0 end as hdr,
         sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 1024)) as data_width
  from pg_attribute att
  join pg_class tbl on tbl.oid = att.attrelid
  join pg_namespace ns on ns.oid = tbl.relnamespace
  join pg_stats s on s.schemaname = ns.nspname and s.tablename = tbl.relname
                 and not s.inherited and s.attname = att.attname
  left join pg_class toast on toast.oid = tbl.reltoastrelid
  where att.attnum > 0 and not att.attisdropped and tbl.relkind = 'r' and tbl.reltuples > 0
    and ns.nspname not in ('pg_catalog', 'information_schema')
  group by 1, 2, 3, 4, 5, 6, 7, 8, 9
), sized as (
  select *, 4 + hdr + data_width + 2 * ma
              - case when hdr % ma = 0 then ma else hdr % ma end
              - case when ceil(data_width)::int % ma = 0 then ma else ceil(data_width)::int % ma end as tuple_width
  from cols
)
select 'table_bloat' as kind, schema, tblname as "table",
       quote_ident(schema) || '.' || quote_ident(tblname) as qualified,
       ((heap_pages + toast_pages) * bs)::bigint as size_bytes,
       (greatest(heap_pages + toast_pages
                 - ceil(reltuples / ((bs - 24) * fillfactor / (tuple_width * 100)))
                 - ceil(toast_tuples / 4), 0) * bs)::bigint as bloat_bytes
from sized
where heap_pages > 0
"""

INDEX_BLOAT_SQL = f"""
with idx as (
  select n.nspname as schema, t.relname as tblname, c.relname as idxname, c.oid as index_oid,
         c.reltuples, c.relpages,
         coalesce(substring(array_to_string(c.reloptions, ' ') from 'fillfactor=([0-9]+)')::int, 90) as fillfactor
  from pg_index x
  join pg_class c on c.oid = x.indexrelid
  join pg_class t on t.oid = x.indrelid
  join pg_namespace n on n.oid = c.relnamespace
  join pg_am am on am.oid = c.relam
  where am.amname = 'btree' and x.indisvalid and t.relkind = 'r' and c.relpages > 0 and c.reltuples > 0
    and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
), widths as (
  select idx.schema, idx.tblname, idx.idxname, idx.reltuples, idx.relpages, idx.fillfactor,
         current_setting('block_size')::numeric as bs, {_MAXALIGN} as ma,
         -- index tuple header, plus the null bitmap when any key column has nulls
         case when max(coalesce(s.null_frac, 0)) = 0 then 2 else 6 end as hdr,
         sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 1024)) as data_width
  from idx
  join pg_attribute a on a.attrelid = idx.index_oid and a.attnum > 0
  join pg_stats s on s.schemaname = idx.schema
   and ((s.tablename = idx.tblname and s.attname = pg_get_indexdef(a.attrelid, a.attnum, true))
        or (s.tablename = idx.idxname and s.attname = a.attname))
  group by 1, 2, 3, 4, 5, 6, 7, 8
), sized as (
  select *, hdr + ma - case when hdr % ma = 0 then ma else hdr % ma end
            + data_width + ma - case when data_width = 0 then 0
                                     when data_width::int % ma = 0 then ma
                                     else data_width::int % ma end as tuple_width
  from widths
)
select 'index_bloat' as kind, schema, tblname as "table", idxname as index,
       quote_ident(schema) || '.' || quote_ident(idxname) as qualified,
       (relpages * bs)::bigint as size_bytes,
       (greatest(relpages - 1 - ceil(reltuples / floor((bs - 16 - 24) * fillfactor / (100 * (4 + tuple_width)))), 0)
        * bs)::bigint as bloat_bytes
from sized
"""

# A sequence owned by an int column runs out at the column's limit, not at its own bigint max.
SEQUENCE_SQL = """
select 'sequence' as kind, s.schemaname as schema, s.sequencename as sequence,
       quote_ident(s.schemaname) || '.' || quote_ident(s.sequencename) as qualified,
       s.last_value, s.min_value, s.max_value, s.increment_by, col.column_name, col.column_type
from pg_sequences s
left join lateral (
  select d.refobjid::regclass::text || '.' || quote_ident(a.attname) as column_name,
         format_type(a.atttypid, null) as column_type
  from pg_depend d
  join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
  where d.classid = 'pg_class'::regclass and d.refclassid = 'pg_class'::regclass
    and d.objid = (quote_ident(s.schemaname) || '.' || quote_ident(s.sequencename))::regclass
    and d.deptype in ('a', 'i') and d.refobjsubid > 0
  limit 1) col on true
where s.last_value is not null and not s.cycle
"""

THRESHOLDS = {
    # Below 100 MB a rebuild buys little; half the pages wasted is where pgexperts flags it.
    "bloat_min_bytes": 100 * 1024 * 1024,
    "bloat_min_pct": 50,
    "sequence_warning_pct": 90,
    "sequence_critical_pct": 98,
}

_TYPE_MAX = {"smallint": 2**15 - 1, "integer": 2**31 - 1, "bigint": 2**63 - 1}


# The three reads in one statement (one round trip, one row of JSON).
CAPACITY_SQL = f"""
select (select coalesce(json_agg(r), '[]') from ({TABLE_BLOAT_SQL}) r)::text as table_bloat,
       (select coalesce(json_agg(r), '[]') from ({INDEX_BLOAT_SQL}) r)::text as index_bloat,
       (select coalesce(json_agg(r), '[]') from ({SEQUENCE_SQL}) r)::text as sequences
"""


async def fetch(conn: Connection) -> list[dict[str, Any]]:
    [row] = await conn.fetch(CAPACITY_SQL)
    return [*json.loads(row["table_bloat"]), *json.loads(row["index_bloat"]), *json.loads(row["sequences"])]


def worth_keeping(rows: Sequence[Mapping[str, Any]], t: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows that give a finding under today's thresholds: what a run between two reads reuses."""
    keep = [dict(r) for r in rows if r["kind"] in ("table_bloat", "index_bloat")
            and r["size_bytes"] >= t["bloat_min_bytes"] and 100 * r["bloat_bytes"] >= t["bloat_min_pct"] * r["size_bytes"]]
    keep += [dict(r) for r in rows if r["kind"] == "sequence" and _headroom(r)[0] >= t["sequence_warning_pct"]]
    return keep


def bloat_findings(tables: Sequence[Mapping[str, Any]], indexes: Sequence[Mapping[str, Any]],
                   t: Mapping[str, Any]) -> list[Finding]:
    out = []
    for kind, rows in (("table", tables), ("index", indexes)):
        for r in rows:
            size, bloat = r["size_bytes"], r["bloat_bytes"]
            if size < t["bloat_min_bytes"] or 100 * bloat < t["bloat_min_pct"] * size:
                continue
            out.append(_bloat(kind, r, 100 * bloat / size))
    return out


def _bloat(kind: str, r: Mapping[str, Any], pct: float) -> Finding:
    name = f"{r['schema']}.{r[kind]}"
    if kind == "index":
        fix = (f"REINDEX INDEX CONCURRENTLY {r['qualified']};\n-- rebuilds beside the old index without "
               "blocking writes; needs free space for a second copy while it runs.")
    else:
        fix = ("Rewrite it online with pg_repack (extension + client). VACUUM FULL also works but holds "
               f"an ACCESS EXCLUSIVE lock on {name} for the whole rewrite: reads and writes stop. "
               "Then find why it bloated: long transactions, autovacuum too slow for the update rate.")
    return Finding(
        check=f"{kind}_bloat", object=name, severity=Severity.warning,
        title=f"{kind.capitalize()} {name} is about {pct:.0f}% bloat "
              f"({r['bloat_bytes'] / 2**20:,.0f} of {r['size_bytes'] / 2**20:,.0f} MB)",
        details={"size_bytes": r["size_bytes"], "estimated_bloat_bytes": r["bloat_bytes"],
                 "estimated_bloat_pct": round(pct, 1), "method": "pg_stats-based estimate (ioguix)",
                 "sql": f"select * from pgstattuple{'' if kind == 'table' else 'index'}('{r['qualified']}')  -- exact, reads the whole relation"},
        recommendation=fix,
    )


def _headroom(r: Mapping[str, Any]) -> tuple[float, int]:
    """Percent of the usable range consumed, and the effective limit in the direction of travel."""
    type_max = _TYPE_MAX.get(r["column_type"] or "", 2**63 - 1)
    if r["increment_by"] > 0:
        limit = min(r["max_value"], type_max)
        return 100.0 * (r["last_value"] - r["min_value"]) / max(1, limit - r["min_value"]), limit
    limit = max(r["min_value"], -type_max - 1)
    return 100.0 * (r["max_value"] - r["last_value"]) / max(1, r["max_value"] - limit), limit


def sequence_findings(rows: Sequence[Mapping[str, Any]], t: Mapping[str, Any]) -> list[Finding]:
    out = []
    for r in rows:
        pct, limit = _headroom(r)
        if pct < t["sequence_warning_pct"]:
            continue
        name = f"{r['schema']}.{r['sequence']}"
        severity = Severity.critical if pct >= t["sequence_critical_pct"] else Severity.warning
        column = f" feeding {r['column_name']} ({r['column_type']})" if r["column_name"] else ""
        out.append(Finding(
            check="sequence_exhaustion", object=name, severity=severity,
            title=f"Sequence {name}{column} has used {pct:.1f}% of its range",
            details={"last_value": r["last_value"], "limit": limit, "increment_by": r["increment_by"],
                     "column": r["column_name"], "column_type": r["column_type"], "used_pct": round(pct, 2),
                     "sql": f"select last_value, max_value from pg_sequences where schemaname = '{r['schema']}' and sequencename = '{r['sequence']}'"},
            recommendation="When it runs out, every insert fails. Widen the column to bigint "
                           f"(ALTER TABLE ... ALTER COLUMN ... TYPE bigint rewrites the table under an ACCESS "
                           f"EXCLUSIVE lock; plan it, or migrate through a new column) and then "
                           f"ALTER SEQUENCE {r['qualified']} AS bigint MAXVALUE 9223372036854775807;",
        ))
    return out
