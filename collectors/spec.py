"""The collector contract: a spec is data (version-keyed SQL) plus a pure transform."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Protocol

from collectors.common.versions import closest_lower_or_raise


class Severity(StrEnum):
    info = "info"
    warning = "warning"
    critical = "critical"


class NodeRole(StrEnum):
    primary = "primary"
    standby = "standby"
    any = "any"


class Scope(StrEnum):
    server = "server"
    database = "database"


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a DBA should know about one object on one instance."""

    check: str
    object: str
    severity: Severity
    title: str
    details: Mapping[str, Any] = field(default_factory=dict)
    recommendation: str = ""


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of a time series, e.g. replication_lag_seconds for one standby."""

    metric: str
    value: float
    object: str = ""


@dataclass(frozen=True, slots=True)
class QueryStat:
    """Per-interval delta of one normalized statement's counters (all engines share it)."""

    query_id: str
    user: str
    database: str
    calls: int
    total_ms: float
    rows: int
    shared_blks_hit: int = 0
    shared_blks_read: int = 0
    temp_blks_written: int = 0
    interval_s: float = 0.0
    text: str | None = None


@dataclass(slots=True)
class Result:
    """What one collector run concluded about one instance."""

    findings: list[Finding] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    query_stats: list[QueryStat] = field(default_factory=list)
    # Carried to the next run of the same collector on the same instance (counter baselines).
    state: Any = None


@dataclass(slots=True)
class Context:
    """What a transform may know besides the rows: who, which version, which thresholds."""

    instance: str
    engine: str
    server_version: int = 0
    # Already merged by the runner (app/run_context.merged_thresholds: spec defaults < config <
    # overrides): a transform reads it as it is and never re-merges its own THRESHOLDS.
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    is_standby: bool = False
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    # The state the previous successful run returned, None on the first run. Read it, never modify
    # it: the store's copy is diffed against it.
    previous: Any = None
    # What the spec's `needs` and `peer_metrics` asked the runner for: the same database on the other
    # members of the replication set ("cluster_peers"), peer metrics, linked standbys...
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a server says it is, read on every run: the ground for roles and replication sets."""

    role: NodeRole                # primary, or standby (a PostgreSQL standby, a MySQL replica, an Aurora reader)
    # PostgreSQL: the system_identifier a primary and its physical standbys share; MySQL: server_uuid
    # (MariaDB has none: its server_id with host and port).
    server_id: str = ""
    database: str = ""
    upstream_host: str = ""       # where a standby streams from (WAL receiver sender, replica source)
    upstream_port: int = 0
    upstream_streaming: bool = False
    # The application_name a PostgreSQL standby's walsender shows in its primary's pg_stat_replication.
    stream_name: str = ""
    read_only: bool = False


class Connection(Protocol):
    """What every engine adapter offers a collector: read-only fetches of dict rows."""

    engine: str
    server_version: int
    is_standby: bool

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


Transform = Callable[[Sequence[Mapping[str, Any]], Context], Result]
RunHook = Callable[[Connection, Context], Awaitable[Result]]


def _no_transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    return Result()


@dataclass(frozen=True)
class CollectorSpec:
    """One collector: SQL keyed by the lowest server version it works on, and a pure transform.

    Versions are integers in the engine's own numbering (PostgreSQL's server_version_num,
    MySQL's 80022, ...). Multi-step work uses ``run`` instead of ``sql``/``transform``.
    """

    name: str
    engine: str
    description: str
    sql: Mapping[int, str] = field(default_factory=dict)
    transform: Transform = _no_transform
    run: RunHook | None = None
    interval_s: int = 300
    timeout_s: float = 30.0
    role: NodeRole = NodeRole.any
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    # Metrics this collector reads from its replication peers (the same database on the other servers
    # of its detected replication set): the runner puts each metric's latest values, summed over
    # peers per object, into ctx.extra[f"peer_{metric}"] — e.g. an index is unused only if no
    # replica scans it either.
    peer_metrics: tuple[str, ...] = ()
    # What else the runner must supply (one provider each in app/run_context.py):
    #   "partition_policies"  thresholds["partition_policies"]: the configured policies for this instance
    #   "sql_available"       extra["sql_available"]: whether the instance's SQL session answered this sweep
    #   "replication"         extra["linked_standbys"], ["expected_standbys"], ["other_primaries"]: the
    #                         detected replication set around this server
    #   "schemas"             extra["schemas"]: {"include": [...]} the schemas this entry names, or
    #                         {"exclude": [...]} those other entries on its server name (MySQL)
    needs: tuple[str, ...] = ()
    # "server": about the server as a whole (connections, wraparound, replication, slots, settings), run
    # once per server on its home entry; "database": about the database (PostgreSQL) or schemas
    # (MySQL) an inventory entry names, run on every entry.
    scope: Scope = Scope.database

    def sql_for(self, version: int) -> str:
        """The SQL under the closest lower version key; ValueError if the server is too old."""
        return closest_lower_or_raise(self.sql, version, f"{self.name} needs {self.engine}")

    def applies_to(self, is_standby: bool) -> bool:
        if self.role is NodeRole.any:
            return True
        return (self.role is NodeRole.standby) == is_standby
