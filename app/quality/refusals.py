"""Definition-time refusal: a freshness, volume, completeness or assertion check whose statement
would read a large table in full on every run is not stored; the refusal names the table, the
estimate and, where one column would fix it, the index to add (collectors/quality/plans.py).
`allow_scan: true` overrides it.

The plan is read with EXPLAIN on the collectors' read-only session of every instance in the
check's scope, for every table it matches; an instance that cannot be reached is reported as not
verified (the check is still stored: the DBA may define checks before the fleet is up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.db import Store
from app.inventory.targets import password_for, target_of
from app.quality.runner import list_tables, pool_for, scoped_instances
from app.settings import Settings
from collectors.engines.base import ConnectFailed
from collectors.quality.plans import SCAN_ROWS_LIMIT, scan_refusal
from collectors.quality.run import Table
from collectors.quality.sql import family_of

REVIEWED_KINDS = ("freshness", "volume", "completeness", "assertion")


@dataclass
class ScanReview:
    refused: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)


async def review_scans(store: Store, settings: Settings, check: Any,
                       rows_limit: int = SCAN_ROWS_LIMIT) -> ScanReview:
    """What the check's statement would cost on each instance and table in its scope."""
    review = ScanReview()
    if check.kind not in REVIEWED_KINDS or check.allow_scan:
        return review
    pool = pool_for(settings)
    try:
        for inst in await scoped_instances(store, check):
            try:
                async with pool.session(target_of(inst), password_for(inst, settings)) as conn:
                    targets: list[Table | None] = [None]
                    if check.tables:
                        targets = [t for t in await list_tables(conn, inst) if check.matches_table(t.schema, t.name)]
                    for table in targets:
                        if why := await _refusal(conn, family_of(inst.engine), check, table, rows_limit):
                            review.refused.append(f"{inst.name}: {why}")
            except ConnectFailed as e:
                review.unverified.append(f"{inst.name}: {e}")
    finally:
        await pool.close()
    return review


async def _refusal(conn: Any, family: str, check: Any, table: Table | None, rows_limit: int) -> str | None:
    try:
        return await scan_refusal(conn, family, check, table, rows_limit)
    except (ConnectFailed, OSError, ConnectionError):
        raise
    except Exception as e:  # noqa: BLE001 - e.g. no such column: the check cannot run
        return f"check {check.name} cannot be planned on {table.label if table else 'the instance'}: {e}"


@dataclass
class Defined:
    saved: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)


async def define_checks(store: Store, settings: Settings, checks: list[Any], origin: str, actor: str,
                        rows_limit: int = SCAN_ROWS_LIMIT) -> Defined:
    """Review every check's scans, then store all of them, or none if any is refused."""
    from app.quality.definitions import save_check

    out = Defined()
    for check in checks:
        review = await review_scans(store, settings, check, rows_limit)
        out.refused += review.refused
        out.unverified += review.unverified
    if out.refused:
        return out
    async with store.raw() as conn, conn.transaction():
        for check in checks:
            await save_check(conn, check, origin, actor)
            out.saved.append(check.name)
    return out


async def sync_config(store: Store, settings: Settings) -> list[str]:
    """Store the config's `checks:` (reviewed like any definition); the problems, to print or log."""
    from app.quality.definitions import parse_definitions, sync_config_checks

    checks, problems = parse_definitions(settings.checks)
    kept = []
    for check in checks:
        review = await review_scans(store, settings, check)
        problems += review.refused
        if not review.refused:
            kept.append(check)
    async with store.raw() as conn, conn.transaction():
        await sync_config_checks(conn, kept)
    return problems
