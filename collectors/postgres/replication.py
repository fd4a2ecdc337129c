"""Streaming replication: per-standby lag on the primary, replay lag on a standby, replication slots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from collectors.registry import register
from collectors.spec import CollectorSpec, Connection, Context, Finding, Result, Sample, Severity

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

THRESHOLDS: dict[str, Any] = {
    # A standby half a minute behind already serves stale reads; five minutes threatens failover RPO.
    "replication_lag_warning_s": 30,
    "replication_lag_critical_s": 300,
    # One GiB of WAL pinned by a slot is where disk-full outages start on small volumes.
    "slot_retained_wal_bytes": 1 << 30,
}


def _pick(sql: Mapping[int, str], version: int) -> str:
    return sql[max(k for k in sql if k <= version)]


def _lag_finding(name: str, lag_s: float, lag_bytes: int, t: Mapping[str, Any], details: dict) -> Finding | None:
    if lag_s < t["replication_lag_warning_s"]:
        return None
    severity = Severity.critical if lag_s >= t["replication_lag_critical_s"] else Severity.warning
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
    t, result = {**THRESHOLDS, **ctx.thresholds}, Result()
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
    result.findings += _disconnected(rows, ctx.extra.get("expected_standbys") or [])
    return result


def _disconnected(rows: Sequence[Mapping[str, Any]], expected: Sequence[str]) -> list[Finding]:
    """Standbys the inventory lists (by application_name, address or host name) absent from pg_stat_replication."""
    seen = {v for r in rows for v in (r["application_name"], r["client_addr"], r["client_hostname"]) if v}
    return [Finding(
        check="standby_disconnected", object=name, severity=Severity.critical,
        title=f"Standby {name} is not streaming from this primary",
        details={"connected": sorted({r["application_name"] for r in rows}),
                 "sql": "select application_name, client_addr, state from pg_stat_replication"},
        recommendation="Look at the standby's log and pg_stat_wal_receiver. If it fell behind the WAL "
                       "the primary keeps, it needs a replication slot or a new base backup.",
    ) for name in expected if name not in seen]


def slots_transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    """pg_replication_slots rows -> replication_slot_inactive / replication_slot_retaining_wal."""
    t, result = {**THRESHOLDS, **ctx.thresholds}, Result()
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
    t, result = {**THRESHOLDS, **ctx.thresholds}, Result()
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


async def run(conn: Connection, ctx: Context) -> Result:
    version = conn.server_version
    if conn.is_standby:
        result = standby_transform(await conn.fetch(STANDBY_SQL), await conn.fetch(_pick(RECEIVER_SQL, version)), ctx)
    else:
        result = primary_transform(await conn.fetch(PRIMARY_SQL), ctx)
    slots = slots_transform(await conn.fetch(_pick(SLOTS_SQL, version)), ctx)
    result.findings += slots.findings
    result.samples += slots.samples
    return result


SPEC = register(CollectorSpec(
    name="replication",
    engine="postgres",
    description="Streaming replication lag per standby, disconnected standbys, replication slots",
    sql={100000: PRIMARY_SQL},
    run=run,
    interval_s=60,
    timeout_s=10,
    thresholds=THRESHOLDS,
))
