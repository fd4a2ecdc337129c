"""Stored check definitions: create, replace, delete, list; the config's `checks:` kept in step.

A definition is refused before it is stored when its SQL does not parse as one read-only
expression or SELECT, or when its statement would scan a large table in full on every run (see
refusals.py); nothing is half-written.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
from pydantic import ValidationError

from app.findings import InstanceRef, record_run
from collectors.quality.checks import collector_name, parse_check
from collectors.quality.sql import (
    FAMILIES,
    CheckRefused,
    check_condition,
    check_expression,
    check_select,
)
from collectors.spec import Result

ORIGINS = ("api", "config", "dbt")
log = logging.getLogger(__name__)


def validate_sql(check: Any) -> None:
    """Every piece of user SQL parses in both families' dialects it may run on (CheckRefused)."""
    for family in FAMILIES:
        for field in ("loaded_at_field",):
            value = getattr(check, field, None)
            if value and not value.replace("_", "").isalnum():
                check_expression(value, family, field)
        if getattr(check, "filter", None):
            check_condition(check.filter, family)
        if getattr(check, "loaded_at_query", None):
            check_select(check.loaded_at_query, family, "loaded_at_query")
        if check.kind == "assertion":
            check_select(check.query.replace("{table}", "dbfleet_t"), family, "the assertion query")


def parse_definitions(raw: list[Any], where: str = "checks") -> tuple[list[Any], list[str]]:
    """Checks from their dict forms, and every problem with its path (config / import files)."""
    out, problems, names = [], [], set()
    for i, item in enumerate(raw):
        try:
            check = parse_check(item)
            validate_sql(check)
        except ValidationError as e:
            problems += [f"{where}[{i}].{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
            continue
        except CheckRefused as e:
            problems.append(f"{where}[{i}]: check {item.get('name', '?')}: {e}")
            continue
        if check.name in names:
            problems.append(f"{where}[{i}].name: {check.name!r} is declared twice")
            continue
        names.add(check.name)
        out.append(check)
    return out, problems


async def stored_checks(conn: asyncpg.Connection, select: list[str] | None = None) -> list[tuple[int, Any]]:
    """(id, check) of the enabled stored checks, by name or glob selection."""
    rows = await conn.fetch("select id, name, definition from quality_checks where enabled order by name")
    out = []
    for r in rows:
        if select and not any(_selected(r["name"], s, r["definition"]) for s in select):
            continue
        try:
            out.append((r["id"], parse_check(r["definition"])))
        except ValidationError as e:  # written by an older dbfleet, or by hand: skip it, run the others
            log.warning("stored check %s is not valid any more, not run: %s", r["name"], e)
    return out


def _selected(name: str, selector: str, definition: dict[str, Any]) -> bool:
    """dbt-like selection: a name or glob, kind:<kind>, label:<k>=<v>, or source:<name>."""
    import fnmatch

    kind, _, value = selector.partition(":")
    if value and kind == "kind":
        return definition.get("kind") == value
    if value and kind == "source":
        return (definition.get("labels") or {}).get("source") == value
    if value and kind == "label":
        key, _, want = value.partition("=")
        return (definition.get("labels") or {}).get(key) == want
    return fnmatch.fnmatchcase(name, selector)


async def save_check(conn: asyncpg.Connection, check: Any, origin: str, actor: str) -> int:
    """Insert or replace by name; a replaced check starts over (results, schema baseline)."""
    definition = json.dumps(check.model_dump(mode="json"))
    async with conn.transaction():
        row = await conn.fetchrow("select id from quality_checks where name = $1 for update", check.name)
        if row is None:
            return await conn.fetchval(
                "insert into quality_checks (name, kind, origin, definition, created_by) values ($1, $2, $3, $4, $5) "
                "returning id", check.name, check.kind, origin, definition, actor)
        await conn.execute("update quality_checks set kind = $2, origin = $3, definition = $4, updated_at = now() "
                           "where id = $1", row["id"], check.kind, origin, definition)
        await conn.execute("delete from quality_check_results where check_id = $1", row["id"])
        return row["id"]


async def delete_check(conn: asyncpg.Connection, name: str) -> bool:
    """Remove a check; what it had open is resolved by an empty run of its collector (so alerts
    resolve through the outbox like any other finding)."""
    collector = collector_name(name)
    async with conn.transaction():
        gone = await conn.fetchval("delete from quality_checks where name = $1 returning id", name)
        if gone is None:
            return False
        rows = await conn.fetch(
            "select distinct i.id, i.name, i.engine, i.tags from findings f join instances i on i.id = f.instance_id "
            "where f.collector = $1 and f.state <> 'resolved'", collector)
        now = datetime.now(UTC)
        for r in rows:
            await record_run(conn, InstanceRef(r["id"], r["name"], r["engine"], dict(r["tags"] or {})), collector,
                             Result(), now, 0.0)
    return True


async def sync_config_checks(conn: asyncpg.Connection, checks: list[Any]) -> dict[str, list[str]]:
    """Make the stored origin=config checks exactly the config's; API and dbt checks are kept."""
    stored = {r["name"]: (r["origin"], r["definition"]) for r in
              await conn.fetch("select name, origin, definition from quality_checks")}
    saved, removed = [], []
    for check in checks:
        current = stored.get(check.name)
        if current and current[0] != "config":
            continue  # a check of the same name defined through the API or imported wins
        if current is None or current[1] != check.model_dump(mode="json"):
            await save_check(conn, check, "config", "config")
            saved.append(check.name)
    wanted = {c.name for c in checks}
    for name, (origin, _) in stored.items():
        if origin == "config" and name not in wanted:
            await delete_check(conn, name)
            removed.append(name)
    return {"saved": saved, "removed": removed}
