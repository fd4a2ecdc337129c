"""The partition-maintenance contract every engine registers: planned statements, outcomes with
one set of status words, the refusals the API answers 422 for, and the re-plan-then-run loop.

app/partitions.py drives every engine through a MaintenanceSpec looked up by family
(collectors.registry.maintenance_for); an engine says how it plans and applies, nothing more.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from collectors.common.partition_maths import keep_table, retention_days
from collectors.engines.base import Target, redact

# ok: it ran. skipped: not needed any more, or an earlier statement on its table failed.
# refused: the live catalog is not what the plan saw; nothing ran. failed: the server said no.
Status = Literal["ok", "skipped", "refused", "failed"]
# A table abandoned for years is a DBA's call, not a loop's: at most this many new boundaries a run.
MAX_NEW_BOUNDS = 36
# DDL on an empty partition is metadata only; a SPLIT that moves rows can take a while.
APPLY_STATEMENT_TIMEOUT_MS = 300_000


class PlanRefused(ValueError):
    """Nothing was planned or run: the request or the policy cannot be honoured (the API says 422)."""


class NotRangePartitioned(PlanRefused):
    """The named table is not RANGE-partitioned on a key the engine maintains; nothing was run."""


class BadPolicy(PlanRefused):
    """A partition policy's premake, retention or keep_table cannot be read."""


class Statement(Protocol):
    """What the app shows and audits of any engine's planned statement."""

    @property
    def action(self) -> str: ...
    @property
    def table(self) -> str: ...
    @property
    def partition(self) -> str: ...
    @property
    def sql(self) -> str: ...
    @property
    def why(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PlannedStatement:
    """One DDL statement of a plan whose SQL the engine's planner rendered (MySQL, SQL Server,
    Oracle); apply re-plans and runs it only if the fresh plan still has it."""

    action: str
    schema: str
    table_name: str
    partition: str   # the partition(s) or boundary it creates or removes
    sql: str
    why: str
    policy: Any

    @property
    def table(self) -> str:
        return f"{self.schema}.{self.table_name}"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.action, self.partition, self.sql)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one statement; the app writes one audit_log row per outcome."""

    statement: Any   # a PlannedStatement, or an engine's own Statement (PostgreSQL's)
    status: Status
    message: str = ""

    @property
    def sql(self) -> str:
        return self.statement.sql


@dataclass(frozen=True, slots=True)
class Policy:
    premake: int = 4
    retention_days: int | None = None
    keep_table: bool = False


def policy_from(name: str, policies: Sequence[Mapping[str, Any]]) -> Policy:
    """The first policy whose `table` glob matches schema.table (case-insensitive, as SQL Server
    and Oracle names are); premake 4 and no retention otherwise, as on the other engines."""
    for p in policies:
        if fnmatch.fnmatchcase(name.lower(), str(p.get("table", "*")).lower()):
            try:
                policy = Policy(int(p.get("premake", 4)), retention_days(p), keep_table(p))
            except (TypeError, ValueError) as e:
                raise BadPolicy(f"partition policy {p.get('table', '*')!r}: {e}") from None
            if policy.premake < 0 or (policy.retention_days is not None and policy.retention_days <= 0):
                raise BadPolicy(f"partition policy {p.get('table', '*')!r}: premake must be >= 0, retention > 0")
            return policy
    return Policy()


def find_table(tables: Sequence[Any], name: str, what: str) -> Any:
    """The table called `name` (schema.table, case-insensitive) among the catalog's; compared in
    Python, so a hostile name is never sent to the server."""
    for t in tables:
        if t.name.lower() == name.strip().lower():
            return t
    raise NotRangePartitioned(f"{name!r} is not {what} in this database")


def dedupe(statements: Sequence[PlannedStatement]) -> list[PlannedStatement]:
    """Tables sharing one partition function plan the same SPLITs: keep the first of each."""
    seen: set[tuple[str, str, str]] = set()
    return [s for s in statements if not (s.key in seen or seen.add(s.key))]


class Session(Protocol):
    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...
    async def execute(self, sql: str) -> None: ...


Replan = Callable[[Session, PlannedStatement], Awaitable[list[PlannedStatement]]]


async def run_replanned(session: Session, statements: Sequence[PlannedStatement], replan: Replan,
                        secret: str | None = None) -> list[Outcome]:
    """One statement at a time, each only if the live catalog still calls for it; a table stops
    at its first failure (later statements assume earlier ones), other tables go on."""
    out: list[Outcome] = []
    failed: set[str] = set()
    for stmt in statements:
        outcome = await _run_one(session, stmt, replan, secret) if stmt.table not in failed else \
            Outcome(stmt, "skipped", "an earlier statement on this table failed")
        if outcome.status == "failed":
            failed.add(stmt.table)
        out.append(outcome)
    return out


async def _run_one(session: Session, stmt: PlannedStatement, replan: Replan, secret: str | None) -> Outcome:
    try:
        fresh = await replan(session, stmt)
    except Exception as e:  # noqa: BLE001 - a refused or unreadable table is this statement's outcome
        return Outcome(stmt, "failed", redact(f"re-plan from the live catalog failed: {e}", secret))
    if stmt.key not in {s.key for s in fresh}:
        return Outcome(stmt, "skipped", "no longer needed: the live catalog already has it")
    try:
        await session.execute(stmt.sql)
    except Exception as e:  # noqa: BLE001 - any server error is the statement's audited outcome
        return Outcome(stmt, "failed", redact(str(e), secret))
    return Outcome(stmt, "ok", f"{stmt.action} {stmt.partition} on {stmt.table}")


def table_glob(fold_case: bool = False, default: str = "*") -> Callable[[str, Mapping[str, Any]], bool]:
    """Whether a policy's `table` glob names schema.table, by the engine planner's own rule."""
    def names(table: str, policy: Mapping[str, Any]) -> bool:
        pattern = str(policy.get("table", default))
        if fold_case:
            return fnmatch.fnmatchcase(table.lower(), pattern.lower())
        return fnmatch.fnmatchcase(table, pattern)
    return names


PlanLive = Callable[[Any, list[dict[str, Any]], datetime, str | None], Awaitable[list[Any]]]
ApplyPlan = Callable[[Target, list[Any], int], Awaitable[list[Outcome]]]


@dataclass(frozen=True)
class MaintenanceSpec:
    """How one engine family plans (read-only, on a collector session) and applies (on its own
    writable session) partition maintenance. plan(conn, policies, now, table) gets the policy dicts
    from the config; apply(target, statements, lock_timeout_ms) raises ConnectFailed if it cannot
    open its session."""

    engine: str
    plan: PlanLive
    apply: ApplyPlan
    # The planner gives a table no policy names the defaults; this tells the app which those are.
    names_table: Callable[[str, Mapping[str, Any]], bool] = field(default=table_glob())
