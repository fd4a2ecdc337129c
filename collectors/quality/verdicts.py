"""Pure verdicts: a check's measurement on one table -> its state, findings and samples.

Every measured value becomes a sample (lag seconds, rows per period, null share, violations), so
it has a history; a finding is raised only when a threshold is crossed. Labels the check declares
(source, pipeline...) are copied into every finding's details, so routes and people see them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collectors.quality.baseline import Baseline, deviation
from collectors.quality.checks import (
    AssertionCheck,
    CompletenessCheck,
    FreshnessCheck,
    SchemaCheck,
    VolumeCheck,
)
from collectors.spec import Finding, Sample, Severity

PASS, WARN, ERROR = "pass", "warn", "error"


@dataclass(slots=True)
class Verdict:
    """One check on one object: pass / warn / error, with what to store."""

    state: str
    value: float | None = None
    findings: list[Finding] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def object_of(check_name: str, table: str) -> str:
    """Findings are per check and table: two checks on one table are two findings."""
    return f"{table} [{check_name}]"


def _details(check: Any, table: str, **values: Any) -> dict[str, Any]:
    return {"check": check.name, "table": table, **check.labels, **values}


def _as_utc(value: datetime, naive_now: datetime | None, aware_now: datetime | None) -> tuple[datetime, datetime]:
    """(newest, now) on one clock: a naive load time is compared with the server's local clock."""
    if value.tzinfo is None:
        return value, (naive_now if naive_now is not None else datetime.now(UTC).replace(tzinfo=None))
    now = aware_now if aware_now is not None else datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return value, now


def freshness(check: FreshnessCheck, table: str, newest: Any, now_tz: datetime | None,
              now_local: datetime | None) -> Verdict:
    """Lag of the newest row on the server's clock against warn_after / error_after."""
    obj = object_of(check.name, table)
    sla_s = check.sla.seconds
    if newest is None:
        f = Finding("freshness_sla_breached", obj, Severity.critical,
                    f"{table} has no rows to measure freshness by ({check.name})",
                    _details(check, table, lag_seconds=None, sla_seconds=sla_s),
                    "Check that the pipeline loading this table runs, and that the filter is right.")
        return Verdict(ERROR, None, [f], [], {"newest": None, "sla_seconds": sla_s})
    if not isinstance(newest, datetime):
        raise TypeError(f"loaded_at for {table} is {type(newest).__name__}, not a timestamp: cast it in "
                         f"loaded_at_field")
    newest, now = _as_utc(newest, now_local, now_tz)
    lag = max(0.0, (now - newest).total_seconds())
    state, severity, limit = PASS, None, None
    if check.error_after and lag > check.error_after.seconds:
        state, severity, limit = ERROR, Severity.critical, check.error_after
    elif check.warn_after and lag > check.warn_after.seconds:
        state, severity, limit = WARN, Severity.warning, check.warn_after
    details = {"newest": newest.isoformat(), "lag_seconds": round(lag, 3), "sla_seconds": sla_s}
    findings = []
    if severity is not None:
        findings.append(Finding(
            "freshness_sla_breached", obj, severity,
            f"{table} is {_human(lag)} behind (over {limit}, check {check.name})",
            _details(check, table, lag_seconds=round(lag, 1), limit_seconds=limit.seconds, newest=newest.isoformat(),
                     loaded_at_field=check.loaded_at_field or "(query)"),
            "Find out why the load stopped (pipeline run history, its source); the check resolves itself "
            "once a new row arrives."))
    return Verdict(state, lag, findings, [Sample("quality_freshness_lag_seconds", lag, obj)], details)


def volume(check: VolumeCheck, table: str, rows: float, base: Baseline | None) -> Verdict:
    """Rows in the period against the floor and the baseline for this hour of the week."""
    obj = object_of(check.name, table)
    sample = Sample("quality_rows_per_period", rows, obj)
    details: dict[str, Any] = {"rows": rows, "per_seconds": check.per.seconds}
    if check.min_rows is not None and rows < check.min_rows:
        f = Finding("volume_anomaly", obj, Severity.critical,
                    f"{table} got {rows:.0f} rows in the last {check.per}, under the floor of {check.min_rows}",
                    _details(check, table, rows=rows, min_rows=check.min_rows, direction="below floor"),
                    "Check the load's source and run history: a partial or failed load delivers too few rows.")
        return Verdict(ERROR, rows, [f], [sample], details)
    if base is None:
        details["baseline"] = "learning"
        return Verdict(PASS, rows, [], [sample], details)
    sigmas = deviation(rows, base)
    details.update(mean=round(base.mean, 3), stdev=round(base.stdev, 3), deviations=round(sigmas, 2), basis=base.basis)
    if abs(sigmas) <= check.deviations:
        return Verdict(PASS, rows, [], [sample], details)
    direction = "drop" if sigmas < 0 else "spike"
    share = rows / base.mean if base.mean else float("inf")
    f = Finding("volume_anomaly", obj, Severity.warning,
                f"{table} got {rows:.0f} rows in the last {check.per}: {share:.0%} of the usual {base.mean:.0f} "
                f"({direction}, {abs(sigmas):.1f} deviations)",
                _details(check, table, rows=rows, mean=round(base.mean, 1), stdev=round(base.stdev, 1),
                         deviations=round(sigmas, 2), basis=base.basis, baseline_points=base.points,
                         direction=direction),
                "A drop is often a partial or failed load, a spike a replay or duplicate load: check the "
                "pipeline's run for this period.")
    return Verdict(WARN, rows, [f], [sample], details)


def completeness(check: CompletenessCheck, table: str, row: Mapping[str, Any]) -> Verdict:
    """Share of NULL (or empty) values per column against max_null_share."""
    total = int(row.get("total") or 0)
    findings, samples, shares = [], [], {}
    for i, column in enumerate(check.columns):
        missing = int(row.get(f"missing_{i}") or 0)
        share = missing / total if total else 0.0
        shares[column] = round(share, 6)
        obj = object_of(check.name, f"{table}.{column}")
        samples.append(Sample("quality_null_share", share, obj))
        if total and share > check.max_null_share:
            findings.append(Finding(
                "completeness_low", obj, Severity.warning,
                f"{table}.{column} is NULL or empty in {share:.1%} of {total} rows (at most "
                f"{check.max_null_share:.1%} allowed, check {check.name})",
                _details(check, table, column=column, null_share=round(share, 6), missing=missing, rows=total,
                         max_null_share=check.max_null_share),
                "Find the load or code path writing the missing values; a NOT NULL or CHECK constraint stops "
                "them at the source."))
    worst = max(shares.values(), default=0.0)
    return Verdict(WARN if findings else PASS, worst, findings, samples, {"rows": total, "null_share": shares})


def assertion(check: AssertionCheck, table: str, rows: Sequence[Mapping[str, Any]]) -> Verdict:
    """Zero rows passes; otherwise the violating row count and the first rows as evidence."""
    obj = object_of(check.name, table) if check.tables else check.name
    count = int(rows[0]["dbfleet_violations"]) if rows else 0
    sample = Sample("quality_assertion_violations", float(count), obj)
    if count == 0:
        return Verdict(PASS, 0.0, [], [sample], {"violations": 0})
    evidence = [{k: _jsonable(v) for k, v in r.items() if k != "dbfleet_violations"}
                for r in rows[: check.max_evidence_rows]]
    f = Finding("assertion_failed", obj, Severity(check.severity),
                f"{check.name}: {count} violating row{'s' if count != 1 else ''}"
                + (f" in {table}" if check.tables else ""),
                _details(check, table, violations=count, evidence=evidence, sql=check.query),
                check.description or "Each row the query returns breaks the rule it states; fix the data or the load.")
    return Verdict(ERROR if check.severity == "critical" else WARN, float(count), [f], [sample],
                   {"violations": count})


def _norm(type_name: str | None) -> str | None:
    return " ".join(type_name.lower().split()) if type_name else None


def schema_drift(check: SchemaCheck, table: str, columns: Mapping[str, str],
                 previous: Mapping[str, str] | None) -> Verdict:
    """Columns added, dropped or retyped against the expected ones, else against the first run's."""
    expected = check.expected_columns if check.expected_columns is not None else previous
    obj = object_of(check.name, table)
    details: dict[str, Any] = {"columns": dict(columns)}
    if expected is None:
        details["baseline"] = dict(columns)
        return Verdict(PASS, 0.0, [], [Sample("quality_schema_changes", 0.0, obj)], details)
    details["baseline"] = dict(expected)
    now = {k.lower(): v for k, v in columns.items()}
    want = {k.lower(): v for k, v in expected.items()}
    dropped = sorted(set(want) - set(now))
    added = [] if check.allow_added else sorted(set(now) - set(want))
    retyped = {c: {"expected": want[c], "found": now[c]} for c in sorted(set(now) & set(want))
               if want[c] is not None and _norm(want[c]) != _norm(now[c])}
    changes = len(dropped) + len(added) + len(retyped)
    sample = Sample("quality_schema_changes", float(changes), obj)
    if not changes:
        return Verdict(PASS, 0.0, [], [sample], details)
    parts = [f"{len(x)} {label}" for x, label in ((added, "added"), (dropped, "dropped"), (retyped, "retyped")) if x]
    f = Finding("schema_drift", obj, Severity.warning, f"{table} changed shape: {', '.join(parts)} ({check.name})",
                _details(check, table, added=added, dropped=dropped, retyped=retyped),
                "Tell the pipeline's owners: downstream loads and reports read these columns. If the change is "
                "intended, declare it in expected_columns (or re-create the check to take the new shape).")
    return Verdict(WARN, float(changes), [f], [sample], details)


def table_gone(check: SchemaCheck, table: str, baseline: Mapping[str, str]) -> Verdict:
    """A table an earlier run saw is gone: every column it had is dropped."""
    obj = object_of(check.name, table)
    f = Finding("schema_drift", obj, Severity.critical, f"{table} no longer exists ({check.name})",
                _details(check, table, added=[], dropped=sorted(baseline), retyped={}, table_gone=True),
                "Find out who dropped or renamed it: the pipeline and its readers expect it. If it is meant to "
                "go, delete or re-create the check.")
    return Verdict(ERROR, float(len(baseline)), [f], [Sample("quality_schema_changes", float(len(baseline)), obj)],
                   {"baseline": dict(baseline), "columns": {}})


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
