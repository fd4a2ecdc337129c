"""Replication topology as detected, not declared.

Every run reads the server's identity (collectors/engines: PostgreSQL system_identifier, recovery
state and WAL receiver sender; MySQL server_uuid, read_only and replica source). The store keeps
the latest identity per instance (`instance_topology`); a sweep loads the whole fleet's once and
builds replication sets from it:

- a standby is linked to the inventory instance its upstream (sender host and port) names, on
  the same server identity; failing that, to the one primary sharing its PostgreSQL
  system_identifier (a standby that streams through a DNS name the inventory does not use);
- a replication set is everything linked to one root primary server;
- peers for "unused on every replica" are the same database on the set's other servers, never
  another database on the same server.

Tags add only what cannot be read: `expected_standbys=N` on a primary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import asyncpg

from app import store_codec
from collectors.spec import Identity, NodeRole

# A standby's self-report counts as current for this long; an identity is re-written at least
# this often so that its age tells a stopped collector from a quiet one.
FRESH_S = 300.0
REWRITE_S = 60.0
_LOOPBACK = {"localhost": "127.0.0.1", "::1": "127.0.0.1", "ip6-localhost": "127.0.0.1"}


def server_key(host: str, port: int) -> tuple[str, int]:
    host = (host or "").strip().lower().rstrip(".")
    return _LOOPBACK.get(host, host), int(port or 0)


@dataclass(slots=True)
class Member:
    """One inventory instance with the identity it last reported."""

    id: int
    name: str
    host: str
    port: int
    tags: dict[str, Any]
    dbname: str = ""  # as the inventory names it (the detected one is `database`)
    cloud: dict[str, Any] = field(default_factory=dict)
    engine: str = ""
    role: str = ""
    server_id: str = ""
    database: str = ""
    upstream_host: str = ""
    upstream_port: int = 0
    upstream_streaming: bool = False
    stream_name: str = ""
    reachable: bool = True
    checked_at: datetime | None = None

    server: tuple[str, int] = field(init=False)

    def __post_init__(self) -> None:
        # A cloud instance is its cloud identity (an endpoint name may be shared or reused).
        if cloud_id := self.cloud.get("arn") or self.cloud.get("resource_id"):
            self.server = (str(cloud_id).lower(), 0)
        else:
            self.server = server_key(self.host, self.port)

    def fresh(self, now: datetime) -> bool:
        return self.checked_at is not None and (now - self.checked_at).total_seconds() <= FRESH_S


_LOAD = """
select i.id, i.name, i.host, i.port, i.tags, i.dbname, i.cloud, i.engine, t.role, t.server_id, t.database, t.upstream_host, t.upstream_port,
       t.upstream_streaming, t.stream_name, t.reachable, t.checked_at
from instances i left join instance_topology t on t.instance_id = i.id
where i.enabled and i.gone_at is null
"""


class Topology:
    """The fleet's detected topology as of the start of a sweep (every shard: peers live anywhere).

    Indexed once when built: every question a run asks is a lookup, not a scan of the fleet.
    """

    def __init__(self, members: dict[int, Member] | None = None):
        self.members = members or {}
        self._by_server: dict[tuple[str, int], list[Member]] = {}
        self._by_server_id: dict[str, list[Member]] = {}
        for m in sorted(self.members.values(), key=lambda m: m.id):
            self._by_server.setdefault(m.server, []).append(m)
            if m.server_id:
                self._by_server_id.setdefault(m.server_id, []).append(m)
        self._upstream = {m.id: self._find_upstream(m) for m in self.members.values() if m.role == NodeRole.standby}
        self._roots = {m.id: self._find_root(m) for m in self.members.values()}
        self._standbys_by_upstream: dict[tuple[str, int], list[Member]] = {}
        for sid, up in self._upstream.items():
            if up is not None:
                self._standbys_by_upstream.setdefault(up.server, []).append(self.members[sid])

    @classmethod
    async def load(cls, conn: asyncpg.Connection) -> "Topology":
        members = {}
        for r in await conn.fetch(_LOAD):
            tags = store_codec.decoded(r["tags"]) or {}
            cloud = store_codec.decoded(r["cloud"]) or {}
            m = Member(r["id"], r["name"], r["host"], r["port"], tags, r["dbname"] or "", cloud, r["engine"])
            if r["role"] is not None:
                for key in ("role", "server_id", "database", "upstream_host", "upstream_port", "upstream_streaming",
                            "stream_name", "reachable", "checked_at"):
                    setattr(m, key, r[key])
            members[m.id] = m
        return cls(members)

    def is_home(self, instance_id: int) -> bool:
        """Whether server-level checks for this entry's server run here: on the entry with the
        lowest id among the server's enabled entries, so a problem of the server has one home."""
        me = self.members.get(instance_id)
        if me is None:  # registered after this sweep's topology was read: it runs everything
            return True
        return self._by_server[me.server][0].id == instance_id

    def dbnames_beside(self, instance_id: int) -> list[str]:
        """The databases (MySQL: schemas) the other entries on this entry's server name."""
        me = self.members.get(instance_id)
        if me is None:
            return []
        return sorted({m.dbname for m in self._by_server[me.server] if m.id != instance_id and m.dbname})

    def upstream_of(self, m: Member) -> Member | None:
        """The primary-side instance a standby streams from (same database preferred)."""
        return self._upstream.get(m.id)

    def _find_upstream(self, m: Member) -> Member | None:
        # A PostgreSQL standby shares its primary's system_identifier; a MySQL replica has its own uuid.
        same_cluster = m.engine.endswith("postgres")
        candidates = [u for u in self._by_server.get(server_key(m.upstream_host, m.upstream_port), [])
                      if u.id != m.id and (not same_cluster or not m.server_id or not u.server_id
                                           or u.server_id == m.server_id)]
        if not candidates and m.server_id and same_cluster:
            primaries = {u.server for u in self._by_server_id.get(m.server_id, [])
                         if u.role == NodeRole.primary and u.server != m.server}
            if len(primaries) == 1:
                candidates = self._by_server[primaries.pop()]
        return min(candidates, key=lambda u: (u.database != m.database, u.id), default=None)

    def root_of(self, m: Member) -> Member:
        return self._roots.get(m.id, m)

    def _find_root(self, m: Member) -> Member:
        seen = {m.server}
        while (up := self._upstream.get(m.id)) is not None and up.server not in seen:
            seen.add(up.server)
            m = up
        return m

    def replication_peers(self, instance_id: int) -> list[str]:
        """The same database on the other servers of the instance's replication set."""
        me = self.members.get(instance_id)
        if me is None or not me.role:
            return []
        root = self.root_of(me).server
        return sorted(m.name for m in self._set_members(root)
                      if m.server != me.server and m.role and m.database == me.database)

    def _set_members(self, root: tuple[str, int]) -> list[Member]:
        """Everything linked (through standbys of standbys) to the root server."""
        out, todo, seen = [], [root], {root}
        while todo:
            server = todo.pop()
            out += self._by_server.get(server, [])
            for sb in self._standbys_by_upstream.get(server, []):
                if sb.server not in seen:
                    seen.add(sb.server)
                    todo.append(sb.server)
        return out

    def standbys_of(self, instance_id: int, now: datetime | None = None) -> list[dict[str, Any]]:
        """Standby servers streaming (or meant to stream) from the instance's server, one entry each."""
        me = self.members.get(instance_id)
        if me is None:
            return []
        now = now or datetime.now(timezone.utc)
        out: dict[tuple[str, int], dict[str, Any]] = {}
        linked = self._standbys_by_upstream.get(me.server, [])
        for m in sorted(linked, key=lambda m: (m.database != me.database, m.id)):
            if m.server not in out:
                out[m.server] = {"name": m.name, "stream_name": m.stream_name, "reachable": m.reachable,
                                 "streaming": m.reachable and m.upstream_streaming and m.fresh(now)}
        return list(out.values())

    def other_primaries(self, instance_id: int, now: datetime | None = None) -> list[str]:
        """Reachable primaries on other servers sharing this one's system identifier: after a
        failover whose old primary came back as a primary, both accept writes."""
        me = self.members.get(instance_id)
        if me is None or me.role != NodeRole.primary or not me.server_id:
            return []
        now = now or datetime.now(timezone.utc)
        servers = {m.server: m.name for m in self._by_server_id.get(me.server_id, [])
                   if m.server != me.server and m.role == NodeRole.primary and m.reachable and m.fresh(now)}
        return sorted(servers.values())


_UPSERT = """
insert into instance_topology (instance_id, role, server_id, database, upstream_host, upstream_port,
                               upstream_streaming, stream_name, read_only, reachable, checked_at)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9, true, now())
on conflict (instance_id) do update set role = excluded.role, server_id = excluded.server_id,
    database = excluded.database, upstream_host = excluded.upstream_host, upstream_port = excluded.upstream_port,
    upstream_streaming = excluded.upstream_streaming, stream_name = excluded.stream_name,
    read_only = excluded.read_only, reachable = true, checked_at = excluded.checked_at
"""


class Identities:
    """This process's last reading of each instance's identity, and when it was stored."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._read: dict[int, tuple[float, Identity]] = {}
        self._stored: dict[int, tuple[float, Identity | None]] = {}

    def due(self, instance_id: int) -> bool:
        read = self._read.get(instance_id)
        return read is None or time.monotonic() - read[0] >= self.ttl_s

    async def refresh(self, store: asyncpg.Connection, instance_id: int, conn: Any,
                      answer_timeout_s: float | None = None) -> Identity | None:
        """Read the identity on the monitored session if due; store it when it changed or aged.

        The read is bounded by `answer_timeout_s` (TimeoutError): a held session whose server has
        stopped answering (a hung host, a stopped postmaster and backends) must not hang the sweep.
        """
        identify = getattr(conn, "identify", None)
        if identify is None or not self.due(instance_id):
            read = self._read.get(instance_id)
            return read[1] if read else None
        async with asyncio.timeout(answer_timeout_s):
            identity = await identify()
        now = time.monotonic()
        self._read[instance_id] = (now, identity)
        stored_at, stored = self._stored.get(instance_id, (0.0, None))
        if stored != identity or now - stored_at >= REWRITE_S:
            await store.execute(_UPSERT, instance_id, str(identity.role), identity.server_id, identity.database,
                                identity.upstream_host, identity.upstream_port, identity.upstream_streaming,
                                identity.stream_name, identity.read_only)
            self._stored[instance_id] = (now, identity)
        return identity

    async def unreachable(self, store: asyncpg.Connection, instance_id: int) -> None:
        """The instance did not answer: its standby self-report no longer counts."""
        self._read.pop(instance_id, None)
        self._stored.pop(instance_id, None)
        await store.execute("update instance_topology set reachable = false where instance_id = $1 and reachable",
                            instance_id)


def members_json(topology: Topology, ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """The API's view: each instance's detected role, set and upstream."""
    out = []
    for m in sorted(topology.members.values(), key=lambda m: m.name):
        if ids is not None and m.id not in ids:
            continue
        up = topology.upstream_of(m)
        out.append({"instance": m.name, "role": m.role or None, "server_id": m.server_id or None,
                    "database": m.database or None, "replication_set": topology.root_of(m).name if m.role else None,
                    "upstream": up.name if up else None,
                    "upstream_address": f"{m.upstream_host}:{m.upstream_port}" if m.upstream_host else None,
                    "streaming": m.upstream_streaming if m.role == NodeRole.standby else None,
                    "reachable": m.reachable,
                    "checked_at": m.checked_at.isoformat() if m.checked_at else None})
    return out
