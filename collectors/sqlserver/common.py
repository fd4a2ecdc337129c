"""Pure helpers the SQL Server and Oracle collectors share: counter deltas, rolling baselines,
redundant-index and unindexed-foreign-key rules, partition interval arithmetic, tagged fetches.

Kept engine-neutral (no SQL dialect in here) so another family may import it too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from collectors.spec import Connection

DAY_S = 86_400.0


async def fetch_tagged(conn: Connection, queries: Mapping[str, str], *args: Any) -> list[dict[str, Any]]:
    """Run several read-only queries and tag each row with the query's name as `kind`."""
    rows: list[dict[str, Any]] = []
    for kind, sql in queries.items():
        rows += [{**row, "kind": kind} for row in await conn.fetch(sql, *args)]
    return rows


def by_kind(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        out.setdefault(str(row.get("kind", "")), []).append(row)
    return out


def as_utc(value: Any) -> datetime | None:
    """Drivers hand back naive datetimes in the server's clock; collectors compare in UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def num(value: Any, default: float = 0.0) -> float:
    """DMV columns are NULL for queries that never ran a step; treat that as zero."""
    return default if value is None else float(value)


# --- cumulative counters -> per-interval deltas, reset-safe -------------------------------------

def counter_deltas(
    current: Mapping[str, Mapping[str, float]],
    previous: Mapping[str, Mapping[str, float]] | None,
) -> dict[str, dict[str, float]]:
    """Deltas for keys seen in both snapshots whose counters all grew or stayed.

    A key missing from the previous snapshot, or any counter that went down (the plan left the
    cache and came back, statistics were flushed, the server restarted), starts a new baseline:
    no delta this time rather than a negative or huge one.
    """
    out: dict[str, dict[str, float]] = {}
    for key, now_counters in current.items():
        before = (previous or {}).get(key)
        if before is None:
            continue
        delta = {name: value - before.get(name, 0.0) for name, value in now_counters.items()}
        if any(v < 0 for v in delta.values()):
            continue
        out[key] = delta
    return out


@dataclass(frozen=True, slots=True)
class Baseline:
    """Exponentially weighted per-second rates of one statement: a long and a short horizon."""

    calls_long: float
    ms_long: float
    calls_short: float
    ms_short: float
    since: float  # epoch seconds when this statement was first measured

    @property
    def mean_ms_long(self) -> float:
        return self.ms_long / self.calls_long if self.calls_long > 0 else 0.0

    @property
    def mean_ms_short(self) -> float:
        return self.ms_short / self.calls_short if self.calls_short > 0 else 0.0

    def as_list(self) -> list[float]:
        return [round(self.calls_long, 9), round(self.ms_long, 6), round(self.calls_short, 9),
                round(self.ms_short, 6), self.since]


def update_baseline(old: Sequence[float] | None, calls: float, total_ms: float, interval_s: float,
                    now_s: float, long_s: float = 7 * DAY_S, short_s: float = 3600.0) -> Baseline:
    """Fold one interval into the rolling baseline (7 days long, 1 hour short by default)."""
    rate_calls, rate_ms = calls / interval_s, total_ms / interval_s
    if old is None:
        return Baseline(rate_calls, rate_ms, rate_calls, rate_ms, now_s)
    a_long = 1.0 - math.exp(-interval_s / long_s)
    a_short = 1.0 - math.exp(-interval_s / short_s)
    cl, ml, cs, ms, since = old
    return Baseline(cl + a_long * (rate_calls - cl), ml + a_long * (rate_ms - ml),
                    cs + a_short * (rate_calls - cs), ms + a_short * (rate_ms - ms), since)


def regression(base: Baseline, now_s: float, t: Mapping[str, Any]) -> dict[str, float] | None:
    """Evidence when the last hour's mean is >= factor x the long baseline, else None."""
    age_s = now_s - base.since
    calls_last_hour = base.calls_short * 3600.0
    if age_s < t["regression_min_baseline_s"] or calls_last_hour < t["regression_min_calls"]:
        return None
    if base.mean_ms_long <= 0 or base.mean_ms_short < t["regression_factor"] * base.mean_ms_long:
        return None
    if base.mean_ms_short < t["regression_min_mean_ms"]:
        return None
    return {"mean_ms_last_hour": round(base.mean_ms_short, 2), "mean_ms_baseline": round(base.mean_ms_long, 2),
            "factor": round(base.mean_ms_short / base.mean_ms_long, 2),
            "calls_last_hour": round(calls_last_hour), "baseline_age_days": round(age_s / DAY_S, 1)}


QUERY_THRESHOLDS = {
    "slow_query_ms": 100.0,
    "slow_query_min_calls": 100,
    "regression_factor": 2.0,
    "regression_min_calls": 50,
    "regression_min_mean_ms": 5.0,
    # A baseline younger than a day has not seen a daily cycle; do not judge against it.
    "regression_min_baseline_s": DAY_S,
    "baseline_max_statements": 2000,
}


def trim_baselines(baselines: dict[str, list[float]], keep: int) -> dict[str, list[float]]:
    """Keep the state compact: the statements with the most time per second over the long horizon."""
    if len(baselines) <= keep:
        return baselines
    top = sorted(baselines.items(), key=lambda kv: kv[1][1], reverse=True)[:keep]
    return dict(top)


# --- index rules ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IndexShape:
    """What decides whether one index makes another redundant."""

    table: str
    name: str
    keys: tuple[str, ...]          # key columns in order, with " DESC" where descending
    includes: frozenset[str] = frozenset()
    unique: bool = False
    constraint: bool = False       # backs a primary key / unique constraint: never the one to drop
    kind: str = ""                 # access method: NONCLUSTERED, BITMAP, ...
    predicate: str = ""            # filtered / partial index condition
    size_bytes: int = 0


def redundant_indexes(indexes: Sequence[IndexShape]) -> list[tuple[IndexShape, IndexShape]]:
    """(redundant, covering) pairs: same table, kind and predicate, keys equal or a leading
    prefix, included columns covered, and never a unique index made redundant by a non-unique one."""
    pairs = []
    for a in indexes:
        for b in indexes:
            if a is b or a.table != b.table or a.kind != b.kind or a.predicate != b.predicate:
                continue
            if a.constraint or (a.unique and not b.unique):
                continue
            if b.keys[:len(a.keys)] != a.keys or not a.includes <= (set(b.keys) | b.includes):
                continue
            identical = a.keys == b.keys and a.includes == b.includes and a.unique == b.unique
            if identical and not b.constraint and a.name < b.name:
                continue  # of two identical indexes, report only the one that sorts last
            pairs.append((a, b))
    return pairs


def fk_is_indexed(fk_columns: Sequence[str], index_keys: Iterable[Sequence[str]]) -> bool:
    """A foreign key is covered when its columns, in any order, lead some index."""
    want = {c.upper() for c in fk_columns}
    return any({k.upper().removesuffix(" DESC") for k in keys[:len(want)]} == want
               for keys in index_keys if len(keys) >= len(want))


# --- partition interval arithmetic ----------------------------------------------------------------

def add_months(d: datetime, months: int) -> datetime:
    y, m = divmod(d.month - 1 + months, 12)
    return d.replace(year=d.year + y, month=m + 1, day=1)


def infer_step(bounds: Sequence[datetime]) -> tuple[str, int] | None:
    """('month', n) when the bounds fall on the 1st n months apart, else ('day', n); None if unclear."""
    if len(bounds) < 2:
        return None
    last, prev = bounds[-1], bounds[-2]
    if last.day == prev.day == 1 and last.time() == prev.time():
        months = (last.year - prev.year) * 12 + last.month - prev.month
        if months > 0:
            return ("month", months)
    days = (last - prev).total_seconds() / DAY_S
    return ("day", int(days)) if days >= 1 and days == int(days) else None


def next_bound(bound: datetime, step: tuple[str, int]) -> datetime:
    unit, n = step
    return add_months(bound, n) if unit == "month" else bound + timedelta(days=n)


def future_bounds(bounds: Sequence[datetime], step: tuple[str, int], now: datetime, premake: int) -> list[datetime]:
    """The bounds to add after the last one so that `premake` bounds lie after now."""
    out, bound = [], bounds[-1]
    ahead = sum(1 for b in bounds if b > now)
    while ahead < premake:
        bound = next_bound(bound, step)
        out.append(bound)
        if bound > now:
            ahead += 1
    return out


def policy_for(table: str, thresholds: Mapping[str, Any]) -> dict[str, Any]:
    """Per-table partition policy: defaults overridden by the first matching `policies` pattern."""
    import fnmatch
    policy = {"premake": thresholds.get("premake", 4), "retention_days": thresholds.get("retention_days"),
              "keep_table": thresholds.get("keep_table", False)}
    for pattern, override in (thresholds.get("policies") or {}).items():
        if fnmatch.fnmatch(table.lower(), pattern.lower()):
            policy.update(override)
            break
    return policy


# --- the partition policy as app/partitions.py hands it over (PostgreSQL's policy shape) ----------

# Calendar units in days, rounded up: a retention window is a promise to keep at least that long.
_UNIT_DAYS = {"day": 1, "week": 7, "month": 31, "quarter": 92, "year": 366}
# The spellings PostgreSQL's policy (a pydantic bool) accepts, so one policy means the same everywhere.
_TRUE, _FALSE = ("1", "on", "t", "true", "y", "yes"), ("0", "off", "f", "false", "n", "no")


def retention_days(policy: Mapping[str, Any]) -> int | None:
    """A policy's retention in whole days, from retention_days or a retention text ('90 days')."""
    if policy.get("retention_days") is not None:
        return int(policy["retention_days"])
    text = policy.get("retention")
    if text is None or isinstance(text, int):
        return text
    number, _, unit = str(text).strip().partition(" ")
    days = _UNIT_DAYS.get(unit.rstrip("s").lower())
    if not number.isdigit() or days is None:
        raise ValueError(f"retention {text!r}: use e.g. '90 days', '6 months' or '1 year'")
    return int(number) * days


def keep_table(policy: Mapping[str, Any]) -> bool:
    """A policy's keep_table: a bool, 0/1, or true/false, yes/no, on/off; False when absent."""
    value = policy.get("keep_table", False)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ValueError(f"keep_table {value!r}: use true or false")
