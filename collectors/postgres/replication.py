"""Streaming replication: per-standby lag on the primary, replay lag on a standby, replication slots.

Aurora PostgreSQL is told apart by its functions, not by the inventory's engine name: its readers
are in recovery but have no WAL receiver, so they take the Aurora path (aurora_replica_status()).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from collectors.common.versions import closest_lower_or_raise
from collectors.registry import register
from collectors.spec import (
    CollectorSpec,
    Connection,
    Context,
    Finding,
    Result,
    Sample,
    Scope,
    Severity,
)

# write_lag/flush_lag/replay_lag are NULL once a standby has caught up on an idle primary, so
# NULL means "nothing outstanding", which is 0, not unknown.
PRIMARY_SQL = """
select application_name, coalesce(client_addr::text, '') as client_addr,
       coalesce(client_hostname, '') as client_hostname, state, sync_state,
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn), 0)::bigint as sent_lag_bytes,
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), write_lsn), 0)::bigint as write_lag_bytes,
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn), 0)::bigint as flush_lag_bytes,
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint as replay_lag_bytes,
       coalesce(extract(epoch from write_lag), 0)::float8 as write_lag_s,
       coalesce(extract(epoch from flush_lag), 0)::float8 as flush_lag_s,
       coalesce(extract(epoch from replay_lag), 0)::float8 as replay_lag_s
from pg_stat_replication
order by application_name
"""

# On a standby the "current" position is what was replayed; pg_current_wal_lsn() would error.
_SLOT_SELECT = """
select slot_name, slot_type, coalesce(database, '') as database, active, {wal_status} as wal_status,
       coalesce(pg_wal_lsn_diff(case when pg_is_in_recovery() then pg_last_wal_replay_lsn()
                                     else pg_current_wal_lsn() end, restart_lsn), 0)::bigint as retained_bytes,
       age(xmin)::bigint as xmin_age, age(catalog_xmin)::bigint as catalog_xmin_age
from pg_replication_slots
where not temporary
order by slot_name
"""
SLOTS_SQL = {100000: _SLOT_SELECT.format(wal_status="''"), 130000: _SLOT_SELECT.format(wal_status="wal_status")}

# An idle primary sends nothing: receive = replay means caught up, whatever the replay timestamp says.
STANDBY_SQL = """
select coalesce(pg_last_wal_receive_lsn()::text, '') as receive_lsn,
       coalesce(pg_last_wal_replay_lsn()::text, '') as replay_lsn,
       coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint as replay_lag_bytes,
       case when pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() then 0
            else coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp()), 0) end::float8 as replay_lag_s,
       -- NULL until the first commit is replayed after a restart: lag in seconds is then unknown.
       pg_last_xact_replay_timestamp() is not null as replay_timestamp_known,
       pg_is_wal_replay_paused() as replay_paused
"""
# pg_stat_wal_receiver.received_lsn became written_lsn + flushed_lsn in 13.
_RECEIVER_SELECT = """
select status, coalesce(sender_host, '') as sender_host, sender_port, coalesce(slot_name, '') as slot_name,
       coalesce({flushed}::text, '') as flushed_lsn,
       coalesce(extract(epoch from now() - last_msg_receipt_time), 0)::float8 as last_msg_age_s
from pg_stat_wal_receiver
"""
RECEIVER_SQL = {100000: _RECEIVER_SELECT.format(flushed="received_lsn"),
                130000: _RECEIVER_SELECT.format(flushed="flushed_lsn")}

# Aurora readers replay from the shared cluster volume instead of a WAL stream. aurora_replica_status()
# answers on the writer and on every reader with one row per instance of the cluster; the writer's
# session_id is 'MASTER_SESSION_ID' and its replica_lag_in_msec is NULL. That column is what
# CloudWatch reports as AuroraReplicaLag.
# https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/aurora_replica_status.html
# to_regproc gives NULL rather than an error for a function that does not exist.
AURORA_PROBE_SQL = """
select to_regproc('aurora_version') is not null as aurora_version,
       to_regproc('aurora_replica_status') is not null as replica_status,
       to_regproc('aurora_db_instance_identifier') is not null as instance_identifier
"""
# aurora_db_instance_identifier() (Aurora 13.7, 12.11, 11.16, 10.21 and later) names the instance this
# session is on: without it a reader cannot tell which row is its own.
_AURORA_STATUS_SELECT = """
select s.*, {is_self} as is_self,
       extract(epoch from clock_timestamp() - s.last_update_timestamp)::float8 as last_update_age_s
from aurora_replica_status() s
order by s.server_id
"""
AURORA_STATUS_SQL = {True: _AURORA_STATUS_SELECT.format(is_self="s.server_id = aurora_db_instance_identifier()"),
                     False: _AURORA_STATUS_SELECT.format(is_self="null::boolean")}
AURORA_WRITER_SESSION = "MASTER_SESSION_ID"

THRESHOLDS: dict[str, Any] = {
    # A standby half a minute behind already serves stale reads; five minutes threatens failover RPO.
    "replication_lag_warning_s": 30,
    "replication_lag_critical_s": 300,
    # One GiB of WAL pinned by a slot is where disk-full outages start on small volumes.
    "slot_retained_wal_bytes": 1 << 30,
}


def _lag_severity(lag_s: float, t: Mapping[str, Any]) -> Severity | None:
    if lag_s < t["replication_lag_warning_s"]:
        return None
    return Severity.critical if lag_s >= t["replication_lag_critical_s"] else Severity.warning


def _lag_finding(name: str, lag_s: float, lag_bytes: int, t: Mapping[str, Any], details: dict) -> Finding | None:
    if (severity := _lag_severity(lag_s, t)) is None:
        return None
    return Finding(
        check="replication_lag", object=name, severity=severity,
        title=f"Standby {name} is {lag_s:.0f} s ({lag_bytes:,} bytes of WAL) behind",
        details={"lag_seconds": round(lag_s, 3), "lag_bytes": lag_bytes, **details},
        recommendation="Check the standby's I/O and CPU (replay is single-threaded), long queries there "
                       "conflicting with replay (max_standby_streaming_delay), recovery_min_apply_delay, "
                       "a paused replay (pg_is_wal_replay_paused()) and the network between the two.",
    )


def primary_transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    """pg_stat_replication rows -> per-standby samples, replication_lag and standby_disconnected."""
    result = walsender_transform(rows, ctx)
    missing = _disconnected(rows, ctx.extra.get("linked_standbys") or [],
                            int(ctx.tags.get("expected_standbys") or 0))
    # A linked standby is reported once it is missing on two runs in a row: one that was promoted a
    # moment ago still stands as this primary's standby in the topology this sweep started from.
    before = set((ctx.previous or {}).get("missing", [])) if isinstance(ctx.previous, Mapping) else set()
    result.findings += [f for f in missing if f.object in before or f.object == EXPECTED]
    result.state = {"missing": sorted(f.object for f in missing)}
    result.findings += _other_primaries(ctx.extra.get("other_primaries") or [])
    return result


def walsender_transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    """pg_stat_replication rows -> per-standby (or logical consumer) samples and replication_lag."""
    t, result = ctx.thresholds, Result()
    for r in rows:
        name = r["application_name"] or r["client_addr"]
        lag_s = max(r["write_lag_s"], r["flush_lag_s"], r["replay_lag_s"])
        result.samples += [Sample("replication_lag_seconds", float(lag_s), name),
                           Sample("replication_lag_bytes", float(r["replay_lag_bytes"]), name)]
        details = {k: r[k] for k in ("state", "sync_state", "client_addr", "sent_lag_bytes", "write_lag_bytes",
                                     "flush_lag_bytes", "write_lag_s", "flush_lag_s", "replay_lag_s")}
        details["sql"] = "select application_name, state, write_lag, flush_lag, replay_lag from pg_stat_replication"
        if (f := _lag_finding(name, lag_s, r["replay_lag_bytes"], t, details)) is not None:
            result.findings.append(f)
    return result


EXPECTED = "expected standbys"


def _disconnected(rows: Sequence[Mapping[str, Any]], standbys: Sequence[Mapping[str, Any]],
                  expected_count: int) -> list[Finding]:
    """Standbys linked to this primary (detected: app/topology.py) whose walsender is missing here.

    A standby is matched by the application_name its own WAL receiver connects with, never by its
    inventory name. Several standbys may share one (the default `walreceiver`): the ones that say
    they are streaming take the walsenders first, so the finding lands on the one that is not.
    """
    senders = Counter(r["application_name"] for r in rows if r["state"] in ("streaming", "catchup"))
    out = []
    for sb in sorted(standbys, key=lambda s: not s["streaming"]):
        if senders[sb["stream_name"]] > 0:
            senders[sb["stream_name"]] -= 1
            continue
        state = "unreachable" if not sb["reachable"] else "streaming" if sb["streaming"] else "not streaming"
        out.append(_standby_disconnected(sb["name"], f"Standby {sb['name']} is not streaming from this primary",
                                         rows, {"standby_reports": state, "stream_name": sb["stream_name"]}))
    connected = sum(1 for r in rows if r["state"] in ("streaming", "catchup"))
    if expected_count and connected < expected_count:
        out.append(_standby_disconnected(
            EXPECTED, f"{connected} of {expected_count} expected standbys are streaming from this primary",
            rows, {"expected": expected_count, "streaming": connected}))
    return out


def _other_primaries(names: Sequence[str]) -> list[Finding]:
    """Other servers with this primary's system identifier that are primaries too (split brain)."""
    return [Finding(
        check="multiple_primaries", object=name, severity=Severity.critical,
        title=f"{name} is also a primary of this replication set: both accept writes",
        details={"sql": "select system_identifier from pg_control_system(); select pg_is_in_recovery()"},
        recommendation="After a failover the old primary must not come back as a primary. Fence it (stop it, "
                       "or point clients away), then rebuild it as a standby with pg_rewind or a new base backup.",
    ) for name in names]


def _standby_disconnected(obj: str, title: str, rows: Sequence[Mapping[str, Any]], details: dict) -> Finding:
    return Finding(
        check="standby_disconnected", object=obj, severity=Severity.critical, title=title,
        details={**details, "connected": sorted({r["application_name"] for r in rows}),
                 "sql": "select application_name, client_addr, state from pg_stat_replication"},
        recommendation="Look at the standby's log and pg_stat_wal_receiver. If it fell behind the WAL "
                       "the primary keeps, it needs a replication slot or a new base backup.",
    )


def slots_transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    """pg_replication_slots rows -> replication_slot_inactive / replication_slot_retaining_wal."""
    t, result = ctx.thresholds, Result()
    for r in rows:
        result.samples.append(Sample("replication_slot_retained_bytes", float(r["retained_bytes"]), r["slot_name"]))
        details = {k: r[k] for k in ("slot_type", "database", "active", "wal_status", "retained_bytes",
                                     "xmin_age", "catalog_xmin_age")}
        details["sql"] = ("select slot_name, active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), "
                          "age(xmin) from pg_replication_slots")
        drop = f"SELECT pg_drop_replication_slot('{r['slot_name']}');"
        if not r["active"]:
            result.findings.append(Finding(
                check="replication_slot_inactive", object=r["slot_name"], severity=Severity.warning,
                title=f"Replication slot {r['slot_name']} has no consumer ({r['retained_bytes']:,} bytes of WAL kept)",
                details=details,
                recommendation=f"If its consumer is gone for good: {drop} An inactive slot keeps WAL (and, "
                               "with xmin set, dead rows) forever; dropping it breaks that consumer.",
            ))
        if r["retained_bytes"] >= t["slot_retained_wal_bytes"]:
            result.findings.append(Finding(
                check="replication_slot_retaining_wal", object=r["slot_name"], severity=Severity.critical
                if r["wal_status"] in ("unreserved", "lost") else Severity.warning,
                title=f"Replication slot {r['slot_name']} holds {r['retained_bytes'] / 2**30:.1f} GiB of WAL",
                details=details,
                recommendation=f"Fix or remove the lagging consumer ({drop}). Set max_slot_wal_keep_size "
                               "(13+) so one slot cannot fill the WAL volume.",
            ))
    return result


def standby_transform(rows: Sequence[Mapping[str, Any]], receivers: Sequence[Mapping[str, Any]],
                      ctx: Context) -> Result:
    """This instance is a standby: its replay lag, and whether its WAL receiver is streaming."""
    t, result = ctx.thresholds, Result()
    if not rows:
        return result
    r = rows[0]
    result.samples += [Sample("replication_lag_seconds", float(r["replay_lag_s"]), ctx.instance),
                       Sample("replication_lag_bytes", float(r["replay_lag_bytes"]), ctx.instance)]
    details = {**dict(r), "sql": "select pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(), "
                                 "now() - pg_last_xact_replay_timestamp()"}
    if (f := _lag_finding(ctx.instance, r["replay_lag_s"], r["replay_lag_bytes"], t, details)) is not None:
        result.findings.append(f)
    status = receivers[0]["status"] if receivers else "not running"
    if status != "streaming":
        result.findings.append(Finding(
            check="wal_receiver_not_streaming", object=ctx.instance, severity=Severity.critical,
            title=f"This standby's WAL receiver is {status}: it is not receiving WAL from a primary",
            details={"status": status, "receiver": dict(receivers[0]) if receivers else {},
                     "sql": "select * from pg_stat_wal_receiver"},
            recommendation="Check primary_conninfo, the primary's pg_hba.conf and the standby's log; "
                           "a standby restoring only from an archive has no WAL receiver.",
        ))
    return result


def aurora_transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    """aurora_replica_status() seen from the writer or a reader -> per-reader lag, replication_lag.

    One home per problem: the writer reports every reader, a reader only itself (as a vanilla
    standby does), unless it cannot tell which row is its own.
    """
    t, result = ctx.thresholds, Result()
    me = next((r for r in rows if r.get("is_self")), None)
    on_writer = me["session_id"] == AURORA_WRITER_SESSION if me is not None else not ctx.is_standby
    for r in rows:
        lag_ms = r.get("replica_lag_in_msec")
        if r["session_id"] == AURORA_WRITER_SESSION or lag_ms is None or lag_ms < 0:
            continue  # the writer, or a reader that has not reported yet
        lag_s = float(lag_ms) / 1000
        result.samples.append(Sample("replication_lag_seconds", lag_s, r["server_id"]))
        if (on_writer or me is None or r is me) and (f := _aurora_lag_finding(r, lag_s, t)) is not None:
            result.findings.append(f)
    if on_writer:
        result.findings += _readers_missing(rows, ctx.extra.get("expected_standbys") or [])
    return result


_AURORA_EVIDENCE = ("session_id", "replica_lag_in_msec", "cur_replay_latency_in_usec", "pending_read_ios",
                    "active_txns", "feedback_xmin", "last_transport_error", "last_error_timestamp",
                    "last_update_timestamp", "last_update_age_s")


def _aurora_lag_finding(r: Mapping[str, Any], lag_s: float, t: Mapping[str, Any]) -> Finding | None:
    if (severity := _lag_severity(lag_s, t)) is None:
        return None
    details = {k: r.get(k) for k in _AURORA_EVIDENCE}
    details.update(lag_seconds=round(lag_s, 3),
                   sql="select server_id, replica_lag_in_msec, cur_replay_latency_in_usec, pending_read_ios, "
                       "last_update_timestamp from aurora_replica_status()")
    return Finding(
        check="replication_lag", object=str(r["server_id"]), severity=severity,
        title=f"Aurora reader {r['server_id']} is {lag_s:,.1f} s behind the writer",
        details=details,
        recommendation="Aurora readers replay from the shared cluster volume and normally trail by well "
                       "under a second, so sustained lag means this reader cannot keep up: look at its CPU "
                       "and long queries (pg_stat_database_conflicts counts replay conflicts), a reader "
                       "class smaller than the writer's, or a write burst on the writer. Aurora restarts "
                       "a reader that falls too far behind.",
    )


def _readers_missing(rows: Sequence[Mapping[str, Any]], expected: Sequence[str]) -> list[Finding]:
    """Readers the inventory lists that the cluster's replica status does not know (Aurora's pg_stat_replication)."""
    seen = {str(r["server_id"]) for r in rows}
    return [Finding(
        check="standby_disconnected", object=name, severity=Severity.critical,
        title=f"Aurora reader {name} is not in this cluster's replica status",
        details={"known": sorted(seen), "sql": "select server_id, session_id, last_update_timestamp "
                                               "from aurora_replica_status()"},
        recommendation="Check in the RDS console or `aws rds describe-db-clusters` whether the reader was "
                       "deleted, is rebooting or failed; if it was removed on purpose, update the inventory.",
    ) for name in expected if name not in seen]


def aurora_status_for(probe: Mapping[str, Any], ctx: Context) -> str | None:
    """The aurora_replica_status() query if this is Aurora PostgreSQL (probe: AURORA_PROBE_SQL's
    three columns), else None."""
    # The inventory's engine name is a hint, never enough on its own: the function must exist.
    if not probe["replica_status"] or not (probe["aurora_version"] or ctx.engine == "aurora-postgres"):
        return None
    return AURORA_STATUS_SQL[bool(probe["instance_identifier"])]


def _add(result: Result, more: Result) -> Result:
    result.findings += more.findings
    result.samples += more.samples
    return result


# Everything a run needs in one statement: the Aurora probe, then (as JSON) the walsenders on a
# primary, the replay position and WAL receiver on a standby, and the slots. CASE evaluates only the
# branch taken: pg_current_wal_lsn() would fail on a standby, pg_is_wal_replay_paused() on a primary.
_ONE_SQL = """
select to_regproc('aurora_version') is not null as aurora_version,
       to_regproc('aurora_replica_status') is not null as replica_status,
       to_regproc('aurora_db_instance_identifier') is not null as instance_identifier,
       case when not pg_is_in_recovery() then
         (select coalesce(json_agg(r), '[]') from ({primary}) r)::text end as senders,
       case when pg_is_in_recovery() then (select row_to_json(r) from ({standby}) r)::text end as standby,
       case when pg_is_in_recovery() then
         (select coalesce(json_agg(r), '[]') from ({receiver}) r)::text end as receivers,
       (select coalesce(json_agg(r), '[]') from ({slots}) r)::text as slots
"""
ONE_SQL = {v: _ONE_SQL.format(primary=PRIMARY_SQL.strip(), standby=STANDBY_SQL.strip(), receiver=RECEIVER_SQL[v].strip(),
                              slots=SLOTS_SQL[v].strip()) for v in (100000, 130000)}


def _rows(text: str | None) -> list[dict[str, Any]]:
    return json.loads(text) if text else []


async def run(conn: Connection, ctx: Context) -> Result:
    [one] = await conn.fetch(closest_lower_or_raise(ONE_SQL, conn.server_version, "replication needs postgres"))
    if (aurora_sql := aurora_status_for(one, ctx)) is not None:
        result = aurora_transform(await conn.fetch(aurora_sql), ctx)
        if conn.is_standby:
            return result  # an Aurora reader has no WAL receiver and no slots of its own
        # The writer still streams to logical consumers (subscriptions, DMS) and keeps their slots.
        _add(result, walsender_transform(_rows(one["senders"]), ctx))
    elif conn.is_standby:
        standby = _rows(one["standby"])
        result = standby_transform([standby] if isinstance(standby, dict) else standby, _rows(one["receivers"]), ctx)
    else:
        result = primary_transform(_rows(one["senders"]), ctx)
    return _add(result, slots_transform(_rows(one["slots"]), ctx))


SPEC = register(CollectorSpec(
    name="replication",
    engine="postgres",
    description="Streaming replication lag per standby (Aurora: per reader), disconnected standbys, replication slots",
    sql={100000: PRIMARY_SQL},
    run=run,
    interval_s=60,
    timeout_s=10,
    thresholds=THRESHOLDS,
    needs=('replication',),
    scope=Scope.server,
))
