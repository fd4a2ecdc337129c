"""Slow-query and error events from an Azure database's diagnostic logs in Log Analytics.

Runs only where a workspace is configured (the instance's cloud identity carries workspace_id).
The KQL summarises in the workspace, so a busy server returns a few dozen groups, not raw lines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from collectors.cloud.azure_api import AzureConnection, parse_resource_id
from collectors.engines.base import redact
from collectors.registry import register
from collectors.spec import CollectorSpec, Context, Finding, Result, Sample, Scope, Severity

_SUMMARY = """
| summarize events = count(), last_seen = max(TimeGenerated), max_duration_ms = max(duration_ms),
            example = take_any(substring(Message, 0, 1000)) by kind, detail
| top 50 by events desc"""

# Per service, the diagnostic category and how a line becomes (kind, detail, duration_ms).
KQL: dict[str, str] = {
    "microsoft.dbforpostgresql/flexibleservers": """AzureDiagnostics
| where _ResourceId =~ '{rid}' and Category == 'PostgreSQLLogs'
| extend duration_ms = todouble(extract(@'duration: ([0-9.]+) ms', 1, Message))
| extend kind = case(isnotnull(duration_ms), 'slow', errorLevel_s in ('ERROR', 'FATAL', 'PANIC'), 'error', '')
| where kind != ''
| extend detail = iff(kind == 'slow', substring(extract(@'(?:statement|execute [^:]*): (.*)', 1, Message), 0, 200),
                      strcat(errorLevel_s, ' ', sqlerrcode_s))""" + _SUMMARY,
    "microsoft.dbformysql/flexibleservers": """AzureDiagnostics
| where _ResourceId =~ '{rid}' and Category == 'MySqlSlowLogs'
| extend kind = 'slow', duration_ms = query_time_d * 1000, detail = substring(sql_text_s, 0, 200),
         Message = sql_text_s""" + _SUMMARY,
    "microsoft.sql/servers/databases": """AzureDiagnostics
| where _ResourceId =~ '{rid}' and Category == 'Errors'
| extend kind = 'error', duration_ms = real(null),
         detail = strcat('error ', tostring(toint(error_number_d)), ' severity ', tostring(toint(Severity)))""" + _SUMMARY,
}
THRESHOLDS = {
    "lookback_s": 3600,
    "slow_events_warning": 10,  # fewer slow statements an hour is routine on most servers
    "error_events_warning": 10,
    "error_events_critical": 100,
    "examples": 10,
}
_LITERAL_PASSWORD = re.compile(r"(?i)(password\s*(?:=|to)?\s*)'[^']*'")


def kql_for(resource_id: str) -> str | None:
    parsed = parse_resource_id(resource_id)
    template = KQL.get(parsed[1].lower()) if parsed else None
    # parse_resource_id admits no quote, so the id is safe inside the KQL string literal.
    return template.replace("{rid}", resource_id) if template else None


def _scrub(text: Any) -> str:
    return redact(_LITERAL_PASSWORD.sub(r"\1'***'", str(text or "")))[:300]


def _group(row: Mapping[str, Any]) -> dict[str, Any]:
    last = row.get("last_seen")
    return {"detail": _scrub(row.get("detail")), "events": int(row.get("events") or 0),
            "max_duration_ms": row.get("max_duration_ms"),
            "last_seen": last.isoformat() if hasattr(last, "isoformat") else last,
            "example": _scrub(row.get("example"))}


def _finding(kind: str, groups: list[dict[str, Any]], t: Mapping[str, Any], evidence: Mapping[str, Any]) -> Finding | None:
    total = sum(g["events"] for g in groups)
    hours = t["lookback_s"] / 3600
    if kind == "slow":
        if total < t["slow_events_warning"]:
            return None
        return Finding(
            check="slow_queries_logged", object="logs:slow_queries", severity=Severity.warning,
            title=f"{total} slow statements logged in the last {hours:g} h ({len(groups)} distinct)",
            details={"events": total, "top": groups[: t["examples"]], **evidence},
            recommendation="EXPLAIN (ANALYZE, BUFFERS) the top statements on a replica or in a maintenance "
                           "window and add the missing index or rewrite; an index build on a busy table "
                           "should use CREATE INDEX CONCURRENTLY (PostgreSQL) or ALGORITHM=INPLACE (MySQL).")
    if total < t["error_events_warning"]:
        return None
    return Finding(
        check="errors_logged", object="logs:errors",
        severity=Severity.critical if total >= t["error_events_critical"] else Severity.warning,
        title=f"{total} errors logged in the last {hours:g} h ({len(groups)} distinct)",
        details={"events": total, "top": groups[: t["examples"]], **evidence},
        recommendation="Read the top error groups: authentication failures point at a client with a stale "
                       "password, deadlocks and serialization failures at transaction ordering, out-of-space "
                       "or connection-limit errors at capacity. Fix the most frequent first.")


def transform(rows: Sequence[Mapping[str, Any]], ctx: Context) -> Result:
    """rows: the KQL summary (kind, detail, events, last_seen, max_duration_ms, example)."""
    t = ctx.thresholds
    by_kind: dict[str, list[dict[str, Any]]] = {"slow": [], "error": []}
    for row in rows:
        if row.get("kind") in by_kind:
            by_kind[row["kind"]].append(_group(row))
    evidence = {"source": "Log Analytics", "workspace_id": (ctx.extra.get("cloud") or {}).get("workspace_id"),
                "kql": ctx.extra.get("kql", "")}
    result = Result(samples=[Sample("slow_statements_logged", float(sum(g["events"] for g in by_kind["slow"]))),
                             Sample("errors_logged", float(sum(g["events"] for g in by_kind["error"])))])
    for kind, groups in by_kind.items():
        groups.sort(key=lambda g: -g["events"])
        if (found := _finding(kind, groups, t, evidence)) is not None:
            result.findings.append(found)
    return result


async def run(conn: AzureConnection, ctx: Context) -> Result:
    kql = kql_for(conn.resource_id)
    if not conn.workspace_id or kql is None:
        return Result(state={"skipped": "no Log Analytics workspace configured"})
    t = ctx.thresholds
    end = ctx.now
    rows = await conn.logs(kql, end - timedelta(seconds=int(t["lookback_s"])), end)
    ctx.extra.setdefault("cloud", conn.identity)
    ctx.extra["kql"] = kql
    return transform(rows, ctx)


SPEC = register(CollectorSpec(
    name="azure_logs",
    engine="azure",
    description="Slow statements and errors from the server's diagnostic logs in Log Analytics",
    run=run,
    transform=transform,
    interval_s=900,
    timeout_s=60,
    thresholds=THRESHOLDS,
    scope=Scope.server,
))
