"""The declared checks: what a DBA writes under `checks:` in the config or POSTs to /api/v1/checks.

Durations are dbt's `{count, period}`; a freshness check that names no SLA gets 15 minutes.
"""

from __future__ import annotations

import fnmatch
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

# A check's name is part of its collector name (quality:<name>, at most 64 characters).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,55}$"
_TABLE_PATTERN = re.compile(r"^[^.\s]+(\.[^.\s]+)?$")
ROUTING_LABELS = ("source", "pipeline", "team", "owner")


class Period(StrEnum):
    minute = "minute"
    hour = "hour"
    day = "day"


_SECONDS = {Period.minute: 60, Period.hour: 3600, Period.day: 86400}


class Duration(BaseModel):
    """dbt's `{count: 12, period: hour}`."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=100_000)
    period: Period

    @property
    def seconds(self) -> int:
        return self.count * _SECONDS[self.period]

    def __str__(self) -> str:
        return f"{self.count} {self.period}{'s' if self.count != 1 else ''}"


DEFAULT_SLA = Duration(count=15, period=Period.minute)


class _Check(BaseModel):
    """What every kind shares: the name, the scope (instances, tags, tables), the schedule."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="unique; letters, digits, _ . -")
    description: str = Field("", max_length=1000)
    instances: list[str] = Field(default_factory=list, description="instance name globs; every instance when empty")
    tags: dict[str, str] = Field(default_factory=dict, description="instance tags the check applies to")
    tables: list[str] = Field(default_factory=list, max_length=200,
                              description="schema.table globs (MySQL: database.table); table alone: any schema")
    every: Duration = Field(default_factory=lambda: Duration(count=5, period=Period.minute),
                            description="how often it runs")
    labels: dict[str, str] = Field(default_factory=dict,
                                   description="added to the finding's labels and details: source, pipeline, team")
    allow_scan: bool = Field(False, description="run even where the query would scan a large table")
    timeout_s: float | None = Field(None, gt=0, le=3600, description="cancel the check's query after this long; "
                                    "the session's statement_timeout applies as well")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # The store keeps definitions as JSONB, which cannot hold a NUL character.
        stack = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, str) and "\x00" in item:
                raise ValueError("text may not contain a NUL character")
            if isinstance(item, dict):
                stack += [*item.keys(), *item.values()]
            elif isinstance(item, list):
                stack += item
        return data

    @field_validator("tables")
    @classmethod
    def _table_patterns(cls, v: list[str]) -> list[str]:
        for pattern in v:
            if not _TABLE_PATTERN.match(pattern):
                raise ValueError(f"table pattern {pattern!r} must be 'schema.table' or 'table' (globs allowed)")
        return v

    @field_validator("labels")
    @classmethod
    def _label_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", key):
                raise ValueError(f"label name {key!r} must be letters, digits and _ (as in Prometheus)")
        return v

    def applies(self, name: str, tags: dict[str, Any]) -> bool:
        if self.instances and not any(fnmatch.fnmatchcase(name, p) for p in self.instances):
            return False
        return all(str((tags or {}).get(k)) == v for k, v in self.tags.items())

    def matches_table(self, schema: str, table: str) -> bool:
        for pattern in self.tables:
            want_schema, _, want_table = pattern.rpartition(".")
            if fnmatch.fnmatchcase(table, want_table) and (not want_schema or fnmatch.fnmatchcase(schema, want_schema)):
                return True
        return False


class FreshnessCheck(_Check):
    """The newest row's age against warn_after / error_after (dbt source freshness)."""

    kind: Literal["freshness"] = "freshness"
    loaded_at_field: str | None = Field(None, max_length=2000, description="a column or expression")
    loaded_at_query: str | None = Field(None, max_length=20_000,
                                        description="one SELECT returning the newest load time (first column)")
    warn_after: Duration | None = None
    error_after: Duration | None = None
    filter: str | None = Field(None, max_length=2000, description="a WHERE condition the rows must meet")

    @model_validator(mode="after")
    def _one_source(self) -> FreshnessCheck:
        if (self.loaded_at_field is None) == (self.loaded_at_query is None):
            raise ValueError("give exactly one of loaded_at_field or loaded_at_query")
        if self.loaded_at_field is not None and not self.tables:
            raise ValueError("a loaded_at_field check needs tables")
        if self.warn_after is None and self.error_after is None:
            self.error_after = DEFAULT_SLA
        if self.warn_after and self.error_after and self.warn_after.seconds > self.error_after.seconds:
            raise ValueError(f"warn_after ({self.warn_after}) is longer than error_after ({self.error_after})")
        return self

    @property
    def sla(self) -> Duration:
        return self.error_after or self.warn_after or DEFAULT_SLA


class VolumeCheck(_Check):
    """Rows added per period against the table's own baseline by hour of day and day of week."""

    kind: Literal["volume"] = "volume"
    method: Literal["count", "inserts"] = Field(
        "count", description="count: count(*) of rows whose loaded_at_field is in the period; inserts: the "
                             "server's insert counters (pg_stat_user_tables.n_tup_ins, MySQL table_rows)")
    loaded_at_field: str | None = Field(None, max_length=2000)
    per: Duration = Field(default_factory=lambda: Duration(count=1, period=Period.hour))
    filter: str | None = Field(None, max_length=2000)
    deviations: float = Field(3.0, gt=0, le=100, description="flag beyond this many standard deviations")
    min_rows: int | None = Field(None, ge=0, description="flag a period with fewer rows than this")
    min_history: int = Field(3, ge=2, le=1000, description="past periods needed before judging by baseline")
    baseline_days: int = Field(28, ge=1, le=365)

    @model_validator(mode="after")
    def _needs(self) -> VolumeCheck:
        if not self.tables:
            raise ValueError("a volume check needs tables")
        if self.method == "count" and self.loaded_at_field is None:
            raise ValueError("method count needs loaded_at_field (the column that says when a row was loaded)")
        return self


# A completeness check reads only its latest window unless it asks for the whole table: with a
# loaded_at_field, the rows loaded in the last `window` (by default the longer of its schedule and
# an hour, so no row goes unchecked between runs and a share has enough rows to mean something);
# without one, the newest `window_rows` rows by primary key (an index backward scan).
MIN_DEFAULT_WINDOW = Duration(count=1, period=Period.hour)
DEFAULT_WINDOW_ROWS = 10_000


class CompletenessCheck(_Check):
    """The share of NULL or empty values in named columns, over the latest window."""

    kind: Literal["completeness"] = "completeness"
    columns: list[str] = Field(min_length=1, max_length=100)
    max_null_share: float = Field(0.0, ge=0, le=1, description="flag a column whose NULL/empty share exceeds this")
    loaded_at_field: str | None = Field(None, max_length=2000,
                                        description="the column saying when a row was loaded: the window is by time")
    window: Duration | Literal["all"] | None = Field(
        None, description="with loaded_at_field: rows loaded this long ago or later (default: the longer of "
                          "`every` and 1 hour); `all`: the whole table (reviewed for a scan like any check)")
    window_rows: int = Field(DEFAULT_WINDOW_ROWS, ge=1, le=1_000_000,
                             description="without loaded_at_field: the newest rows by primary key")
    filter: str | None = Field(None, max_length=2000)
    empty_is_null: bool = True

    @model_validator(mode="after")
    def _needs(self) -> CompletenessCheck:
        if not self.tables:
            raise ValueError("a completeness check needs tables")
        if isinstance(self.window, Duration) and self.loaded_at_field is None:
            raise ValueError("a window of time needs loaded_at_field (the column saying when a row was loaded); "
                             "without one the newest window_rows rows by primary key are read")
        return self

    @property
    def whole_table(self) -> bool:
        return self.window == "all"

    @property
    def window_seconds(self) -> int | None:
        """The time window read, or None when the window is rows (or the whole table)."""
        if self.whole_table or self.loaded_at_field is None:
            return None
        if isinstance(self.window, Duration):
            return self.window.seconds
        return max(self.every.seconds, MIN_DEFAULT_WINDOW.seconds)


class AssertionCheck(_Check):
    """A read-only SELECT returning the violating rows: zero rows passes."""

    kind: Literal["assertion"] = "assertion"
    query: str = Field(min_length=1, max_length=50_000,
                       description="one SELECT; with tables, {table} is each matched table, quoted")
    max_evidence_rows: int = Field(10, ge=0, le=100)
    severity: Literal["warning", "critical"] = Field("critical", description="critical fails `dbfleet checks run`")


class SchemaCheck(_Check):
    """Columns and types: expected ones, or else the ones seen on the first run."""

    kind: Literal["schema"] = "schema"
    expected_columns: dict[str, str | None] | None = Field(
        None, description="column -> type (null: any type); none: the columns seen on the first run")
    allow_added: bool = Field(False, description="columns beyond the expected ones are not drift")

    @model_validator(mode="after")
    def _needs(self) -> SchemaCheck:
        if not self.tables:
            raise ValueError("a schema check needs tables")
        return self


Check = Annotated[FreshnessCheck | VolumeCheck | CompletenessCheck | AssertionCheck | SchemaCheck,
                  Field(discriminator="kind")]
KINDS = ("freshness", "volume", "completeness", "assertion", "schema")
_ADAPTER: TypeAdapter[Check] = TypeAdapter(Check)


def parse_check(raw: Any) -> FreshnessCheck | VolumeCheck | CompletenessCheck | AssertionCheck | SchemaCheck:
    """One check from its dict form; pydantic's ValidationError names the wrong field."""
    return _ADAPTER.validate_python(raw)


def collector_name(check_name: str) -> str:
    """Each check is its own collector: its runs resolve only its own findings."""
    return f"quality:{check_name}"
