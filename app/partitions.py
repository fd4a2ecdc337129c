"""Partition maintenance as plan -> apply on monitored databases (admin action, audited).

Policies live in the config (`partitions.policies`), each optionally limited to instances by
name or tag; the planner and the executor are the engine family's own, found by its registered
MaintenanceSpec (collectors.registry.maintenance_for).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.inventory.targets import target_for
from app.models import AuditLog, Instance
from app.settings import Settings
from collectors.common.maintenance import MaintenanceSpec, Outcome, Statement
from collectors.engines.base import SessionLimits, connect
from collectors.registry import maintenance_for


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


def _engine(inst: Instance) -> MaintenanceSpec:
    spec = maintenance_for(inst.engine)
    if spec is None:
        raise PolicyError(f"partition maintenance is not available for {inst.engine} instances")
    return spec


async def plan_for(settings: Settings, inst: Instance, table: str | None = None) -> list[Statement]:
    """The exact DDL the policies call for now; reads the catalog read-only and changes nothing."""
    engine = _engine(inst)
    target = await target_for(inst, settings)
    conn = await connect(target, SessionLimits(statement_timeout_ms=settings.worker.statement_timeout_ms))
    try:
        return await engine.plan(conn, policies_for(settings, inst), datetime.now(timezone.utc), table)
    finally:
        await conn.close()


NO_POLICY = "no policy configured: planned only"


@dataclass(frozen=True)
class PlannedOnly:
    """A statement for a table no configured policy names: shown with the defaults, never run."""

    statement: Statement
    status: str = "planned_only"
    message: str = NO_POLICY

    @property
    def sql(self) -> str:
        return self.statement.sql


def policy_covers(settings: Settings, inst: Instance) -> Callable[[Statement], bool]:
    """Whether a configured policy names a statement's table; one no policy names is planned only."""
    names, policies = _engine(inst).names_table, policies_for(settings, inst)
    return lambda statement: any(names(statement.table, p) for p in policies)


async def apply_for(session: AsyncSession, settings: Settings, inst: Instance, actor: str,
                    table: str | None = None, lock_timeout_ms: int = 2000,
                    statements: list[Statement] | None = None) -> list[Outcome | PlannedOnly]:
    """Run the plan one statement at a time and audit each; a table no policy names is planned only.

    Without `statements` it re-plans on the server (the API never runs a client's list); the CLI
    passes the plan it has just shown and had confirmed. Either way the engine re-checks the live
    catalog before each statement."""
    if statements is None:
        statements = await plan_for(settings, inst, table)
    covered = policy_covers(settings, inst)
    chosen = [s for s in statements if covered(s)]
    outcomes = await _engine(inst).apply(await target_for(inst, settings), chosen, lock_timeout_ms) if chosen else []
    for o in outcomes:
        session.add(AuditLog(actor=actor, action="partitions.apply", target=f"{inst.name}/{o.statement.table}",
                             details={"sql": o.sql, "message": o.message}, outcome=o.status))
    return outcomes + [PlannedOnly(s) for s in statements if not covered(s)]


def statement_json(s: Statement) -> dict[str, Any]:
    return {"action": s.action, "table": s.table, "partition": s.partition, "sql": s.sql, "why": s.why}


def outcome_json(o: Outcome | PlannedOnly) -> dict[str, Any]:
    return {**statement_json(o.statement), "status": o.status, "message": o.message}
