"""The freshness view the API (/api/v1/freshness), the console and Grafana share: per source
system and table, the latest lag, the SLA and the state."""

from __future__ import annotations

from typing import Any

import asyncpg

# The source is the check's `source` label, else the instance's `source` tag.
FRESHNESS_SQL = """
select coalesce(q.definition->'labels'->>'source', i.tags->>'source', '') as source,
       q.name as check, i.name as instance, r.object as table_name, r.state, r.value as lag_seconds,
       (r.details->>'sla_seconds')::float8 as sla_seconds, r.details->>'newest' as newest, r.ran_at,
       q.definition->'labels'->>'pipeline' as pipeline
from quality_check_results r
join quality_checks q on q.id = r.check_id
join instances i on i.id = r.instance_id
where q.kind = 'freshness' and ($1::text is null or coalesce(q.definition->'labels'->>'source',
                                                             i.tags->>'source', '') = $1)
order by 1, 4, 3, 2
"""
_WORST = {"pass": 0, "warn": 1, "error": 2, "failed": 3}


async def freshness_by_source(conn: asyncpg.Connection, source: str | None = None) -> list[dict[str, Any]]:
    """[{source, state (the worst of its tables), tables: [...]}], sources in name order."""
    out: dict[str, dict[str, Any]] = {}
    for r in await conn.fetch(FRESHNESS_SQL, source):
        group = out.setdefault(r["source"], {"source": r["source"], "state": "pass", "tables": []})
        row = dict(r)
        row.pop("source")
        group["tables"].append(row)
        if _WORST.get(r["state"], 3) > _WORST.get(group["state"], 3):
            group["state"] = r["state"]
    return list(out.values())
