"""Vacuum and WAL health: is autovacuum keeping up per table, and are archiving and checkpoints healthy?

Two specs: `vacuum` reads one database's tables (Scope.database: pg_stat_user_tables is per
database); `wal_health` reads the server's archiver, checkpointer and per-database temp files.
The autovacuum threshold is computed as autovacuum does (threshold + scale_factor * reltuples,
per-table reloptions over the server settings), so "overdue" means past the trigger and not
vacuumed for a while, not merely "has dead rows".
https://www.postgresql.org/docs/current/routine-vacuuming.html#AUTOVACUUM
"""

from __future__ import annotations

import json
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

TABLES_SQL = """
select n.nspname as schema, c.relname as table, s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze,
       greatest(c.reltuples, 0)::float8 as reltuples, coalesce(c.reloptions, '{}') as reloptions,
       extract(epoch from now() - greatest(s.last_vacuum, s.last_autovacuum))::float8 as vacuum_age_s,
       extract(epoch from now() - s.last_autovacuum)::float8 as autovacuum_age_s,
       extract(epoch from now() - greatest(s.last_analyze, s.last_autoanalyze))::float8 as analyze_age_s,
       extract(epoch from now() - s.last_autoanalyze)::float8 as autoanalyze_age_s,
       age(c.relfrozenxid)::bigint as xid_age, mxid_age(c.relminmxid)::bigint as mxid_age
from pg_stat_user_tables s
join pg_class c on c.oid = s.relid
join pg_namespace n on n.oid = c.relnamespace
-- A partitioned table has no storage: nothing to vacuum, and relfrozenxid 0 (age() of it is 2^31).
where c.relkind <> 'p'
order by n.nspname, c.relname
"""
SETTINGS_SQL = """
select name, setting from pg_settings
where name in ('autovacuum', 'autovacuum_vacuum_threshold', 'autovacuum_vacuum_scale_factor',
               'autovacuum_analyze_threshold', 'autovacuum_analyze_scale_factor')
"""
ARCHIVER_SQL = """
select archived_count, failed_count, coalesce(last_failed_wal, '') as last_failed_wal,
       coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) as failing,
       current_setting('archive_mode') as archive_mode
from pg_stat_archiver
"""
# 17 moved the checkpoint counters from pg_stat_bgwriter to pg_stat_checkpointer.
CHECKPOINTS_SQL = {
    100000: "select checkpoints_timed as timed, checkpoints_req as requested from pg_stat_bgwriter",
    170000: "select num_timed as timed, num_requested as requested from pg_stat_checkpointer",
}
TEMP_SQL = "select datname, temp_files, temp_bytes from pg_stat_database where datname is not null"

THRESHOLDS: dict[str, Any] = {
    # Autovacuum looks every autovacuum_naptime (1 min): past its trigger and not vacuumed for an
    # hour means it is blocked, disabled, or its cost limit cannot keep up.
    "vacuum_overdue_s": 3600,
    # Planner statistics a day older than the changes they describe mislead it on a busy table.
    "analyze_overdue_s": 86400,
    # autovacuum_freeze_max_age defaults to 200M: past 2.5x that, anti-wraparound vacuum is not
    # finishing; at 1.5 billion the server is ~600M XIDs from refusing writes.
    "table_xid_age_warning": 500_000_000,
    "table_xid_age_critical": 1_500_000_000,
    # Requested checkpoints outnumbering timed ones: max_wal_size is too small for the write rate.
    "checkpoints_requested_min": 10,
}


def _settings(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    return {r["name"]: r["setting"] for r in rows}


def _reloptions(options: Sequence[str]) -> dict[str, str]:
    return dict(o.split("=", 1) for o in options if "=" in o)


def thresholds_for(table: Mapping[str, Any], settings: Mapping[str, str]) -> dict[str, float]:
    """Autovacuum's own triggers for this table: per-table reloptions over the server settings."""
    opts = _reloptions(table["reloptions"])

    def value(name: str) -> float:
        return float(opts.get(name, settings.get(name, 0)))

    return {"vacuum": value("autovacuum_vacuum_threshold")
            + value("autovacuum_vacuum_scale_factor") * table["reltuples"],
            "analyze": value("autovacuum_analyze_threshold")
            + value("autovacuum_analyze_scale_factor") * table["reltuples"],
            "enabled": opts.get("autovacuum_enabled", settings.get("autovacuum", "on")) not in ("false", "off")}


def suggested_scale_factor(reltuples: float) -> float:
    """A scale factor that triggers after ~100k changed rows on a big table, never above the 0.2 default."""
    return max(0.001, round(min(0.2, 100_000 / max(reltuples, 1)), 3))


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context, settings: Sequence[Mapping[str, Any]] = ()) -> Result:
    """pg_stat_user_tables rows -> vacuum_overdue, statistics_stale, table_xid_age, with per-table DDL."""
    t, server, result = ctx.thresholds, _settings(settings), Result()
    for r in rows:
        name = f"{r['schema']}.{r['table']}"
        limits = thresholds_for(r, server)
        result.samples.append(Sample("table_dead_tuples", float(r["n_dead_tup"]), name))
        if r["n_dead_tup"] > limits["vacuum"] and _older(r["vacuum_age_s"], t["vacuum_overdue_s"]):
            result.findings.append(_vacuum_overdue(name, r, limits))
        if r["n_mod_since_analyze"] > limits["analyze"] and _older(r["analyze_age_s"], t["analyze_overdue_s"]):
            result.findings.append(_statistics_stale(name, r, limits))
        if (f := _xid_age(name, r, t)) is not None:
            result.findings.append(f)
    return result


def _older(age_s: float | None, limit: float) -> bool:
    return age_s is None or age_s >= limit  # never vacuumed counts as overdue


def _evidence(r: Mapping[str, Any], limits: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("n_live_tup", "n_dead_tup", "n_mod_since_analyze", "reltuples", "vacuum_age_s", "autovacuum_age_s",
            "analyze_age_s", "autoanalyze_age_s", "xid_age", "mxid_age", "reloptions")
    return {k: r[k] for k in keys} | {"vacuum_threshold": round(limits["vacuum"]),
                                      "analyze_threshold": round(limits["analyze"]),
                                      "autovacuum_enabled": limits["enabled"],
                                      "sql": "select * from pg_stat_user_tables"}


def _quoted(name: str) -> str:
    return ".".join('"' + p.replace('"', '""') + '"' for p in name.split(".", 1))


def _vacuum_overdue(name: str, r: Mapping[str, Any], limits: Mapping[str, Any]) -> Finding:
    sf, table = suggested_scale_factor(r["reltuples"]), _quoted(name)
    cause = "autovacuum is disabled on it" if not limits["enabled"] else "autovacuum has not vacuumed it since"
    return Finding(
        check="vacuum_overdue", object=name, severity=Severity.warning,
        title=f"{name} has {r['n_dead_tup']:,} dead rows, over its autovacuum threshold of "
              f"{limits['vacuum']:,.0f}, and {cause}",
        details=_evidence(r, limits),
        recommendation=f"Now: VACUUM (VERBOSE, ANALYZE) {table}; then make autovacuum come sooner: ALTER TABLE "
                       f"{table} SET (autovacuum_enabled = on, autovacuum_vacuum_scale_factor = {sf}, "
                       "autovacuum_vacuum_threshold = 1000); If it still falls behind, look for a long "
                       "transaction holding the xmin horizon (activity collector) or raise "
                       "autovacuum_vacuum_cost_limit for the table.",
    )


def _statistics_stale(name: str, r: Mapping[str, Any], limits: Mapping[str, Any]) -> Finding:
    sf, table = suggested_scale_factor(r["reltuples"]) / 2, _quoted(name)
    return Finding(
        check="statistics_stale", object=name, severity=Severity.info,
        title=f"{name}: {r['n_mod_since_analyze']:,} rows changed since its last ANALYZE "
              f"(threshold {limits['analyze']:,.0f})",
        details=_evidence(r, limits),
        recommendation=f"ANALYZE {table}; and ALTER TABLE {table} SET (autovacuum_analyze_scale_factor = "
                       f"{max(sf, 0.001):g}); so the planner's estimates follow the data.",
    )


def _xid_age(name: str, r: Mapping[str, Any], t: Mapping[str, Any]) -> Finding | None:
    age = max(r["xid_age"] or 0, r["mxid_age"] or 0)
    if age < t["table_xid_age_warning"]:
        return None
    which = "multixact" if (r["mxid_age"] or 0) > (r["xid_age"] or 0) else "XID"
    return Finding(
        check="table_xid_age", object=name,
        severity=Severity.critical if age >= t["table_xid_age_critical"] else Severity.warning,
        title=f"{name}: oldest unfrozen {which} is {age:,} old",
        details=_evidence(r, {"vacuum": 0, "analyze": 0, "enabled": True}),
        recommendation=f"VACUUM (FREEZE, VERBOSE) {_quoted(name)}; at a quiet hour, and let it finish (an "
                       f"anti-wraparound autovacuum is not cancelled by locks). Give it more I/O: ALTER TABLE "
                       f"{_quoted(name)} SET (autovacuum_vacuum_cost_limit = 2000);",
    )


# The tables with the server's autovacuum settings beside them: one statement per run.
TABLES_WITH_SETTINGS_SQL = f"""
select t.*, s.settings from ({TABLES_SQL.strip()}) t
cross join (select json_agg(json_build_object('name', name, 'setting', setting))::text as settings
            from ({SETTINGS_SQL.strip()}) p) s
"""


async def run(conn: Connection, ctx: Context) -> Result:
    rows = await conn.fetch(TABLES_WITH_SETTINGS_SQL)
    return transform(rows, ctx, json.loads(rows[0]["settings"]) if rows else ())


def wal_transform(archiver: Sequence[Mapping[str, Any]], checkpoints: Sequence[Mapping[str, Any]],
                  temp: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    """pg_stat_archiver, checkpoint counters, pg_stat_database temp files -> findings and samples."""
    result = Result(samples=[Sample("temp_bytes_total", float(r["temp_bytes"]), r["datname"]) for r in temp])
    for a in archiver:
        if a["failing"]:
            result.findings.append(Finding(
                check="wal_archiving_failing", object=ctx.instance, severity=Severity.critical,
                title=f"WAL archiving is failing ({a['failed_count']:,} failures, last on {a['last_failed_wal']})",
                details={**dict(a), "sql": "select * from pg_stat_archiver"},
                recommendation="Run archive_command by hand as the postgres user on the failed segment and read "
                               "its error; until it succeeds pg_wal grows without bound and point-in-time "
                               "recovery has a gap.",
            ))
    for c in checkpoints:
        result.samples += [Sample("checkpoints_timed_total", float(c["timed"])),
                           Sample("checkpoints_requested_total", float(c["requested"]))]
        if c["requested"] > c["timed"] and c["requested"] >= ctx.thresholds["checkpoints_requested_min"]:
            result.findings.append(Finding(
                check="checkpoints_requested", object=ctx.instance, severity=Severity.warning,
                title=f"{c['requested']:,} checkpoints were forced by WAL volume against {c['timed']:,} on schedule",
                details={**dict(c), "sql": "select checkpoints_timed, checkpoints_req from pg_stat_bgwriter"},
                recommendation="Raise max_wal_size (ALTER SYSTEM SET max_wal_size = '8GB'; SELECT "
                               "pg_reload_conf();) so checkpoints come from checkpoint_timeout: fewer full-page "
                               "writes and smoother I/O.",
            ))
    return result


# Archiver, checkpoints and temp files in one statement: each part as JSON of its own rows.
_WAL_SQL = """
select (select coalesce(json_agg(r), '[]') from ({archiver}) r)::text as archiver,
       (select coalesce(json_agg(r), '[]') from ({checkpoints}) r)::text as checkpoints,
       (select coalesce(json_agg(r), '[]') from ({temp}) r)::text as temp
"""
WAL_SQL = {v: _WAL_SQL.format(archiver=ARCHIVER_SQL.strip(), checkpoints=c, temp=TEMP_SQL)
           for v, c in CHECKPOINTS_SQL.items()}


async def wal_run(conn: Connection, ctx: Context) -> Result:
    [row] = await conn.fetch(closest_lower_or_raise(WAL_SQL, conn.server_version, "wal_health needs postgres"))
    return wal_transform(json.loads(row["archiver"]), json.loads(row["checkpoints"]), json.loads(row["temp"]), ctx)


SPEC = register(CollectorSpec(
    name="vacuum",
    engine="postgres",
    description="Per-table autovacuum health: dead rows past the computed threshold, stale statistics, XID age",
    sql={100000: TABLES_SQL},
    transform=transform,
    run=run,
    interval_s=900,
    timeout_s=30,
    thresholds=THRESHOLDS,
    scope=Scope.database,
))
WAL_SPEC = register(CollectorSpec(
    name="wal_health",
    engine="postgres",
    description="WAL archiving failures, requested versus timed checkpoints, temp-file bytes per database",
    sql={100000: ARCHIVER_SQL},
    transform=lambda rows, ctx: wal_transform(rows, [], [], ctx),
    run=wal_run,
    interval_s=300,
    timeout_s=10,
    thresholds={"checkpoints_requested_min": THRESHOLDS["checkpoints_requested_min"]},
    scope=Scope.server,
))
