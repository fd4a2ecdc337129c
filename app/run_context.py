"""What a collector run may know besides its rows: thresholds merged once, and the providers that
supply what a spec `needs` (partition policies, SQL availability, replication set, peer metrics).

A provider is a small function keyed by the need's name; the runner never special-cases a
collector.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.models import Instance
from app.partitions import policies_for
from app.settings import Settings
from app.topology import Topology
from collectors.spec import CollectorSpec


def merged_thresholds(settings: Settings, spec: CollectorSpec, inst: Instance) -> dict[str, Any]:
    """Spec defaults < config < config by tag < the instance's own override."""
    cfg = settings.collector(spec.name)
    merged = {**spec.thresholds, **cfg.thresholds}
    for selector, values in cfg.by_tag.items():
        key, _, value = selector.partition("=")
        if (inst.tags or {}).get(key) == value:
            merged.update(values)
    merged.update(((inst.overrides or {}).get(spec.name) or {}).get("thresholds", {}))
    return merged


@dataclass
class RunInputs:
    """What the providers read from: this sweep's topology and settings, the store, the instance."""

    settings: Settings
    topology: Topology
    store: asyncpg.Connection
    inst: Instance
    spec: CollectorSpec
    sql_available: bool
    thresholds: dict[str, Any]


Provider = Callable[[RunInputs], Awaitable[dict[str, Any]]]


async def _partition_policies(run: RunInputs) -> dict[str, Any]:
    if not run.thresholds.get("partition_policies"):
        run.thresholds["partition_policies"] = policies_for(run.settings, run.inst)
    return {}


async def _sql_available(run: RunInputs) -> dict[str, Any]:
    # Cloud collectors stand in for SQL (e.g. replica lag) only when the SQL session did not answer.
    return {"sql_available": run.sql_available}


async def _replication(run: RunInputs) -> dict[str, Any]:
    standbys = run.topology.standbys_of(run.inst.id)
    return {"linked_standbys": standbys, "expected_standbys": [s["name"] for s in standbys],
            "other_primaries": run.topology.other_primaries(run.inst.id)}


async def _schemas(run: RunInputs) -> dict[str, Any]:
    # An entry covers the schemas it names, or else every schema no other entry on its server names.
    named = [*([run.inst.dbname] if run.inst.dbname else []), *(getattr(run.inst, "schemas", None) or [])]
    if named:
        return {"schemas": {"include": sorted(set(named))}}
    return {"schemas": {"exclude": run.topology.dbnames_beside(run.inst.id)}}


PROVIDERS: dict[str, Provider] = {
    "partition_policies": _partition_policies,
    "sql_available": _sql_available,
    "replication": _replication,
    "schemas": _schemas,
}


async def extra_for(run: RunInputs) -> dict[str, Any]:
    """ctx.extra for one run: the spec's needs, then its peer metrics over the replication set."""
    extra: dict[str, Any] = {}
    for need in run.spec.needs:
        extra.update(await PROVIDERS[need](run))
    if run.spec.peer_metrics:
        peers = run.topology.replication_peers(run.inst.id)
        extra["cluster_peers"] = peers
        if peers:
            extra.update(await peer_metrics(run.store, run.spec, peers))
    return extra


_PEER_METRIC = """
select object, sum(value) as value, array_agg(peer) as peers from (
  select distinct on (s.instance_id, s.object) i.name as peer, s.object, s.value
  from samples s join instances i on i.id = s.instance_id
  where i.name = any($1::text[]) and s.metric = $2 and s.ts > now() - make_interval(secs => $3)
  order by s.instance_id, s.object, s.ts desc) latest
group by object
"""


async def peer_metrics(store: asyncpg.Connection, spec: CollectorSpec, peers: list[str]) -> dict[str, Any]:
    """Latest values of the spec's peer metrics, summed per object over the replication peers, and
    which peers had any sample in the window (`peer_<metric>_reporting`): a peer with none is
    unknown, not zero."""
    window_s = 3 * spec.interval_s
    out: dict[str, Any] = {}
    for metric in spec.peer_metrics:
        rows = await store.fetch(_PEER_METRIC, peers, metric, window_s)
        out[f"peer_{metric}"] = {r["object"]: r["value"] for r in rows}
        out[f"peer_{metric}_reporting"] = sorted({p for r in rows for p in r["peers"]})
    return out
