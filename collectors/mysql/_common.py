"""Helpers every MySQL-family collector shares: flavour from version, snapshots of several queries.

Version numbers are MySQL's own (80036 for 8.0.36) and MariaDB's (100611 for 10.6.11). They never
overlap (MySQL is below 100000, MariaDB 10+ above), so one version-keyed SQL dict holds both
flavours and collectors.common.versions.closest_lower picks the right one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from collectors.common.versions import closest_lower
from collectors.spec import Connection, Context, Result, RunHook, Transform

log = logging.getLogger(__name__)

MARIADB_MIN = 100000
MYSQL_57 = 50700
MYSQL_80 = 80000
SYSTEM_SCHEMAS = ("mysql", "performance_schema", "information_schema", "sys")
SYSTEM_SCHEMAS_SQL = "('mysql', 'performance_schema', 'information_schema', 'sys')"
PICOSECONDS_PER_MS = 1_000_000_000


def is_mariadb(version: int) -> bool:
    return version >= MARIADB_MIN


def pick(row: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """The first present column of several spellings (Seconds_Behind_Source / _Master ...)."""
    for name in names:
        if name in row:
            return row[name]
    return default


def as_int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def variables(rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """SHOW STATUS / SHOW VARIABLES rows as {lower-case name: value}."""
    out = {}
    for row in rows:
        name = pick(row, "Variable_name", "VARIABLE_NAME")
        if name is not None:
            out[str(name).lower()] = pick(row, "Value", "VARIABLE_VALUE")
    return out


def quote_ident(name: str) -> str:
    """A MySQL identifier in backticks, embedded backticks doubled."""
    return "`" + str(name).replace("`", "``") + "`"


def qualified(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def in_scope(schema: str | None, ctx: Context) -> bool:
    """Whether a schema belongs to this inventory entry (ctx.extra["schemas"], from the runner).

    An entry that names schemas covers those; one that names none covers every schema the other
    entries on its server do not name, and statements run with no default schema. No scope given
    (a collector run on its own) means everything.
    """
    scope = ctx.extra.get("schemas")
    if not scope:
        return True
    if "include" in scope:
        return schema in scope["include"]
    return schema not in scope.get("exclude", ())


def scoped_snapshot(snap: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """The snapshot with every row of another entry's schemas left out (rows name `table_schema`)."""
    return {name: [r for r in rows if in_scope(r.get("table_schema"), ctx)]
            if isinstance(rows, list) and rows and isinstance(rows[0], Mapping) and "table_schema" in rows[0]
            else rows for name, rows in snap.items()}


async def fetch_snapshot(conn: Connection, queries: Mapping[str, Mapping[int, str]],
                         optional: Sequence[str] = ()) -> dict[str, Any]:
    """Run each named, version-keyed query; an optional one that fails is recorded, not raised.

    Optional queries are those a monitoring user may lack the privilege for (SHOW REPLICA STATUS
    needs REPLICATION CLIENT) or whose table only some flavours have (Aurora's replica_host_status).
    """
    snap: dict[str, Any] = {"errors": {}}
    for name, by_version in queries.items():
        sql = closest_lower(by_version, conn.server_version)
        if sql is None:
            snap[name] = []
            continue
        try:
            snap[name] = await conn.fetch(sql)
        except Exception as e:  # noqa: BLE001 - driver errors vary; only optional ones land here
            if name not in optional:
                raise
            log.debug("optional query %s failed: %s", name, e)
            snap[name] = []
            snap["errors"][name] = str(e)
    return snap


def snapshot_hook(queries: Mapping[str, Mapping[int, str]], transform: Transform,
                  optional: Sequence[str] = ()) -> RunHook:
    """A run hook that fetches a snapshot of several queries and hands it to the pure transform.

    The transform receives ``[snapshot]``: one row holding each query's rows under its name, so it
    stays a pure function of recorded data (tests load the same shape from JSON fixtures).
    """
    async def run(conn: Connection, ctx: Context) -> Result:
        return transform([await fetch_snapshot(conn, queries, optional)], ctx)
    return run


def snapshot_of(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return rows[0] if rows else None
