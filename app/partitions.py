"""Partition maintenance as plan -> apply on monitored databases (admin action, audited).

Policies live in the config (`partitions.policies`), each optionally limited to instances by
name or tag; the planner and the executor are the engine family's own (collectors/<engine>).
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.inventory.credentials import resolve_credential
from app.models import AuditLog, Instance
from app.settings import Settings
from collectors.engines.base import LoginFailed, SessionLimits, Target, Unreachable, connect
from collectors.registry import ENGINE_FAMILY


class PolicyScope(BaseModel):
    """Which instances a policy applies to; the remaining keys are the engine's policy fields."""

    model_config = ConfigDict(extra="allow")

    instances: list[str] = Field(default_factory=list, description="instance name globs; all when empty")
    tags: dict[str, str] = Field(default_factory=dict)

    def applies(self, inst: Instance) -> bool:
        if self.instances and not any(fnmatch.fnmatchcase(inst.name, p) for p in self.instances):
            return False
        return all((inst.tags or {}).get(k) == v for k, v in self.tags.items())


class PolicyError(ValueError):
    pass


def policies_for(settings: Settings, inst: Instance) -> list[dict[str, Any]]:
    """The policy dicts (without scope keys) that apply to this instance, in config order."""
    out = []
    for i, raw in enumerate(settings.partitions.get("policies", [])):
        try:
            scope = PolicyScope.model_validate(raw)
        except ValidationError as e:
            raise PolicyError(f"partitions.policies[{i}]: {e}") from None
        if scope.applies(inst):
            out.append({k: v for k, v in raw.items() if k not in ("instances", "tags")})
    return out


def _table_glob(fold_case: bool = False, default: str = "*") -> Callable[[str, dict[str, Any]], bool]:
    """Whether a policy's `table` glob names schema.table, by the engine planner's own rule."""
    def names(table: str, policy: dict[str, Any]) -> bool:
        pattern = str(policy.get("table", default))
        if fold_case:
            return fnmatch.fnmatchcase(table.lower(), pattern.lower())
        return fnmatch.fnmatchcase(table, pattern)
    return names


@dataclass(frozen=True)
class Engine:
    plan: Callable[[Any, list[dict[str, Any]], datetime, str | None], Awaitable[list[Any]]]
    apply: Callable[[Target, list[Any], int], Awaitable[list[Any]]]
    # The planner gives a table no policy names the defaults; this tells the app which those are.
    names_table: Callable[[str, dict[str, Any]], bool] = field(default=_table_glob())


async def _pg_plan(conn, policies, now, table):
    from collectors.postgres.partition_plan import PartitionPolicy
    from collectors.postgres.partitions import plan_live

    return await plan_live(conn, [PartitionPolicy.model_validate(p) for p in policies], now, table=table)


async def _pg_apply(target: Target, statements, lock_timeout_ms: int):
    import asyncpg

    from collectors.engines.pg import _LOGIN_ERRORS, _ssl_for
    from collectors.postgres.partition_apply import apply

    # The writable session takes TLS from the instance exactly as the read-only collector session
    # does: with tls_mode=require a server without TLS must refuse us, not get DDL in plain text.
    params = {"host": target.host, "port": target.port, "user": target.user or None,
              "password": target.password, "database": target.dbname or None, "ssl": _ssl_for(target.tls_mode)}
    try:
        return await apply(params, statements, lock_timeout_ms=lock_timeout_ms)
    except _LOGIN_ERRORS as e:
        raise LoginFailed(target, f"login failed: {e}") from None
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise Unreachable(target, f"writable session to {target.host}:{target.port} failed "
                                  f"(tls_mode={target.tls_mode}): {str(e) or type(e).__name__}") from None


async def _mysql_plan(conn, policies, now, table):
    from collectors.mysql.partition_apply import plan_live

    return await plan_live(conn, policies, now, table=table)


async def _mysql_apply(target: Target, statements, lock_timeout_ms: int):
    from collectors.mysql.partition_apply import apply

    return await apply(target, statements, lock_timeout_ms=lock_timeout_ms)


async def _mssql_plan(conn, policies, now, table):
    from collectors.sqlserver.partition_apply import plan_live

    return await plan_live(conn, policies, now, table=table)


async def _mssql_apply(target: Target, statements, lock_timeout_ms: int):
    from collectors.sqlserver.partition_apply import apply

    return await apply(target, statements, lock_timeout_ms=lock_timeout_ms)


async def _oracle_plan(conn, policies, now, table):
    from collectors.oracle.partition_apply import plan_live

    return await plan_live(conn, policies, now, table=table)


async def _oracle_apply(target: Target, statements, lock_timeout_ms: int):
    from collectors.oracle.partition_apply import apply

    return await apply(target, statements, lock_timeout_ms=lock_timeout_ms)


# SQL Server and Oracle apply are tested on recorded catalog rows only, never on a live server.
# MySQL matches `table` exactly as written and has no '*' default; SQL Server and Oracle fold case.
ENGINES: dict[str, Engine] = {"postgres": Engine(_pg_plan, _pg_apply),
                              "mysql": Engine(_mysql_plan, _mysql_apply, _table_glob(default="")),
                              "sqlserver": Engine(_mssql_plan, _mssql_apply, _table_glob(fold_case=True)),
                              "oracle": Engine(_oracle_plan, _oracle_apply, _table_glob(fold_case=True))}


def _engine(inst: Instance) -> Engine:
    family = ENGINE_FAMILY.get(inst.engine, inst.engine)
    if family not in ENGINES:
        raise PolicyError(f"partition maintenance is not available for {inst.engine} instances")
    return ENGINES[family]


async def _target(inst: Instance) -> Target:
    password = await resolve_credential(inst.credential, {"name": inst.name, "host": inst.host, "port": inst.port,
                                                           "user": inst.user, "cloud": inst.cloud})
    return Target(name=inst.name, engine=inst.engine, host=inst.host, port=inst.port, dbname=inst.dbname,
                  user=inst.user, password=password, tls_mode=inst.tls_mode, options=dict(inst.cloud or {}))


async def plan_for(settings: Settings, inst: Instance, table: str | None = None) -> list[Any]:
    """The exact DDL the policies call for now; reads the catalog read-only and changes nothing."""
    engine = _engine(inst)
    target = await _target(inst)
    conn = await connect(target, SessionLimits(statement_timeout_ms=settings.worker.statement_timeout_ms))
    try:
        return await engine.plan(conn, policies_for(settings, inst), datetime.now(timezone.utc), table)
    finally:
        await conn.close()


NO_POLICY = "no policy configured: planned only"


@dataclass(frozen=True)
class PlannedOnly:
    """A statement for a table no configured policy names: shown with the defaults, never run."""

    statement: Any
    status: str = "planned_only"
    message: str = NO_POLICY

    @property
    def sql(self) -> str:
        return self.statement.sql


def policy_covers(settings: Settings, inst: Instance) -> Callable[[Any], bool]:
    """Whether a configured policy names a statement's table; one no policy names is planned only."""
    names, policies = _engine(inst).names_table, policies_for(settings, inst)
    return lambda statement: any(names(statement.table, p) for p in policies)


async def apply_for(session: AsyncSession, settings: Settings, inst: Instance, actor: str,
                    table: str | None = None, lock_timeout_ms: int = 2000,
                    statements: list[Any] | None = None) -> list[Any]:
    """Run the plan one statement at a time and audit each; a table no policy names is planned only.

    Without `statements` it re-plans on the server (the API never runs a client's list); the CLI
    passes the plan it has just shown and had confirmed. Either way the engine re-checks the live
    catalog before each statement."""
    if statements is None:
        statements = await plan_for(settings, inst, table)
    covered = policy_covers(settings, inst)
    chosen = [s for s in statements if covered(s)]
    outcomes = await _engine(inst).apply(await _target(inst), chosen, lock_timeout_ms) if chosen else []
    for o in outcomes:
        session.add(AuditLog(actor=actor, action="partitions.apply", target=f"{inst.name}/{o.statement.table}",
                             details={"sql": o.sql, "message": o.message}, outcome=o.status))
    return outcomes + [PlannedOnly(s) for s in statements if not covered(s)]


def statement_json(s: Any) -> dict[str, Any]:
    return {"action": s.action, "table": s.table, "partition": s.partition, "sql": s.sql, "why": s.why}


def outcome_json(o: Any) -> dict[str, Any]:
    return {**statement_json(o.statement), "status": o.status, "message": o.message}
