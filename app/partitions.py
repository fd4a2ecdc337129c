"""Partition maintenance as plan -> apply on monitored databases (admin action, audited).

Policies live in the config (`partitions.policies`), each optionally limited to instances by
name or tag; the planner and the executor are the engine family's own (collectors/<engine>).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.inventory.credentials import resolve_credential
from app.models import AuditLog, Instance
from app.settings import Settings
from collectors.engines.base import SessionLimits, Target, connect
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


@dataclass(frozen=True)
class Engine:
    plan: Callable[[Any, list[dict[str, Any]], datetime, str | None], Awaitable[list[Any]]]
    apply: Callable[[Target, list[Any], int], Awaitable[list[Any]]]


async def _pg_plan(conn, policies, now, table):
    from collectors.postgres.partition_plan import PartitionPolicy
    from collectors.postgres.partitions import plan_live

    return await plan_live(conn, [PartitionPolicy.model_validate(p) for p in policies], now, table=table)


async def _pg_apply(target: Target, statements, lock_timeout_ms: int):
    from collectors.postgres.partition_apply import apply

    params = {"host": target.host, "port": target.port, "user": target.user or None,
              "password": target.password, "database": target.dbname or None}
    return await apply(params, statements, lock_timeout_ms=lock_timeout_ms)


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
ENGINES: dict[str, Engine] = {"postgres": Engine(_pg_plan, _pg_apply), "mysql": Engine(_mysql_plan, _mysql_apply),
                              "sqlserver": Engine(_mssql_plan, _mssql_apply),
                              "oracle": Engine(_oracle_plan, _oracle_apply)}


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


async def apply_for(session: AsyncSession, settings: Settings, inst: Instance, actor: str,
                    table: str | None = None, lock_timeout_ms: int = 2000) -> list[Any]:
    """Re-plan on the server (never from a client's list), run one statement at a time, audit each."""
    statements = await plan_for(settings, inst, table)
    outcomes = await _engine(inst).apply(await _target(inst), statements, lock_timeout_ms) if statements else []
    for o in outcomes:
        session.add(AuditLog(actor=actor, action="partitions.apply", target=f"{inst.name}/{o.statement.table}",
                             details={"sql": o.sql, "message": o.message}, outcome=o.status))
    return outcomes


def statement_json(s: Any) -> dict[str, Any]:
    return {"action": s.action, "table": s.table, "partition": s.partition, "sql": s.sql, "why": s.why}


def outcome_json(o: Any) -> dict[str, Any]:
    return {**statement_json(o.statement), "status": o.status, "message": o.message}
