"""Every PostgreSQL collector once on one connection, in registry order, carrying states between runs.

What a sweep does for one instance that is its server's home entry (server- and database-scope
collectors alike), without the store: the recorder, the simulator's test and the statement-count
test use it to see exactly what the collectors send.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import collectors.postgres  # noqa: F401  (registers the specs)
from collectors.registry import specs_for
from collectors.runner import run_collector
from collectors.spec import Connection, Context, Result


@dataclass
class Sweep:
    """One instance's collectors, and their states from one run to the next."""

    instance: str = "pgsim"
    states: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def run(self, conn: Connection, now: datetime | None = None,
                  before_each: Callable[[str], None] | None = None) -> dict[str, Result]:
        out = {}
        for spec in specs_for("postgres"):
            if not spec.applies_to(conn.is_standby):
                continue
            ctx = Context(instance=self.instance, engine="postgres",
                          thresholds={**spec.thresholds, **self.thresholds.get(spec.name, {})},
                          previous=self.states.get(spec.name), **({"now": now} if now else {}))
            if before_each is not None:
                before_each(spec.name)
            result = await run_collector(spec, conn, ctx)
            if result.state is not None:
                self.states[spec.name] = result.state
            out[spec.name] = result
        return out


def found(results: dict[str, Result]) -> set[tuple[str, str, str, str]]:
    """(collector, check, object, severity) of every finding."""
    return {(name, f.check, f.object, str(f.severity)) for name, r in results.items() for f in r.findings}
