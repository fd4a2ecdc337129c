"""Who blocks whom, engine-neutral: sessions with their blockers' ids -> nested lock trees, findings.

Each engine reads its own catalog (pg_blocking_pids(), INNODB_LOCK_WAITS, data_lock_waits) into
session dicts with `session_id`, `blocked_by` (ids) and `wait_s`; this module only does the graph.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from collectors.spec import Finding, Sample, Severity

# Enough to recognise a statement in a console or an alert, short enough that a 100 kB ORM query
# does not bloat every stored finding.
QUERY_TEXT_CHARS = 1000


def cap_query(text: str | None, limit: int = QUERY_TEXT_CHARS) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit] + "…"


def lock_trees(sessions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Nested trees {session..., "blocked": [...]} rooted at sessions that block but wait on no one."""
    by_id = {s["session_id"]: s for s in sessions}
    waiters: dict[Any, list[Any]] = {}
    for s in sessions:
        for blocker in s.get("blocked_by") or ():
            waiters.setdefault(blocker, []).append(s["session_id"])
    # A root waits on nobody we can see; a deadlock cycle has none, so its lowest id stands in.
    roots = [b for b in waiters if not (by_id.get(b) or {}).get("blocked_by")]
    if not roots and waiters:
        roots = [min(waiters)]
    return [_subtree(r, by_id, waiters, set()) for r in sorted(roots)]


def _subtree(sid: Any, by_id: Mapping[Any, Mapping[str, Any]], waiters: Mapping[Any, list[Any]],
             seen: set[Any]) -> dict[str, Any]:
    seen.add(sid)
    node = dict(by_id.get(sid) or {"session_id": sid})
    node["blocked"] = [_subtree(w, by_id, waiters, seen) for w in sorted(waiters.get(sid, ())) if w not in seen]
    return node


def tree_members(tree: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every session below the root (the root excluded), depth first."""
    out: list[Mapping[str, Any]] = []
    for child in tree.get("blocked", ()):
        out.append(child)
        out += tree_members(child)
    return out


def blocking_findings(sessions: Sequence[Mapping[str, Any]], min_wait_s: float, kill_hint: str,
                      sql: str = "") -> list[Finding]:
    """One blocking_chain per root whose tree holds a session waiting at least min_wait_s; kill_hint
    is formatted with the root's id and its session's fields (Oracle's serial); sql shows the waits."""
    out = []
    for tree in lock_trees(sessions):
        members = tree_members(tree)
        longest = max((float(m.get("wait_s") or 0) for m in members), default=0.0)
        if longest < min_wait_s:
            continue
        root = tree["session_id"]
        out.append(Finding(
            check="blocking_chain", object=f"{tree.get('database') or ''}:{root}",
            severity=Severity.critical if len(members) > 1 or longest >= 10 * min_wait_s else Severity.warning,
            title=f"Session {root} blocks {len(members)} session(s), the longest waiting {longest:,.0f} s",
            details={"tree": tree, "blocked_sessions": len(members), "longest_wait_s": round(longest, 1)}
            | ({"sql": sql} if sql else {}),
            recommendation="Find out what the root session is doing (its application and last query below): "
                           "an idle-in-transaction root is a client that forgot to commit. If it must go: "
                           f"{kill_hint.format_map({**tree, 'id': root})}",
        ))
    return out


def wait_samples(sessions: Sequence[Mapping[str, Any]]) -> list[Sample]:
    """Active sessions counted per wait class and event ("CPU" when waiting on nothing)."""
    counts = Counter(f"{s.get('wait_class') or 'CPU'}:{s.get('wait_event') or 'CPU'}"
                     for s in sessions if s.get("active"))
    return [Sample("wait_event_sessions", float(n), key) for key, n in sorted(counts.items())]
