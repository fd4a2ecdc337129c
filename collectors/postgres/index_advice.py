"""Index advice: unused, duplicate, invalid and missing indexes, unindexed foreign keys, bloat,
sequences running out (PgHero + Dexter + sp_BlitzIndex ideas).

The run hook returns one flat list of rows, each tagged with a ``kind``; the pure transform turns
those rows into findings, so recorded rows replay the whole collector without a server. A steady
run sends one statement (LIVE_SQL: scans, sizes, builds, table counters and the catalogs'
fingerprint); definitions, bloat estimates and hypopg's candidates come from the state until the
fingerprint moves or their own interval (capacity_interval_s, hypothetical_interval_s) passes.

Cluster awareness: when the caller puts ``ctx.extra["peer_index_scans"]`` (a mapping from the
``index_scans`` samples' object, the index's quoted ``schema.index``, to idx_scan summed over the
other instances tagged as the same cluster), an index only counts as unused when it is unused there
too; a replica's reads use indexes the primary never scans. ``peer_index_scans_reporting`` names the
peers that sent samples at all: a peer that did not is unknown, not zero, and the finding says so.

Partitioned tables: statistics live on the leaves (partitions and their indexes); a partitioned
table or index is judged by its leaves' sums and reported once, on the parent.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collectors.common.indexes import IndexShape, redundant_indexes
from collectors.postgres import capacity, hypothetical
from collectors.postgres.catalog_cache import (
    cached,
    fingerprint_sql,
    keep,
    part_due,
    part_kept,
    part_rows,
)
from collectors.registry import register
from collectors.spec import (
    CollectorSpec,
    Connection,
    Context,
    Finding,
    Result,
    Sample,
    Severity,
)

# Definitions only: sizes and scan counts come from LIVE_SQL on every run. A partitioned index has
# no storage and no statistics: its size and scans are its leaves' (listed here, summed per run).
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
       i.relkind = 'I' as is_partitioned_index,
       (select quote_ident(pn.nspname) || '.' || quote_ident(pi.relname) from pg_inherits h
          join pg_class pi on pi.oid = h.inhparent join pg_namespace pn on pn.oid = pi.relnamespace
         where h.inhrelid = x.indexrelid) as attached_to,
       case when i.relkind = 'I' then (select array_agg(p.relid::bigint) from pg_partition_tree(x.indexrelid) p
                                        where p.isleaf) end as leaves,
       pg_get_indexdef(x.indexrelid) as definition
from pg_index x
join pg_class i on i.oid = x.indexrelid
join pg_class t on t.oid = x.indrelid
join pg_namespace n on n.oid = t.relnamespace
join pg_am am on am.oid = i.relam
where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
order by 2, 3, 4
"""

# conparentid = 0: a foreign key on a partitioned table is reported once, on the parent, sized by
# its leaf partitions (the parent itself has no storage). CREATE INDEX CONCURRENTLY does not work on
# a partitioned table, so its DDL is built per direct partition (identifiers quoted by the server).
FK_SQL = """
select 'fk' as kind, n.nspname as schema, t.relname as "table", c.conname as constraint,
       c.conrelid::bigint as table_oid, c.conkey::int[] as columns,
       quote_ident(n.nspname) || '.' || quote_ident(t.relname) as qualified_table,
       k.quoted as quoted_columns, c.confrelid::regclass::text as referenced,
       c.oid::bigint as constraint_oid,  -- sized per run (LIVE_SQL)
       t.relkind = 'p' as partitioned,
       -- The check's lookup runs on each partition: an index on every leaf (by column name, since a
       -- partition's attnums can differ) serves it even when the parent has none.
       t.relkind = 'p' and not exists (
         select 1 from pg_partition_tree(c.conrelid) p where p.isleaf and not exists (
           select 1 from pg_index li where li.indrelid = p.relid and li.indisvalid and li.indpred is null
             and (select array_agg(a.attname order by a.attname) from pg_attribute a
                   where a.attrelid = p.relid and a.attnum = any((li.indkey::int2[])[0:cardinality(c.conkey) - 1]))
               = (select array_agg(a.attname order by a.attname) from pg_attribute a
                   where a.attrelid = c.conrelid and a.attnum = any(c.conkey)))) as served_by_partitions,
       case when t.relkind = 'p' then quote_ident(left(t.relname || '_' || k.joined || '_idx', 63)) end as index_name,
       case when t.relkind = 'p' then (
         select string_agg(format(case when pc.relkind = 'p'
                                       then E'CREATE INDEX %1$I ON ONLY %2$I.%3$I (%4$s);\\n'
                                       else E'CREATE INDEX CONCURRENTLY %1$I ON %2$I.%3$I (%4$s);\\n' end
                                  || E'ALTER INDEX %5$I.%6$I ATTACH PARTITION %2$I.%1$I;'
                                  || case when pc.relkind = 'p' then E'\\n-- %2$I.%3$I is partitioned too: '
                                       'index and attach each of its partitions the same way' else '' end,
                                  left(pc.relname || '_' || k.joined || '_idx', 63), pn.nspname, pc.relname, k.quoted,
                                  n.nspname, left(t.relname || '_' || k.joined || '_idx', 63)), E'\\n' order by pc.relname)
         from pg_inherits h join pg_class pc on pc.oid = h.inhrelid join pg_namespace pn on pn.oid = pc.relnamespace
         where h.inhparent = c.conrelid) end as partition_ddl
from pg_constraint c
join pg_class t on t.oid = c.conrelid
join pg_namespace n on n.oid = t.relnamespace
cross join lateral (
  select string_agg(quote_ident(a.attname), ', ' order by k.ord) as quoted, string_agg(a.attname, '_' order by k.ord) as joined
  from unnest(c.conkey) with ordinality k(attnum, ord)
  join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum) k
where c.contype = 'f' and c.conparentid = 0
order by 2, 3, 4
"""

# An invalid partitioned index: the direct partitions without a valid index attached to it, each
# with the DDL that fills the gap. REINDEX cannot: a parent becomes valid only when ALTER INDEX ...
# ATTACH PARTITION finds every partition's index attached and valid.
INDEX_GAP_SQL = """
select 'index_gap' as kind, x.indexrelid::bigint as index_oid, format('%I.%I', pn.nspname, p.relname) as partition,
       case when a.name is not null then 'invalid' when m.name is not null then 'unattached' else 'missing' end as status,
       coalesce(a.name, m.name) as leaf_index,
       case
         when a.name is not null and p.relkind = 'p' then
           format('-- %s on %I.%I is invalid itself (reported on its own); %s becomes valid once it is.',
                  a.name, pn.nspname, p.relname, d.parent)
         when a.name is not null then
           format(E'REINDEX INDEX CONCURRENTLY %1$s;\\nALTER INDEX %2$s ATTACH PARTITION %1$s;\\n'
                  '-- attaching it again re-checks %2$s (PostgreSQL minor releases from 2025 on; '
                  'before that the parent stays invalid until rebuilt).', a.name, d.parent)
         when m.name is not null then format('ALTER INDEX %s ATTACH PARTITION %s;', d.parent, m.name)
         else format(case when p.relkind = 'p' then E'CREATE %1$sINDEX %2$I ON ONLY %3$I.%4$I%5$s;\\n'
                          else E'CREATE %1$sINDEX CONCURRENTLY %2$I ON %3$I.%4$I%5$s;\\n' end
                     || E'ALTER INDEX %6$s ATTACH PARTITION %3$I.%2$I;'
                     || case when p.relkind = 'p' then E'\\n-- %3$I.%4$I is partitioned too: '
                          'index and attach each of its partitions the same way' else '' end,
                     case when x.indisunique then 'UNIQUE ' else '' end, left(p.relname || '_' || i.relname, 63),
                     pn.nspname, p.relname, d.using_clause, d.parent)
       end as ddl
from pg_index x
join pg_class i on i.oid = x.indexrelid and i.relkind = 'I'
join pg_namespace xn on xn.oid = i.relnamespace
join pg_inherits h on h.inhparent = x.indrelid
join pg_class p on p.oid = h.inhrelid
join pg_namespace pn on pn.oid = p.relnamespace
cross join lateral (
  select format('%I.%I', xn.nspname, i.relname) as parent,
         substring(pg_get_indexdef(x.indexrelid) from ' USING \\w+ \\(.*$') as using_clause) d
left join lateral (  -- this partition's index attached to the parent, if there is one
  select format('%I.%I', cn.nspname, ci.relname) as name, cx.indisvalid as valid
  from pg_inherits hi join pg_index cx on cx.indexrelid = hi.inhrelid
  join pg_class ci on ci.oid = cx.indexrelid join pg_namespace cn on cn.oid = ci.relnamespace
  where hi.inhparent = x.indexrelid and cx.indrelid = p.oid) a on true
left join lateral (  -- or a valid index of the same definition on it, attached to nothing
  select format('%I.%I', cn.nspname, ci.relname) as name
  from pg_index cx join pg_class ci on ci.oid = cx.indexrelid join pg_namespace cn on cn.oid = ci.relnamespace
  where cx.indrelid = p.oid and cx.indisvalid and cx.indisunique = x.indisunique
    and not exists (select 1 from pg_inherits hi where hi.inhrelid = cx.indexrelid)
    and substring(pg_get_indexdef(cx.indexrelid) from ' USING \\w+ \\(.*$') = d.using_clause
  order by ci.relname limit 1) m on a.name is null
where not x.indisvalid and (a.name is null or not a.valid)
order by 2, 3
"""

# Whatever DDL writes: a new index, a validated one (pg_index), a constraint, an attached partition.
FINGERPRINT = fingerprint_sql("pg_class", "pg_index", "pg_constraint", "pg_inherits")

# The definitions, read only when FINGERPRINT moved, as one JSON text kept in the state.
CATALOG_SQL = f"""
select {FINGERPRINT} as fingerprint, json_build_object(
  'index', (select coalesce(json_agg(r), '[]') from ({INDEX_SQL}) r),
  'fk', (select coalesce(json_agg(r), '[]') from ({FK_SQL}) r),
  'index_gap', (select coalesce(json_agg(r), '[]') from ({INDEX_GAP_SQL}) r))::text as catalog
"""

# Every run: the statistics window, scans and sizes, builds in progress, table scan counters and
# the fingerprint, in one statement. Arrays rather than objects: a tenth of the JSON to parse.
LIVE_SQL = f"""
select coalesce(d.stats_reset, pg_postmaster_start_time()) as stats_since, now() as now,
       {FINGERPRINT} as fingerprint,
       (select coalesce(json_agg(json_build_array(s.indexrelid::bigint, s.idx_scan, pg_relation_size(s.indexrelid))), '[]')
          from pg_stat_user_indexes s) as index_stats,
       (select coalesce(json_agg(json_build_array(b.index_relid::bigint, b.relid::bigint, b.command, b.phase)), '[]')
          from pg_stat_progress_create_index b) as builds,
       (select coalesce(json_agg(json_build_array(t.relid::bigint, t.schemaname, t.relname,
                                                  quote_ident(t.schemaname) || '.' || quote_ident(t.relname),
                                                  t.seq_scan, t.seq_tup_read, coalesce(t.idx_scan, 0), t.n_live_tup,
                                                  pg_total_relation_size(t.relid))), '[]')
          from pg_stat_user_tables t where t.n_live_tup >= $1) as tables,
       -- A foreign key on a partitioned table is sized by its leaf partitions (the parent has no storage).
       (select coalesce(json_agg(json_build_array(c.oid::bigint, coalesce(
                  (select sum(pg_total_relation_size(p.relid))::bigint from pg_partition_tree(c.conrelid) p where p.isleaf),
                  pg_total_relation_size(c.conrelid)))), '[]')
          from pg_constraint c where c.contype = 'f' and c.conparentid = 0) as fk_bytes
from pg_stat_database d where d.datname = current_database()
"""
_TABLE_KEYS = ("table_oid", "schema", "table", "qualified", "seq_scan", "seq_tup_read", "idx_scan", "n_live_tup",
               "size_bytes")

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
    # The expensive parts run on their own, slower schedule; their last findings stand in between.
    # Bloat estimates join pg_stats for every column; hypopg plans the top queries once per candidate.
    "capacity_interval_s": 6 * 3600,
    "hypothetical_interval_s": 6 * 3600,
}


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    t = ctx.thresholds
    by: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by[row["kind"]].append(row)
    indexes = by["index"]
    # An index waiting to be attached to its partitioned parent is not "unused": it is half of a fix.
    to_attach = {g["leaf_index"] for g in by["index_gap"] if g["status"] == "unattached"}
    findings = unused_indexes([ix for ix in indexes if ix["qualified"] not in to_attach], by["window"], t,
                              _peers(ctx.extra))
    findings += duplicate_indexes(indexes)
    findings += invalid_indexes(indexes, by["build"], by["index_gap"])
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
    """DROP INDEX works on it and nothing but lookups depend on it. A partition's index attached to
    a partitioned index cannot be dropped alone: it goes with its parent."""
    return (ix["is_valid"] and not ix["is_unique"] and not ix["is_primary"] and not ix["backs_constraint"]
            and not ix["is_replica_identity"] and not ix.get("attached_to")
            and (ix.get("is_partitioned_index", False) or not ix["partitioned"]))


def _drop_ddl(ix: Mapping[str, Any]) -> str:
    if ix.get("is_partitioned_index"):
        return _drop_partitioned_ddl(ix)
    return (f"DROP INDEX CONCURRENTLY {ix['qualified']};\n-- to undo: {ix['definition'].replace(' INDEX ', ' INDEX CONCURRENTLY ', 1)};\n"
            "-- CONCURRENTLY cannot run inside a transaction block; it waits for open transactions "
            "on the table but does not block reads or writes.")


def _drop_partitioned_ddl(ix: Mapping[str, Any]) -> str:
    # pg_get_indexdef says ON ONLY for a partitioned index: replayed as is, it would build nothing.
    undo = ix["definition"].replace(" ON ONLY ", " ON ", 1)
    return (f"DROP INDEX {ix['qualified']};\n-- to undo: {undo};\n"
            "-- A partitioned index cannot be dropped CONCURRENTLY: DROP INDEX drops it on every partition "
            f"and takes an ACCESS EXCLUSIVE lock on {ix['schema']}.{ix['table']} and each partition for a moment, "
            "so run it with a short lock_timeout and retry. The undo blocks writes to every partition while it "
            "builds; without blocking, create it ON ONLY the parent, then CONCURRENTLY on each partition and "
            "ALTER INDEX ... ATTACH PARTITION each one.")


@dataclass(frozen=True)
class Peers:
    """What the cluster peers said about index scans: summed scans, and who sent nothing."""

    scans: Mapping[str, float] | None
    missing: tuple[str, ...] = ()


def _peers(extra: Mapping[str, Any]) -> Peers:
    scans = extra.get("peer_index_scans")
    if scans is None or "peer_index_scans_reporting" not in extra:
        return Peers(scans)
    reporting = set(extra["peer_index_scans_reporting"])
    return Peers(scans, tuple(p for p in extra.get("cluster_peers", ()) if p not in reporting))


def unused_indexes(indexes: Sequence[Mapping[str, Any]], window: Sequence[Mapping[str, Any]],
                   t: Mapping[str, Any], peers: Peers) -> list[Finding]:
    if not window:
        return []
    since = _when(window[0]["stats_since"])
    days = (_when(window[0]["now"]) - since).total_seconds() / 86400
    if days < t["unused_index_min_window_days"]:
        return []  # too short a window to call anything unused
    out = []
    for ix in indexes:
        # Peers' samples carry the index row's own (quoted) name.
        scanned_on_peers = (peers.scans or {}).get(ix["qualified"], 0)
        if not _droppable(ix) or ix["idx_scan"] or scanned_on_peers or ix["size_bytes"] < t["unused_index_min_bytes"]:
            continue
        out.append(_unused_finding(ix, days, since, peers))
    return out


def _unused_finding(ix: Mapping[str, Any], days: float, since: datetime, peers: Peers) -> Finding:
    name = f"{ix['schema']}.{ix['index']}"
    check_sql = ("select idx_scan, pg_size_pretty(pg_relation_size(indexrelid)) from pg_stat_user_indexes "
                 f"where indexrelid = '{ix['qualified']}'::regclass")
    if ix.get("is_partitioned_index"):  # the parent has no row there; its partitions' indexes do
        check_sql = (f"select p.relid::regclass, s.idx_scan from pg_partition_tree('{ix['qualified']}') p "
                     "join pg_stat_user_indexes s on s.indexrelid = p.relid where p.isleaf")
    title = f"Index {name} ({ix['size_bytes'] / 2**20:,.1f} MB) has not been used in {days:,.1f} days"
    advice = "If no replica, report or monthly job uses it (idx_scan is per instance), drop it:\n"
    if peers.missing:  # unknown is not zero: a silent replica may be the one reading through it
        silent = ", ".join(peers.missing)
        title = title.replace(" has not been used in ", " has not been used here in ") + f"; no scan counts from {silent}"
        advice = (f"Not known to be unused everywhere: {silent} (same cluster) sent no index scan counts recently, "
                  f"and a replica's reads may use it. Check idx_scan there first:\n{check_sql};\n"
                  "If it is unused there too, drop it:\n")
    details = {"table": f"{ix['schema']}.{ix['table']}", "size_bytes": ix["size_bytes"], "idx_scan": 0,
               "stats_window_days": round(days, 1), "stats_since": since.isoformat(),
               "checked_peers": peers.scans is not None and not peers.missing, "missing_peers": list(peers.missing),
               "definition": ix["definition"], "sql": check_sql}
    if ix.get("is_partitioned_index"):
        details["leaf_indexes"] = ix["leaf_indexes"]
    return Finding(check="unused_index", object=name, severity=Severity.info, title=title, details=details,
                   recommendation=advice + _drop_ddl(ix))


def _cols(ix: Mapping[str, Any], field: str = "indkey") -> list[str]:
    return ix[field].split()


def _shape(ix: Mapping[str, Any]) -> IndexShape:
    """An index in the neutral terms of the redundancy rule: a key is its column with its
    operator class and collation (they change what lookups it serves), expressions go with the
    predicate, and anything _droppable refuses (unique, primary, constraint, replica identity,
    attached to a partitioned index) counts as enforcing something."""
    n, columns = ix["nkey"], _cols(ix)
    keys = tuple(" ".join(k) for k in zip(columns[:n], _cols(ix, "opclasses")[:n], _cols(ix, "collations")[:n]))
    return IndexShape(table=str(ix["table_oid"]), name=ix["index"], keys=keys, includes=frozenset(columns[n:]),
                      unique=bool(ix["is_unique"]), constraint=not _droppable(ix), kind=ix["am"],
                      predicate=f"{ix['pred']}|{ix['exprs']}", key_columns=tuple(columns[:n]),
                      ordered=ix["am"] == "btree")


def duplicate_indexes(indexes: Sequence[Mapping[str, Any]]) -> list[Finding]:
    # A partitioned (parent) index and an invalid one are not what lookups use today.
    usable = [ix for ix in indexes if ix["is_valid"] and not ix["partitioned"]]
    by_shape = {(str(ix["table_oid"]), ix["index"]): ix for ix in usable}
    return [_duplicate_finding(by_shape[(drop.table, drop.name)], by_shape[(keep.table, keep.name)])
            for drop, keep in redundant_indexes([_shape(ix) for ix in usable])]


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


def invalid_indexes(indexes: Sequence[Mapping[str, Any]], builds: Sequence[Mapping[str, Any]],
                    gaps: Sequence[Mapping[str, Any]] = ()) -> list[Finding]:
    building = {b["index_oid"] for b in builds}
    # Early in a build the progress view has no index yet: spare every invalid index on that table.
    busy_tables = {b["table_oid"] for b in builds if not b["index_oid"]}
    gaps_of: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for g in gaps:
        gaps_of[g["index_oid"]].append(g)
    out = []
    for ix in indexes:
        if ix["is_valid"] or ix["oid"] in building or ix["table_oid"] in busy_tables:
            continue
        if ix.get("is_partitioned_index"):
            out.append(_invalid_partitioned_finding(ix, gaps_of[ix["oid"]]))
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


def _invalid_partitioned_finding(ix: Mapping[str, Any], gaps: Sequence[Mapping[str, Any]]) -> Finding:
    """A partitioned index is valid only once every partition has a valid index attached to it
    (usually it was created ON ONLY the parent and a partition's index was never attached)."""
    name = f"{ix['schema']}.{ix['index']}"
    parts = [g["partition"] for g in gaps]
    shown = ", ".join(parts[:3]) + (f" and {len(parts) - 3} more" if len(parts) > 3 else "")
    if parts:
        lack = "lacks" if len(parts) == 1 else "lack"
        title = f"Partitioned index {name} is invalid: {shown} {lack} a valid index attached to it"
        advice = ("The planner uses it on no partition until every partition's index is attached, and "
                  "rebuilding it attaches nothing. For each partition listed:\n" + "\n".join(g["ddl"] for g in gaps)
                  + f"\n-- {name} becomes valid when the last one is attached. CONCURRENTLY must run outside a "
                  "transaction block; ATTACH PARTITION is a quick catalog change but waits for its lock.")
    else:
        title = f"Partitioned index {name} is invalid although every partition has its index attached"
        advice = ("PostgreSQL re-checks a partitioned index only when an index is attached to it. Attach one of "
                  f"its partitions' indexes again (ALTER INDEX {ix['qualified']} ATTACH PARTITION <that index>;): "
                  "on minor releases from 2025 on that validates the parent.")
    return Finding(
        check="invalid_index", object=name, severity=Severity.warning, title=title,
        details={"table": f"{ix['schema']}.{ix['table']}", "definition": ix["definition"], "partitions_to_fix": parts,
                 "sql": "select p.relid::regclass, p.parentrelid::regclass, i.indisvalid "
                        f"from pg_partition_tree('{ix['qualified']}') p join pg_index i on i.indexrelid = p.relid"},
        recommendation=advice,
    )


def fks_without_index(fks: Sequence[Mapping[str, Any]], indexes: Sequence[Mapping[str, Any]],
                      t: Mapping[str, Any]) -> list[Finding]:
    usable: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for ix in indexes:
        if ix["is_valid"] and ix["pred"] is None:  # a partial index does not serve every row
            usable[ix["table_oid"]].append(ix)
    out = []
    for fk in fks:
        cols = [str(c) for c in fk["columns"]]
        served = (fk.get("served_by_partitions")
                  or any(set(_cols(ix)[: len(cols)]) == set(cols) for ix in usable[fk["table_oid"]]))
        if served or fk["table_bytes"] < t["fk_min_table_bytes"]:
            continue
        name = f"{fk['schema']}.{fk['table']}.{fk['constraint']}"
        scanned = ("every partition of " if fk.get("partitioned") else "") + f"{fk['schema']}.{fk['table']}"
        out.append(Finding(
            check="fk_without_index", object=name, severity=Severity.info,
            title=f"Foreign key {fk['constraint']} on {fk['schema']}.{fk['table']} ({fk['quoted_columns']}) has no index",
            details={"table": f"{fk['schema']}.{fk['table']}", "columns": fk["quoted_columns"],
                     "references": fk["referenced"], "table_bytes": fk["table_bytes"],
                     "sql": f"select conname, pg_get_constraintdef(oid) from pg_constraint where conrelid = '{fk['qualified_table']}'::regclass and contype = 'f'"},
            recommendation=f"Every DELETE or key UPDATE on {fk['referenced']} scans {scanned} "
                           f"and locks it for the check. Index the referencing columns:\n" + _fk_index_ddl(fk),
        ))
    return out


def _fk_index_ddl(fk: Mapping[str, Any]) -> str:
    if not fk.get("partitioned"):
        return (f"CREATE INDEX CONCURRENTLY ON {fk['qualified_table']} ({fk['quoted_columns']});\n"
                "-- builds without blocking writes; takes longer and must not run in a transaction block.")
    parent = f"CREATE INDEX {fk['index_name']} ON ONLY {fk['qualified_table']} ({fk['quoted_columns']});"
    if not fk["partition_ddl"]:  # no partitions yet: nothing to build, nothing blocks
        return parent.replace(" ON ONLY ", " ON ", 1)
    return (f"{parent}\n{fk['partition_ddl']}\n"
            "-- CREATE INDEX CONCURRENTLY does not work on a partitioned table: the parent's index is created "
            "empty (ON ONLY), each partition's is built without blocking writes (outside a transaction block) "
            "and attached; the parent's becomes valid when the last one is.")


async def collect(conn: Connection, ctx: Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every row the transform needs, and the state that lets the next run ask less.

    Steady state: one statement (LIVE_SQL). The definitions are read again when the catalogs'
    fingerprint moved, bloat and sequences every capacity_interval_s, hypopg's candidates every
    hypothetical_interval_s; in between their previous rows stand.
    """
    t = ctx.thresholds
    [live] = await conn.fetch(LIVE_SQL, int(t["missing_index_min_rows"]))
    fp = live["fingerprint"]
    catalog = cached(ctx.previous, "catalog", fp)
    kept = ctx.previous.get("catalog") if catalog is not None else None
    if catalog is None:
        [read] = await conn.fetch(CATALOG_SQL)
        kept, catalog = keep(read["fingerprint"], read["catalog"]), json.loads(read["catalog"])
    rows = _with_live_numbers(catalog, live)
    heavy = hypothetical.heavy_tables([r for r in rows if r["kind"] == "table"], t)
    hypo = None
    # Also when a table turned heavy since the last validation found none to test.
    if part_due(ctx, "hypothetical", "hypothetical_interval_s") or (
            heavy and not any(r["kind"] == "hypopg" for r in part_rows(ctx, "hypothetical"))):
        hypo = await hypothetical.validate(conn, heavy, t)
    capacity_rows = None
    if part_due(ctx, "capacity", "capacity_interval_s"):
        capacity_rows = capacity.worth_keeping(await capacity.fetch(conn), t)
    state = {"v": 1, "catalog": kept, "hypothetical": part_kept(ctx, "hypothetical", hypo),
             "capacity": part_kept(ctx, "capacity", capacity_rows)}
    rows += hypo if hypo is not None else part_rows(ctx, "hypothetical")
    rows += capacity_rows if capacity_rows is not None else part_rows(ctx, "capacity")
    return rows, state


def _with_live_numbers(catalog: Mapping[str, list], live: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The cached definitions with this run's scans, sizes, builds and table counters."""
    stats = {oid: (scans or 0, size) for oid, scans, size in json.loads(live["index_stats"])}
    tables = [dict(zip(_TABLE_KEYS, r), kind="table") for r in json.loads(live["tables"])]
    fk_bytes = dict(json.loads(live["fk_bytes"]))
    rows: list[dict[str, Any]] = [{"kind": "window", "stats_since": live["stats_since"], "now": live["now"]}]
    for ix in catalog["index"]:
        if ix["is_partitioned_index"]:
            leaves = [stats.get(leaf, (0, 0)) for leaf in ix["leaves"] or ()]
            scans, size = sum(s for s, _ in leaves), sum(b for _, b in leaves)
            rows.append({**ix, "idx_scan": scans, "size_bytes": size, "leaf_indexes": len(leaves)})
        else:
            scans, size = stats.get(ix["oid"], (0, 0))
            rows.append({**ix, "idx_scan": scans, "size_bytes": size, "leaf_indexes": 0})
    rows += [{**fk, "table_bytes": fk_bytes.get(fk["constraint_oid"], 0)} for fk in catalog["fk"]]
    rows += catalog["index_gap"]
    rows += [{"kind": "build", "index_oid": i, "table_oid": r, "command": c, "phase": p}
             for i, r, c, p in json.loads(live["builds"])]
    tables.sort(key=lambda r: r["seq_tup_read"] or 0, reverse=True)
    return rows + tables


async def run(conn: Connection, ctx: Context) -> Result:
    rows, state = await collect(conn, ctx)
    result = transform(rows, ctx)
    result.state = state
    return result


SPEC = register(CollectorSpec(
    name="index_advice",
    engine="postgres",
    description="Unused, duplicate, invalid and missing indexes (hypopg-validated), unindexed FKs, bloat, sequences",
    sql={120000: LIVE_SQL},
    transform=transform,
    run=run,
    interval_s=3600,
    timeout_s=120,
    thresholds=THRESHOLDS,
    peer_metrics=("index_scans",),
))
