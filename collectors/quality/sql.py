"""The read-only SQL each check runs, per engine family (postgres, mysql).

Identifiers are quoted here; user text (loaded_at_field, filter, assertion and loaded_at
queries) is parsed with sqlglot first and refused unless it is one expression or one read-only
SELECT. Placeholders are the driver's own: $n for asyncpg, %s for aiomysql.

Every statement starts with a comment naming its kind (`/* dbfleet:quality:completeness */`): a
DBA reading pg_stat_statements or the slow log sees which check kind a statement is, and the
comment does not change PostgreSQL's queryid.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

FAMILIES = ("postgres", "mysql")
SYSTEM_SCHEMAS = {"postgres": ("pg_catalog", "information_schema"),
                  "mysql": ("mysql", "performance_schema", "information_schema", "sys")}
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Command,
           exp.Into, exp.TruncateTable)


class CheckRefused(ValueError):
    """A check that may not run as written (bad SQL, or a scan it did not allow); says why."""


def family_of(engine: str) -> str:
    if engine in ("postgres", "aurora-postgres"):
        return "postgres"
    if engine in ("mysql", "mariadb", "aurora-mysql"):
        return "mysql"
    raise CheckRefused(f"quality checks run on PostgreSQL and MySQL/MariaDB, not {engine!r}")


def quote_ident(family: str, name: str) -> str:
    if family == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def qualified(family: str, schema: str, table: str) -> str:
    return f"{quote_ident(family, schema)}.{quote_ident(family, table)}"


def _parse(text: str, family: str, what: str) -> exp.Expression:
    try:
        statements = [s for s in sqlglot.parse(text, read=family) if s is not None]
    except sqlglot.errors.SqlglotError as e:
        raise CheckRefused(f"{what} is not parseable as {family} SQL: {str(e).splitlines()[0]}") from None
    if len(statements) != 1:
        raise CheckRefused(f"{what} must be one statement; this text has {len(statements)}")
    [stmt] = statements
    if (write := next(stmt.find_all(*_WRITES), None)) is not None:
        raise CheckRefused(f"{what} writes ({write.key.upper()}): checks only read")
    if stmt.find(exp.Lock) is not None:
        raise CheckRefused(f"{what} takes row locks (FOR UPDATE/SHARE): checks never lock")
    return stmt


def check_select(text: str, family: str, what: str = "the query") -> str:
    """One read-only SELECT (or WITH ... SELECT / UNION), returned without a trailing semicolon."""
    stmt = _parse(text, family, what)
    if not isinstance(stmt, (exp.Select, exp.Union, exp.Intersect, exp.Except)):
        raise CheckRefused(f"{what} must be a SELECT; this is {stmt.key.upper()}")
    return text.strip().rstrip(";").strip()


def check_expression(text: str, family: str, what: str) -> str:
    """One scalar expression (a column, or e.g. to_timestamp(epoch_col))."""
    stmt = _parse(f"SELECT {text} FROM dbfleet_t", family, what)
    if not isinstance(stmt, exp.Select) or len(stmt.expressions) != 1 or stmt.args.get("where"):
        raise CheckRefused(f"{what} must be one expression, e.g. a column name: {text!r}")
    return text.strip()


def check_condition(text: str, family: str, what: str = "filter") -> str:
    """One WHERE condition."""
    stmt = _parse(f"SELECT 1 FROM dbfleet_t WHERE {text}", family, what)
    if not isinstance(stmt, exp.Select) or any(stmt.args.get(k) for k in ("group", "order", "limit", "having")):
        raise CheckRefused(f"{what} must be one WHERE condition: {text!r}")
    return text.strip()


def loaded_at(family: str, field: str) -> str:
    """A plain column name is quoted; anything else must parse as one expression."""
    if field.replace("_", "").isalnum():
        return quote_ident(family, field)
    return check_expression(field, family, "loaded_at_field")


def tagged(kind: str, text: str) -> str:
    """The statement with its kind's leading comment (kind: a check kind, or `tables`)."""
    return f"/* dbfleet:quality:{kind} */ {text}"


def _where(*conditions: str | None) -> str:
    kept = [f"({c})" for c in conditions if c]
    return f" where {' and '.join(kept)}" if kept else ""


def tables_sql(family: str) -> str:
    """The tables and views the session may read. PostgreSQL reads pg_class, not
    information_schema.tables: that view costs a plan of its own on every run (the collectors'
    sessions keep no prepared statements), about half again as much."""
    system = ", ".join(f"'{s}'" for s in SYSTEM_SCHEMAS[family])
    if family == "postgres":
        return tagged("tables", "select n.nspname as schema_name, c.relname as table_name "
                      "from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace "
                      f"where c.relkind in ('r', 'p', 'v', 'm', 'f') and n.nspname not in ({system}) "
                      "and n.nspname !~ '^pg_(toast|temp_)' and has_table_privilege(c.oid, 'SELECT') order by 1, 2")
    return tagged("tables", "select table_schema as schema_name, table_name as table_name "
                  f"from information_schema.tables where table_schema not in ({system}) "
                  "and table_type in ('BASE TABLE', 'VIEW', 'SYSTEM VERSIONED') order by 1, 2")


def freshness_sql(family: str, table: str, field: str, filter: str | None) -> str:
    """The newest load time and the server's clock (lag is measured on the server's own clock)."""
    newest = f"max({loaded_at(family, field)})"
    clock = "current_timestamp as now_tz, localtimestamp as now_local" if family == "postgres" else "now() as now_local"
    cond = check_condition(filter, family) if filter else None
    return tagged("freshness", f"select {newest} as newest, {clock} from {table}{_where(cond)}")


def freshness_query_sql(family: str, query: str) -> str:
    inner = check_select(query, family, "loaded_at_query")
    clock = ("current_timestamp as dbfleet_now_tz, localtimestamp as dbfleet_now_local" if family == "postgres"
             else "now() as dbfleet_now_local")
    return tagged("freshness", f"select dbfleet_q.*, {clock} from ({inner}) as dbfleet_q limit 1")


def _param(family: str, n: int) -> str:
    return f"${n}::timestamptz" if family == "postgres" else "%s"


def volume_count_sql(family: str, table: str, field: str, filter: str | None) -> str:
    """Rows loaded in [start, end): both bounds are parameters, so the period is the caller's."""
    col = loaded_at(family, field)
    cond = check_condition(filter, family) if filter else None
    return tagged("volume", f"select count(*) as n from {table}"
                  f"{_where(f'{col} >= {_param(family, 1)}', f'{col} < {_param(family, 2)}', cond)}")


def insert_counter_sql(family: str) -> str:
    """The server's cumulative insert counter for one table (schema, table as parameters)."""
    if family == "postgres":
        return tagged("volume", "select n_tup_ins as n from pg_stat_user_tables where schemaname = $1 and relname = $2")
    # InnoDB's table_rows is an estimate; it is what MySQL offers without performance_schema.
    return tagged("volume", "select table_rows as n from information_schema.tables where table_schema = %s "
                            "and table_name = %s")


def completeness_sql(family: str, table: str, columns: list[str], empty_is_null: bool, field: str | None,
                     filter: str | None, newest_by: list[str] | None = None, rows: int = 0) -> str:
    """Total rows and, per column, how many are NULL (or empty), over the latest window: rows whose
    `field` is at or after parameter 1, or else the newest `rows` rows by the `newest_by` key (a
    backward scan of the primary key), or else, with neither, the whole table."""
    text_type = "text" if family == "postgres" else "char"
    parts = []
    for i, column in enumerate(columns):
        col = quote_ident(family, column)
        missing = f"{col} is null" + (f" or cast({col} as {text_type}) = ''" if empty_is_null else "")
        parts.append(f"sum(case when {missing} then 1 else 0 end) as missing_{i}")
    window = f"{loaded_at(family, field)} >= {_param(family, 1)}" if field else None
    cond = check_condition(filter, family) if filter else None
    source = table
    if newest_by and not field:
        kept = ", ".join(quote_ident(family, c) for c in dict.fromkeys(columns))
        order = ", ".join(f"{quote_ident(family, c)} desc" for c in newest_by)
        source = f"(select {kept} from {table}{_where(cond)} order by {order} limit {max(1, int(rows))}) as dbfleet_w"
        cond = None
    return tagged("completeness", f"select count(*) as total, {', '.join(parts)} from {source}{_where(window, cond)}")


def primary_key_sql(family: str) -> str:
    """The table's primary key columns in key order (schema, table as parameters); none for a view
    or a table without one."""
    if family == "postgres":
        return tagged("completeness", "select a.attname as col from pg_index i join pg_class c on c.oid = i.indrelid "
                      "join pg_namespace n on n.oid = c.relnamespace "
                      "join lateral unnest(i.indkey) with ordinality as k(attnum, pos) on true "
                      "join pg_attribute a on a.attrelid = c.oid and a.attnum = k.attnum "
                      "where i.indisprimary and n.nspname = $1 and c.relname = $2 order by k.pos")
    return tagged("completeness", "select column_name as col from information_schema.key_column_usage "
                  "where constraint_name = 'PRIMARY' and table_schema = %s and table_name = %s "
                  "order by ordinal_position")


def assertion_sql(family: str, query: str, keep: int) -> str:
    """The violating rows, at most `keep` (at least one, for the count), with their total."""
    inner = check_select(query, family, "the assertion query")
    return tagged("assertion", f"select count(*) over () as dbfleet_violations, dbfleet_a.* from ({inner}) "
                  f"as dbfleet_a limit {max(1, int(keep))}")


def columns_sql(family: str) -> str:
    """Columns and their declared types, in order (schema, table as parameters)."""
    if family == "postgres":
        return tagged("schema", "select a.attname as col, format_type(a.atttypid, a.atttypmod) as typ "
                      "from pg_attribute a join pg_class c on c.oid = a.attrelid "
                      "join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and c.relname = $2 "
                      "and a.attnum > 0 and not a.attisdropped order by a.attnum")
    return tagged("schema", "select column_name as col, column_type as typ from information_schema.columns "
                  "where table_schema = %s and table_name = %s order by ordinal_position")


def explain_sql(family: str, sql: str) -> str:
    """The plan without running it; PostgreSQL's VERBOSE names each scanned table's schema."""
    return f"explain (format json, verbose) {sql}" if family == "postgres" else f"explain {sql}"


def create_index_sql(family: str, schema: str, table: str, field: str) -> str:
    """The index on one column (or expression) that lets a check read index entries, not the table."""
    col = field if field.replace("_", "").isalnum() else "expr"
    name = quote_ident(family, f"ix_{table}_{col}"[:63])
    target = qualified(family, schema, table)
    key = quote_ident(family, field) if col == field else f"({field})"
    if family == "postgres":
        return f"CREATE INDEX CONCURRENTLY {name} ON {target} ({key});"
    return f"CREATE INDEX {name} ON {target} ({key}) ALGORITHM=INPLACE LOCK=NONE;"
