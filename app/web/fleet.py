"""The fleet overview's queries: each instance's health from instance_health (kept by the store's
triggers, migration 0010), its worst open finding by one index probe, filtered, searched and
paginated in SQL, with the fleet's counts over the same filter."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

from app import store_codec
from app.settings import Settings
from collectors.registry import all_specs

PAGE_SIZE = 100
NOT_IN_A_CLOUD = "none"  # the cloud filter's value for instances no cloud discovery made

# The filtered fleet. Only the conditions a filter sets are written into the SQL, so each set of
# filters is its own prepared statement with a plan of its own: one statement of `$1 is null or
# ...` for every filter drifted to a generic plan that cost 4.7 ms for the counts, not 1.8.
_CONDITIONS = {
    "engine": "i.engine = ${}",
    "tags": "i.tags @> ${}::jsonb",
    "search": "i.name ilike '%' || ${} || '%'",
    "cloud": "coalesce(i.cloud->>'provider', 'none') = ${}",
    "region": "i.cloud->>'region' = ${}",
}
_INSTANCES = """
with inst as (
  select i.id, i.name, i.engine, i.tags, i.cloud
  from instances i
  where i.gone_at is null{conditions}
)
"""

# The page's rows first (by the name index), then each one's health row and worst open finding.
_PAGE = _INSTANCES + """
select p.*, w.severity as worst, w.check as worst_check, w.title as worst_title,
       coalesce(h.open_critical + h.open_warning + h.open_info, 0) as open_findings,
       coalesce(h.open_unreachable > 0, false) as unreachable, h.last_ok,
       t.role, t.upstream_host, t.upstream_port, t.upstream_streaming
from (select * from inst order by name limit ${limit} offset ${offset}) p
left join instance_health h on h.instance_id = p.id
left join instance_topology t on t.instance_id = p.id
left join lateral (
  select f.severity, f.check, f.title from findings f
  where f.instance_id = p.id and f.state = 'open'
  order by f.severity_rank desc, f.id
  limit 1) w on true
order by p.name
"""

# The counts over the whole filtered fleet: one row of instance_health per instance.
_COUNTS = _INSTANCES + """
select count(*) as instances,
       count(*) filter (where h.open_critical > 0) as critical,
       count(*) filter (where h.open_critical = 0 and h.open_warning > 0) as warning,
       count(*) filter (where h.open_unreachable > 0) as unreachable,
       count(*) filter (where h.last_ok is null or h.last_ok < ${since}) as stale
from inst left join instance_health h on h.instance_id = inst.id
"""

# The filters' choices: one pass over the inventory, reused for a while (a new region shows
# up in the list within FACETS_TTL_S; filtering by it works at once).
_FACETS = """
select array(select distinct engine from instances where gone_at is null order by 1) as engines,
       array(select distinct coalesce(cloud->>'provider', 'none') from instances where gone_at is null
             order by 1) as clouds,
       array(select distinct cloud->>'region' from instances where gone_at is null and cloud ? 'region'
             order by 1) as regions,
       array(select distinct tags->>'env' from instances where gone_at is null and tags ? 'env' order by 1) as envs,
       array(select distinct tags->>'team' from instances where gone_at is null and tags ? 'team'
             order by 1) as teams
"""
FACETS_TTL_S = 30.0


class Reused:
    """A filter list read from the store and reused for FACETS_TTL_S."""

    def __init__(self) -> None:
        self._value: Any = None
        self._at = -math.inf

    async def get(self, read: Callable[[], Awaitable[Any]]) -> Any:
        if time.monotonic() - self._at > FACETS_TTL_S:
            self._value, self._at = await read(), time.monotonic()
        return self._value


_facets = Reused()
_shortest: tuple[Settings, int] | None = None  # one process serves one settings object


def shortest_interval_s(settings: Settings) -> int:
    """The shortest enabled collector interval: an instance with no successful run in three of
    them is stale. (Not app.scheduler's: the API process must not load the sweeper.) Worked out
    once per settings object: the fleet page asks on every request."""
    global _shortest
    if _shortest is None or _shortest[0] is not settings:
        _shortest = (settings, min((settings.collector(s.name).interval_s or s.interval_s for s in all_specs()
                                    if settings.collector(s.name).enabled), default=60))
    return _shortest[1]


@dataclass(frozen=True)
class FleetFilter:
    engine: str | None = None
    tags: dict[str, str] | None = None
    search: str | None = None
    page: int = 1
    cloud: str | None = None
    region: str | None = None

    def set_filters(self) -> dict[str, Any]:
        """The filters given, as bind values by _CONDITIONS' names."""
        # The search is a substring, so LIKE's own wildcards in it are taken literally.
        search = self.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") if self.search else None
        given = {"engine": self.engine, "tags": json.dumps(self.tags) if self.tags else None, "search": search,
                 "cloud": self.cloud, "region": self.region}
        return {k: v for k, v in given.items() if v}

    def sql(self, template: str, *extra: str) -> tuple[str, list[Any]]:
        """`template` with this filter's conditions, and its bind values; `extra` names the
        template's further parameters, numbered after the filters'."""
        given = self.set_filters()
        conditions = "".join(f"\n    and {_CONDITIONS[k].format(n)}" for n, k in enumerate(given, 1))
        numbers = {name: len(given) + n for n, name in enumerate(extra, 1)}
        return template.format(conditions=conditions, **numbers), list(given.values())


async def fleet_facets(conn) -> dict[str, list[str]]:
    """Engines, clouds, regions, envs and teams present in the inventory, for the filter lists."""
    async def read() -> dict[str, list[str]]:
        return {k: list(v) for k, v in (await conn.fetchrow(_FACETS)).items()}

    return await _facets.get(read)


async def fleet_page(conn, flt: FleetFilter, stale_after: timedelta) -> dict[str, Any]:
    """One page of the overview and the counts over the whole filtered fleet."""
    offset = (max(flt.page, 1) - 1) * PAGE_SIZE
    since = datetime.now(timezone.utc) - stale_after
    rows = []
    page_sql, args = flt.sql(_PAGE, "limit", "offset")
    for record in await conn.fetch(page_sql, *args, PAGE_SIZE, offset):
        r = dict(record)
        r["tags"] = store_codec.decoded(r["tags"]) or {}
        cloud = store_codec.decoded(r["cloud"]) or {}
        r["cloud_name"], r["region"] = cloud.get("provider"), cloud.get("region")
        r["stale"] = r["last_ok"] is None or r["last_ok"] < since
        r["quoted"] = quote(r["name"], safe="")  # for the path and the query string alike
        rows.append(SimpleNamespace(**r))  # attributes: Jinja's r.name on a dict goes through an AttributeError
    counts_sql, args = flt.sql(_COUNTS, "since")
    counts = dict(await conn.fetchrow(counts_sql, *args, since))
    return {"rows": rows, "counts": counts, "pages": max(1, -(-counts["instances"] // PAGE_SIZE))}
