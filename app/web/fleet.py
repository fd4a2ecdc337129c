"""The fleet overview's one query: each instance's worst open finding and last successful run,
filtered, searched and paginated in SQL, with the fleet's counts over the same filter."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from app.settings import Settings
from app.topology import Topology, members_json
from collectors.registry import all_specs

PAGE_SIZE = 100

_INSTANCES = """
with inst as (
  select i.id, i.name, i.engine, i.host, i.port, i.dbname, i.tags, i.cloud
  from instances i
  where i.gone_at is null
    and ($1::text is null or i.engine = $1)
    and ($2::jsonb is null or i.tags @> $2)
    and ($3::text is null or i.name ilike '%' || $3 || '%')
)
"""

# The page's rows first, then each one's worst finding and last good run: 100 lookups, not 5,000.
_PAGE = _INSTANCES + """
select p.*, w.severity as worst, w.check as worst_check, w.title as worst_title, o.open_findings,
       o.unreachable, r.last_ok
from (select * from inst order by name limit $4 offset $5) p
left join lateral (
  select f.severity, f.check, f.title from findings f
  where f.instance_id = p.id and f.state = 'open'
  order by case f.severity when 'critical' then 3 when 'warning' then 2 else 1 end desc, f.id
  limit 1) w on true
left join lateral (
  select count(*) as open_findings,
         bool_or(f.check in ('instance_unreachable', 'login_failed', 'credential_unavailable')) as unreachable
  from findings f where f.instance_id = p.id and f.state = 'open') o on true
left join lateral (
  select max(c.started_at) as last_ok from collector_runs c
  where c.instance_id = p.id and c.status = 'ok') r on true
order by p.name
"""

# The counts over the whole filtered fleet: one grouped pass over the open findings.
_COUNTS = _INSTANCES + """
, open_by_instance as (
  select f.instance_id, max(case f.severity when 'critical' then 3 when 'warning' then 2 else 1 end) as worst,
         bool_or(f.check in ('instance_unreachable', 'login_failed', 'credential_unavailable')) as unreachable
  from findings f where f.state = 'open' group by f.instance_id
)
select count(*) as instances,
       count(*) filter (where o.worst = 3) as critical,
       count(*) filter (where o.worst = 2) as warning,
       count(*) filter (where o.unreachable) as unreachable,
       count(*) filter (where not exists (select 1 from collector_runs c where c.instance_id = inst.id
                                          and c.status = 'ok' and c.started_at >= $4)) as stale
from inst left join open_by_instance o on o.instance_id = inst.id
"""


def shortest_interval_s(settings: Settings) -> int:
    """The shortest enabled collector interval: an instance with no successful run in three of
    them is stale. (Not app.scheduler's: the API process must not load the sweeper.)"""
    return min((settings.collector(s.name).interval_s or s.interval_s for s in all_specs()
                if settings.collector(s.name).enabled), default=60)


@dataclass(frozen=True)
class FleetFilter:
    engine: str | None = None
    tags: dict[str, str] | None = None
    search: str | None = None
    page: int = 1

    def args(self) -> tuple[Any, ...]:
        # The search is a substring, so LIKE's own wildcards in it are taken literally.
        search = self.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") if self.search else None
        return self.engine or None, json.dumps(self.tags) if self.tags else None, search


async def fleet_page(conn, flt: FleetFilter, stale_after: timedelta) -> dict[str, Any]:
    """One page of the overview, the counts over the whole filtered fleet, and each row's role."""
    offset = (max(flt.page, 1) - 1) * PAGE_SIZE
    rows = [dict(r) for r in await conn.fetch(_PAGE, *flt.args(), PAGE_SIZE, offset)]
    counts = dict(await conn.fetchrow(_COUNTS, *flt.args(), datetime.now(timezone.utc) - stale_after))
    roles = {m["instance"]: m for m in members_json(await Topology.load(conn), ids={r["id"] for r in rows})}
    for r in rows:
        r["tags"] = r["tags"] if isinstance(r["tags"], dict) else json.loads(r["tags"] or "{}")
        r["topology"] = roles.get(r["name"], {})
        r["stale"] = r["last_ok"] is None or r["last_ok"] < datetime.now(timezone.utc) - stale_after
    return {"rows": rows, "counts": counts, "pages": max(1, -(-counts["instances"] // PAGE_SIZE))}
