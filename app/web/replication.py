"""The instance page's replication: the detected set (app/topology.py, as GET /api/v1/topology
shows it) laid out as a small diagram, and each standby's lag history from the stored samples."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 190, 40, 70, 16, 8

_LAG = """
select i.name as instance, s.object as standby, extract(epoch from s.ts)::bigint as t, s.value
from samples s join instances i on i.id = s.instance_id
where s.instance_id = any($1::int[]) and s.metric = 'replication_lag_seconds' and s.ts >= $2
order by i.name, s.object, s.ts
"""


def diagram(members: list[dict[str, Any]], me: str) -> dict[str, Any]:
    """Boxes by depth from the set's root (primary left, its standbys to the right) and one
    arrow per standby from its upstream: coordinates for an SVG the template draws."""
    by_name = {m["instance"]: m for m in members}

    def depth(m: dict[str, Any]) -> int:
        seen, d = {m["instance"]}, 0
        while (up := by_name.get(m.get("upstream") or "")) and up["instance"] not in seen:
            seen.add(up["instance"])
            m, d = up, d + 1
        return d

    columns: dict[int, list[dict[str, Any]]] = {}
    for m in sorted(members, key=lambda m: (m["role"] != "primary", m["instance"])):
        columns.setdefault(depth(m), []).append(m)
    nodes = {}
    for d, col in columns.items():
        for row, m in enumerate(col):
            nodes[m["instance"]] = {**m, "x": PAD + d * (BOX_W + GAP_X), "y": PAD + row * (BOX_H + GAP_Y),
                                    "me": m["instance"] == me}
    edges = [{"x1": up["x"] + BOX_W, "y1": up["y"] + BOX_H / 2, "x2": n["x"], "y2": n["y"] + BOX_H / 2,
              "streaming": n.get("streaming") is not False and n["reachable"], "standby": n["instance"],
              "upstream": up["instance"]}
             for n in nodes.values() if (up := nodes.get(n.get("upstream") or ""))]
    width = PAD * 2 + max((n["x"] for n in nodes.values()), default=0) + BOX_W
    height = PAD * 2 + max((n["y"] for n in nodes.values()), default=0) + BOX_H
    return {"nodes": list(nodes.values()), "edges": edges, "width": width, "height": height, "box_w": BOX_W,
            "box_h": BOX_H}


async def lag_history(conn, instance_ids: list[int], window: timedelta) -> list[dict[str, Any]]:
    """Per standby (as each member reported it): [[epoch seconds...], [lag seconds...]] for uPlot."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    since = datetime.now(timezone.utc) - window
    for r in await conn.fetch(_LAG, instance_ids, since):
        series = out.setdefault((r["instance"], r["standby"]), {
            "instance": r["instance"], "standby": r["standby"], "cols": [[], []]})
        series["cols"][0].append(r["t"])
        series["cols"][1].append(round(r["value"], 3))
    return list(out.values())
