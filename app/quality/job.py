"""The worker's quality job: every 30 s, the checks that are due (each at its own `every`) on
this shard's instances, after the config's `checks:` are stored once at start."""

from __future__ import annotations

import logging
from typing import Any

from app.db import Store
from app.quality.refusals import sync_config
from app.quality.runner import QualityRunner
from app.settings import Settings
from app.shard import Shard

log = logging.getLogger(__name__)
TICK_S = 30


def quality_checks_job(store: Store, settings: Settings, shard: Shard) -> dict[str, Any]:
    """APScheduler add_job arguments; the runner keeps its sessions open between ticks."""
    runner = QualityRunner(store, settings, shard)
    synced = False

    async def run_due_checks() -> None:
        nonlocal synced
        if not synced:
            for problem in await sync_config(store, settings):
                log.warning("checks config: %s", problem)
            synced = True
        summary = await runner.run(due_only=True)
        if failed := summary.failures():
            log.info("quality checks: %d of %d failing", len(failed), len(summary.outcomes))

    return {"func": run_due_checks, "trigger": "interval", "seconds": TICK_S, "id": "quality-checks",
            "max_instances": 1, "coalesce": True}
