"""missing_index for index_advice: tables read mostly by sequential scans, and where hypopg is
installed, candidate indexes for the top queries validated by EXPLAIN cost (Dexter's rule).

Candidates come from the WHERE clause of the instance's costliest SELECTs in pg_stat_statements,
parsed with sqlglot. Each is created as a hypothetical index (hypopg: backend memory only, no
catalog write, allowed in our read-only session) and the query's generic plan is costed with and
without it. Parameterised texts are planned with PREPARE + plan_cache_mode=force_generic_plan on
every version: EXPLAIN (GENERIC_PLAN) (16+) only plans generically over the simple query
protocol; asyncpg binds values, and bound NULLs get folded into a constant-false plan.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import sqlglot
from sqlglot import exp

from collectors.postgres.query_stats import sql_level
from collectors.spec import Connection, Finding, Severity

THRESHOLDS = {
    # PgHero's "high sequential scans" rule: big enough tables, mostly read without an index.
    "missing_index_min_rows": 10_000,
    "missing_index_min_seq_tup_read": 1_000_000,
    "missing_index_max_idx_pct": 95,
    # Dexter only suggests an index that at least halves the query's cost.
    "missing_index_min_cost_drop": 0.5,
    "missing_index_top_queries": 20,
}

EXTENSIONS_SQL = """
select e.extname, e.extversion, quote_ident(n.nspname) as schema
from pg_extension e join pg_namespace n on n.oid = e.extnamespace
where e.extname in ('hypopg', 'pg_stat_statements')
"""

TOP_QUERIES_SQL = """
select s.queryid::text as queryid, s.query, sum(s.calls)::bigint as calls, sum(s.{total})::float8 as total_ms
from {pgss}.pg_stat_statements(true) s
join pg_database d on d.oid = s.dbid and d.datname = current_database()
where s.query ~* '^\\s*(select|with)\\s'
group by s.queryid, s.query
order by 4 desc
limit $1
"""


def heavy_tables(tables: Sequence[Mapping[str, Any]], t: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out = []
    for r in tables:
        scans = (r["seq_scan"] or 0) + (r["idx_scan"] or 0)
        idx_pct = 100.0 * (r["idx_scan"] or 0) / scans if scans else 100.0
        if (r["n_live_tup"] >= t["missing_index_min_rows"] and (r["seq_tup_read"] or 0) >= t["missing_index_min_seq_tup_read"]
                and idx_pct < t["missing_index_max_idx_pct"]):
            out.append(r)
    return out


def _ident(node: exp.Expression | str | None) -> str:
    """How PostgreSQL names it: unquoted identifiers fold to lower case. A function in FROM
    (generate_series, pg_partition_tree) names no table: ''."""
    if isinstance(node, exp.Identifier):
        return node.this if node.quoted else node.this.lower()
    return node.lower() if isinstance(node, str) else ""


def _aliases(tree: exp.Expression, tables: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Mapping], int]:
    """alias -> heavy table row for the tables the query reads, and how many tables it reads."""
    refs = list(tree.find_all(exp.Table))
    out = {}
    for ref in refs:
        name, schema = _ident(ref.args.get("this")), _ident(ref.args.get("db"))
        hits = [r for r in tables if r["table"] == name and (r["schema"] == schema if schema else True)]
        if not schema and len(hits) > 1:
            hits = [r for r in hits if r["schema"] == "public"]
        if len(hits) == 1:
            out[_ident(ref.args["alias"].args.get("this")) if ref.args.get("alias") else name] = hits[0]
    return out, len(refs)


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


def _is_value(node: exp.Expression) -> bool:
    while isinstance(node, exp.Cast):
        node = node.this
    return isinstance(node, (exp.Parameter, exp.Placeholder, exp.Literal, exp.Null))


def _predicate(node: exp.Expression) -> tuple[exp.Column, str] | None:
    """(column, 'eq' | 'range') when an index on the column could serve this predicate."""
    if isinstance(node, exp.In) and isinstance(node.this, exp.Column) and all(map(_is_value, node.expressions)):
        return node.this, "eq"
    if isinstance(node, exp.Between) and isinstance(node.this, exp.Column):
        return node.this, "range"
    kind = "eq" if isinstance(node, exp.EQ) else "range" if isinstance(node, (exp.GT, exp.GTE, exp.LT, exp.LTE)) else None
    if kind is None:
        return None
    for col, other in ((node.this, node.expression), (node.expression, node.this)):
        if isinstance(col, exp.Column) and _is_value(other):
            return col, kind
    return None


def candidate_columns(sql: str, tables: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[str, ...]]]:
    """Per heavy table (qualified name) the query filters: index column lists worth costing."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.SqlglotError:
        return {}
    if not isinstance(tree, exp.Select) or tree.args.get("locks") or tree.find(exp.Insert, exp.Update, exp.Delete):
        return {}
    aliases, n_tables = _aliases(tree, tables)
    where = tree.args.get("where")
    if not aliases or where is None:
        return {}
    eq: dict[str, list[str]] = defaultdict(list)
    rng: dict[str, list[str]] = defaultdict(list)
    for node in _conjuncts(where.this):
        if (hit := _predicate(node)) is None:
            continue
        col, kind = hit
        owner = aliases.get(_ident(col.args.get("table"))) if col.table else (
            next(iter(aliases.values())) if n_tables == 1 else None)
        target = (eq if kind == "eq" else rng)[owner["qualified"]] if owner else None
        if target is not None and _ident(col.args["this"]) not in target:
            target.append(_ident(col.args["this"]))
    return {q: _combinations(eq[q], rng[q]) for q in set(eq) | set(rng)}


def _combinations(eq: list[str], rng: list[str]) -> list[tuple[str, ...]]:
    """Equality columns first, then one range column: the order a btree can use them."""
    out = [(c,) for c in eq[:3]]
    if len(eq) > 1:
        out.append(tuple(eq[:3]))
    if rng:
        out.append((rng[0],))
        if eq:
            out.append(tuple(eq[:2]) + (rng[0],))
    return list(dict.fromkeys(out))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_sql_error(error: Exception) -> bool:
    return getattr(error, "sqlstate", None) is not None


async def _explain(conn: Connection, sql: str) -> tuple[float, str]:
    """Total cost of the query's generic plan and the plan text."""
    params = max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)
    await conn.fetch(f"prepare dbfleet_hypo as {sql}")
    try:
        args = "(" + ", ".join(["null"] * params) + ")" if params else ""
        rows = await conn.fetch(f"explain (format json) execute dbfleet_hypo{args}")
    finally:
        await conn.fetch("deallocate dbfleet_hypo")
    plan = next(iter(rows[0].values()))
    plan_text = plan if isinstance(plan, str) else json.dumps(plan)
    return float(json.loads(plan_text)[0]["Plan"]["Total Cost"]), plan_text


async def _cost_candidates(conn: Connection, hypo: str, query: Mapping[str, Any], table: Mapping[str, Any],
                           candidates: list[tuple[str, ...]]) -> list[dict[str, Any]]:
    before, _ = await _explain(conn, query["query"])
    out = []
    for cols in candidates:
        ddl = f"CREATE INDEX ON {table['qualified']} ({', '.join(map(_quote, cols))})"
        try:
            made = await conn.fetch(f"select indexname from {hypo}.hypopg_create_index($1)", ddl)
            after, plan = await _explain(conn, query["query"])
        except Exception as e:
            if not _is_sql_error(e):
                raise
            continue  # a column we misread, an expression hypopg cannot take: skip the candidate
        finally:
            await conn.fetch(f"select {hypo}.hypopg_reset()")
        out.append({"kind": "hypothetical", "schema": table["schema"], "table": table["table"],
                    "qualified": table["qualified"], "columns": list(cols),
                    "ddl": ddl.replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY", 1) + ";",
                    "queryid": query["queryid"], "query": query["query"][:2000], "calls": query["calls"],
                    "cost_before": before, "cost_after": after, "uses_index": made[0]["indexname"] in plan})
    return out


async def _top_queries(conn: Connection, pgss: Mapping[str, Any] | None, t: Mapping[str, Any]) -> list[dict]:
    if pgss is None:
        return []
    total = "total_exec_time" if sql_level(conn.server_version, pgss["extversion"]) >= 130000 else "total_time"
    try:
        return await conn.fetch(TOP_QUERIES_SQL.format(pgss=pgss["schema"], total=total),
                                int(t["missing_index_top_queries"]))
    except Exception as e:
        if _is_sql_error(e):
            return []  # not preloaded or not allowed: fall back to the scan heuristic
        raise


async def validate(conn: Connection, heavy: Sequence[Mapping[str, Any]], t: Mapping[str, Any]) -> list[dict]:
    """Rows of kind hypothetical (one per candidate costed) plus one hypopg row saying if it ran."""
    if not heavy:
        return []
    ext = {r["extname"]: r for r in await conn.fetch(EXTENSIONS_SQL)}
    if "hypopg" not in ext:
        return [{"kind": "hypopg", "available": False}]
    hypo, rows = ext["hypopg"]["schema"], [{"kind": "hypopg", "available": True}]
    queries = await _top_queries(conn, ext.get("pg_stat_statements"), t)
    by_name = {r["qualified"]: r for r in heavy}
    await conn.fetch(f"select {hypo}.hypopg_reset()")  # a run cancelled mid-way may have left some
    if await conn.fetch("select 1 from pg_prepared_statements where name = 'dbfleet_hypo'"):
        await conn.fetch("deallocate dbfleet_hypo")
    await conn.fetch("set plan_cache_mode = force_generic_plan")
    try:
        for q in queries:
            for qualified, candidates in candidate_columns(q["query"], heavy).items():
                try:
                    rows += await _cost_candidates(conn, hypo, q, by_name[qualified], candidates)
                except Exception as e:
                    if not _is_sql_error(e):
                        raise  # one query we cannot plan (types, dropped objects) spoils nothing else
    finally:
        await conn.fetch(f"select {hypo}.hypopg_reset()")
        await conn.fetch("reset plan_cache_mode")
    return rows


def _best(tested: Sequence[Mapping[str, Any]], t: Mapping[str, Any]) -> dict[str, Any] | None:
    """The validated candidate saving the most cost x calls; fewer columns wins a tie."""
    drop = t["missing_index_min_cost_drop"]
    savings: dict[tuple[str, ...], dict[str, Any]] = {}
    for h in tested:
        if not h["uses_index"] or h["cost_after"] > (1 - drop) * h["cost_before"]:
            continue
        s = savings.setdefault(tuple(h["columns"]), {"candidate": h, "saving": 0.0, "queries": []})
        s["saving"] += (h["cost_before"] - h["cost_after"]) * max(1, h["calls"])
        s["queries"].append(h)
    if not savings:
        return None
    return max(savings.values(), key=lambda s: (s["saving"], -len(s["candidate"]["columns"])))


def missing_indexes(tables: Sequence[Mapping[str, Any]], hypos: Sequence[Mapping[str, Any]],
                    hypopg: Sequence[Mapping[str, Any]], t: Mapping[str, Any]) -> list[Finding]:
    available = bool(hypopg and hypopg[0]["available"])
    out = []
    for tbl in heavy_tables(tables, t):
        tested = [h for h in hypos if h["qualified"] == tbl["qualified"]]
        if available and tested:
            if (best := _best(tested, t)) is not None:
                out.append(_validated(tbl, best))
        else:
            out.append(_heuristic(tbl, available))
    return out


def _scan_details(tbl: Mapping[str, Any]) -> dict[str, Any]:
    return {"seq_scan": tbl["seq_scan"], "seq_tup_read": tbl["seq_tup_read"], "idx_scan": tbl["idx_scan"],
            "n_live_tup": tbl["n_live_tup"], "size_bytes": tbl["size_bytes"],
            "sql": f"select seq_scan, seq_tup_read, idx_scan, n_live_tup from pg_stat_user_tables where relid = '{tbl['qualified']}'::regclass"}


def _validated(tbl: Mapping[str, Any], best: Mapping[str, Any]) -> Finding:
    c = best["candidate"]
    name = f"{tbl['schema']}.{tbl['table']}"
    return Finding(
        check="missing_index", object=name, severity=Severity.warning,
        title=f"An index on {name} ({', '.join(c['columns'])}) cuts a top query's cost "
              f"{c['cost_before']:,.0f} -> {c['cost_after']:,.0f}",
        details={**_scan_details(tbl), "columns": c["columns"], "cost_before": c["cost_before"],
                 "cost_after": c["cost_after"], "queryid": c["queryid"], "query": c["query"],
                 "queries_helped": [q["queryid"] for q in best["queries"]], "validated_with": "hypopg"},
        recommendation=f"{c['ddl']}\n-- hypothetical-index EXPLAIN: cost {c['cost_before']:,.1f} -> "
                       f"{c['cost_after']:,.1f}. CONCURRENTLY does not block writes but takes longer, "
                       "cannot run in a transaction block, and leaves an invalid index if it fails; "
                       "every new index adds work to each write on the table.",
    )


def _heuristic(tbl: Mapping[str, Any], hypopg_available: bool) -> Finding:
    name = f"{tbl['schema']}.{tbl['table']}"
    scans = tbl["seq_scan"] + tbl["idx_scan"]
    return Finding(
        check="missing_index", object=name, severity=Severity.info,
        title=f"Table {name} ({tbl['n_live_tup']:,} rows) is read mostly by sequential scans "
              f"({100 * tbl['seq_scan'] / max(1, scans):.0f}% of scans)",
        details={**_scan_details(tbl), "validated_with": None},
        recommendation="Find the queries scanning it (pg_stat_statements, auto_explain) and index "
                       "their filter columns with CREATE INDEX CONCURRENTLY."
                       + ("" if hypopg_available else " Install the hypopg extension in this "
                          "database and dbfleet will test candidate indexes for you."),
    )
