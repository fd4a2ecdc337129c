"""The store's tables (SQLAlchemy 2 typed declarations); Alembic migrations create them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Computed,
    DateTime,
    FetchedValue,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSONB, datetime: DateTime(timezone=True)}


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    engine: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int]
    dbname: Mapped[str] = mapped_column(String(200), default="")
    user: Mapped[str] = mapped_column(String(200), default="")
    # A reference (env:VAR, file:/path, aws-sm:NAME#key, aws-iam), never the secret itself.
    credential: Mapped[str | None] = mapped_column(String(500))
    tls_mode: Mapped[str] = mapped_column(String(16), default="prefer")
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'::jsonb"))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    # Per-collector overrides: {"health": {"enabled": false, "interval_s": 60, "thresholds": {...}}}
    overrides: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'::jsonb"))
    source: Mapped[str] = mapped_column(String(16), default="manual", server_default="manual")
    # Cloud identity and placement: arn, region, resource_id, cluster, role (writer/reader).
    cloud: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'::jsonb"))
    # Fields a DBA set by hand, which discovery must not overwrite.
    pinned: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'::jsonb"))
    gone_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    # The server this entry is on. The store's trigger (migration 0008) links every row that is
    # written without it, or whose endpoint moved off its server, so it is read back, not set.
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True,
                                           server_default=FetchedValue(), server_onupdate=FetchedValue())
    # MySQL/MariaDB: the schemas this entry covers (dbname is the first); [] = dbname alone, or,
    # with no dbname either, every schema no other entry on the server names.
    schemas: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))

    __table_args__ = (Index("ix_instances_tags", "tags", postgresql_using="gin"),)


class CollectorRun(Base):
    __tablename__ = "collector_runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    collector: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime]
    duration_ms: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))  # ok, error, timeout, skipped
    error: Mapped[str | None] = mapped_column(Text)
    findings: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_collector_runs_instance_started", "instance_id", "collector", "started_at"),
                      Index("ix_collector_runs_started", "started_at"))


class Finding(Base):
    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    collector: Mapped[str] = mapped_column(String(64))
    check: Mapped[str] = mapped_column(String(64))
    object: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(String(16))
    # Stored by the store (migration 0010) so the findings list sorts by it from an index.
    severity_rank: Mapped[int | None] = mapped_column(SmallInteger, Computed(
        "case severity when 'critical' then 3 when 'warning' then 2 when 'info' then 1 end", persisted=True))
    state: Mapped[str] = mapped_column(String(16), default="open")  # open acknowledged silenced resolved
    title: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recommendation: Mapped[str] = mapped_column(Text, default="")
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    opened_at: Mapped[datetime]  # when it last became open (new or reappeared after resolving)
    resolved_at: Mapped[datetime | None]
    state_by: Mapped[str | None] = mapped_column(String(200))
    state_at: Mapped[datetime | None]
    state_note: Mapped[str | None] = mapped_column(Text)
    state_until: Mapped[datetime | None]  # a silence's end; null: until it resolves or is re-opened
    state_severity: Mapped[str | None] = mapped_column(String(16))  # the severity an ack covers

    __table_args__ = (
        Index("ix_findings_live", "instance_id", "collector", postgresql_where=text("state <> 'resolved'")),
        Index("ix_findings_state_severity", "state", "severity"),
        Index("ix_findings_check", "check"),
    )


class QueryText(Base):
    __tablename__ = "query_texts"

    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True)
    query_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(server_default=func.now())


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # viewer, operator, admin
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(server_default=func.now())
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    outcome: Mapped[str] = mapped_column(String(16), default="ok")

    __table_args__ = (Index("ix_audit_log_at", "at"),)


class Outbox(Base):
    """Alert state changes, written in the same transaction as the finding that caused them."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    finding_id: Mapped[int | None] = mapped_column(BigInteger)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # firing, resolved
    severity: Mapped[str] = mapped_column(String(16))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    annotations: Mapped[dict[str, Any]] = mapped_column(default=dict)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    processed_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_outbox_pending", "id", postgresql_where=text("processed_at is null")),)


# Time series: range-partitioned by day, partitions created ahead and dropped after retention by
# the service (app/store_partitions.py). No primary key: rows are appended with COPY.
samples = Table(
    "samples", Base.metadata,
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("instance_id", Integer, nullable=False),
    Column("collector", String(64), nullable=False),
    Column("metric", String(128), nullable=False),
    Column("object", Text, nullable=False, server_default=""),
    Column("value", Float, nullable=False),
    Index("ix_samples_instance_metric_ts", "instance_id", "metric", "ts"),
    postgresql_partition_by="RANGE (ts)",
)

query_stats = Table(
    "query_stats", Base.metadata,
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("instance_id", Integer, nullable=False),
    Column("query_id", String(128), nullable=False),
    Column("username", String(200), nullable=False, server_default=""),
    Column("dbname", String(200), nullable=False, server_default=""),
    Column("interval_s", Float, nullable=False),
    Column("calls", BigInteger, nullable=False),
    Column("total_ms", Float, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("shared_blks_hit", BigInteger, nullable=False, server_default="0"),
    Column("shared_blks_read", BigInteger, nullable=False, server_default="0"),
    Column("temp_blks_written", BigInteger, nullable=False, server_default="0"),
    Index("ix_query_stats_instance_ts", "instance_id", "ts"),
    postgresql_partition_by="RANGE (ts)",
)

PARTITIONED_TABLES = ("samples", "query_stats")


# --- Alerting (app/alerting: alert state, groups, notification log and queue, silences) ---------


class Alert(Base):
    """The latest state of each alert, applied from the outbox in id order."""

    __tablename__ = "alerts"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # firing, resolved
    severity: Mapped[str] = mapped_column(String(16))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    annotations: Mapped[dict[str, Any]] = mapped_column(default=dict)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime | None]
    outbox_id: Mapped[int] = mapped_column(BigInteger)  # the newest outbox row applied
    changed_at: Mapped[datetime]  # when the outbox row was written (latency is measured from it)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())

    # Inhibition and silence reminders look firing alerts up by label containment (labels @> ...).
    __table_args__ = (Index("ix_alerts_firing", "status", postgresql_where=text("status = 'firing'")),
                      Index("ix_alerts_firing_labels", "labels", postgresql_using="gin",
                            postgresql_ops={"labels": "jsonb_path_ops"}, postgresql_where=text("status = 'firing'")))


class AlertGroup(Base):
    """One group per (route, group_by label values); flushed when next_flush_at passes."""

    __tablename__ = "alert_groups"

    group_key: Mapped[str] = mapped_column(Text, primary_key=True)
    route_id: Mapped[str] = mapped_column(String(200))
    receiver: Mapped[str] = mapped_column(String(100))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    next_flush_at: Mapped[datetime]
    last_flush_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_alert_groups_next_flush_at", "next_flush_at"),)


class AlertGroupMember(Base):
    __tablename__ = "alert_group_members"

    group_key: Mapped[str] = mapped_column(ForeignKey("alert_groups.group_key", ondelete="CASCADE"),
                                           primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)

    __table_args__ = (Index("ix_alert_group_members_fingerprint", "fingerprint"),)


class NotificationLog(Base):
    """What each receiver was last told about each group (Alertmanager's nflog), for dedup."""

    __tablename__ = "notification_log"

    group_key: Mapped[str] = mapped_column(Text, primary_key=True)
    receiver: Mapped[str] = mapped_column(String(100), primary_key=True)
    firing: Mapped[list[str]] = mapped_column(JSONB, default=list)
    resolved: Mapped[list[str]] = mapped_column(JSONB, default=list)
    muted: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))
    sent_at: Mapped[datetime]


class AlertNotification(Base):
    """The durable send queue: a row per notification, sent in id order per (receiver, group)."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    receiver: Mapped[str] = mapped_column(String(100))
    group_key: Mapped[str] = mapped_column(Text)
    dedup_key: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # alert, reminder, test
    status: Mapped[str] = mapped_column(String(16))  # firing, resolved
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime]
    # Held by a dispatcher while it sends; a crashed dispatcher's lease runs out and another sends.
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    oldest_change_at: Mapped[datetime | None]  # the earliest outbox row behind it
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    sent_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_notifications_due", "next_attempt_at", postgresql_where=text("state = 'pending'")),
        Index("ix_notifications_order", "receiver", "group_key", "id", postgresql_where=text("state = 'pending'")),
        Index("ix_notifications_created", "created_at"),
    )


class Silence(Base):
    __tablename__ = "silences"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, server_default=text("gen_random_uuid()::text"))
    matchers: Mapped[list[str]] = mapped_column(JSONB)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    reminded_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_silences_ends_at", "ends_at"),)


class ReceiverStatus(Base):
    __tablename__ = "receiver_status"

    receiver: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_success_at: Mapped[datetime | None]
    last_error_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_total: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    failed_total: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class RuleAlert(Base):
    """Threshold rule state per series, so the outbox only gets transitions."""

    __tablename__ = "rule_alerts"

    rule: Mapped[str] = mapped_column(String(64), primary_key=True)
    instance_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    object: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # firing, resolved
    since: Mapped[datetime]
    changed_at: Mapped[datetime]


class CollectorState(Base):
    """A collector's state on one instance as of `seq`: the base as of `base_seq`, plus patches."""

    __tablename__ = "collector_state"

    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True)
    collector: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    base_seq: Mapped[int] = mapped_column(BigInteger)
    base: Mapped[dict[str, Any] | None]
    patch_bytes: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[datetime]


# --- Sweeps asked for through the API (app/api/runs.py writes them, app/sweep_requests.py runs them)


class SweepRequest(Base):
    """A sweep someone asked for; its status is derived from its items."""

    __tablename__ = "sweep_requests"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    requested_by: Mapped[str] = mapped_column(String(200))  # the API key's name
    requested_at: Mapped[datetime] = mapped_column(server_default=func.now())
    collectors: Mapped[list[str] | None] = mapped_column(JSONB)  # null: every collector
    selector: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"instances": [...], "tags": ["k=v"]}

    __table_args__ = (Index("ix_sweep_requests_requested_at", "requested_at"),)


class SweepRequestItem(Base):
    """One instance of a request, claimed and run by the worker whose shard owns the instance.

    No shard number is stored: ownership is worked out when a worker claims, so a re-shard
    moves queued items to their new owner.
    """

    __tablename__ = "sweep_request_items"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("sweep_requests.id", ondelete="CASCADE"))
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="queued", server_default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # claims so far
    not_before: Mapped[datetime | None]  # a retry waits until then (its collectors were busy)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None]
    # Renewed while the claimer runs it; past it, the claimer is taken for dead and the item re-queued.
    lease_until: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    ok: Mapped[int | None] = mapped_column(Integer)  # collector runs, once finished
    failed: Mapped[int | None] = mapped_column(Integer)
    skipped: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_sweep_request_items_request_instance", "request_id", "instance_id", unique=True),
        Index("ix_sweep_request_items_queued", "instance_id", postgresql_where=text("status = 'queued'")),
        Index("ix_sweep_request_items_leases", "lease_until", postgresql_where=text("status = 'running'")),
    )


class WebSession(Base):
    """A console sign-in: the cookie carries a random token, the store keeps only its hash."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int]  # api_keys.id; no foreign key: lookups join the key, so a deleted one signs nobody in
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]

    __table_args__ = (Index("ix_web_sessions_expires_at", "expires_at"),)


# --- Servers: what the database entries (instances) are on (migration 0008) ---------------------


class Server(Base):
    """One server, reached by host and port or known by its cloud id; its databases are the
    instance rows that point at it."""

    __tablename__ = "servers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    engine: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int]
    # Cloud identity (arn, resource_id, region, role...), as discovery last reported it.
    cloud: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'::jsonb"))
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'::jsonb"))
    # Discovery patterns {"include": ["*"], "exclude": [...]}; null: only the listed databases.
    databases: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    user: Mapped[str] = mapped_column(String(200), default="", server_default="")
    credential: Mapped[str | None] = mapped_column(String(500))  # a reference, never the secret
    tls_mode: Mapped[str] = mapped_column(String(16), default="prefer", server_default="prefer")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


# --- Data quality checks (issue 17, migration 0009; app/quality, collectors/quality) -------------


class QualityCheck(Base):
    """A declared check; `definition` is the whole validated model (collectors/quality/checks.py)."""

    __tablename__ = "quality_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # freshness volume completeness assertion schema
    origin: Mapped[str] = mapped_column(String(16), default="api", server_default="api")  # config dbt api
    definition: Mapped[dict[str, Any]]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_by: Mapped[str] = mapped_column(String(200), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class QualityCheckResult(Base):
    """The latest result of one check on one table of one instance (history is in samples)."""

    __tablename__ = "quality_check_results"

    check_id: Mapped[int] = mapped_column(ForeignKey("quality_checks.id", ondelete="CASCADE"), primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True,
                                             index=True)
    object: Mapped[str] = mapped_column(Text, primary_key=True)  # schema.table
    ran_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))  # pass warn error (error: the check failed)
    value: Mapped[float | None] = mapped_column(Float)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'::jsonb"))
