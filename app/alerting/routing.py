"""The routing tree (Alertmanager dispatch/route.go): children inherit their parent's options,
the first matching child wins unless it says `continue`, an alert no child takes stays at the parent."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Mapping

from app.alerting.config import AlertingConfig, RouteConfig
from app.alerting.matchers import Matcher, matches_all, parse_matchers

DEFAULT_GROUP_WAIT = timedelta(seconds=30)
DEFAULT_GROUP_INTERVAL = timedelta(minutes=5)
DEFAULT_REPEAT_INTERVAL = timedelta(hours=4)


@dataclass
class Route:
    id: str  # the path in the tree ("0", "0.1", "0.1.0"): stable while the config is
    receiver: str
    matchers: list[Matcher]
    continue_: bool
    group_by: list[str] | None  # None = one group per route; ["..."] = every label
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta
    mute_time_intervals: list[str]
    active_time_intervals: list[str]
    routes: list[Route] = field(default_factory=list)

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes that take this alert (depth first); empty if this route does not match."""
        if not matches_all(self.matchers, labels):
            return []
        taken: list[Route] = []
        for child in self.routes:
            hits = child.match(labels)
            taken += hits
            if hits and not child.continue_:
                break
        return taken or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        if self.group_by is None:
            return {}
        if "..." in self.group_by:
            return dict(labels)
        return {k: str(labels[k]) for k in self.group_by if k in labels}

    def group_key(self, labels: Mapping[str, str]) -> str:
        """Unique per (route, group label values); the receiver is part of it via the route."""
        return f"{self.id}:{json.dumps(self.group_labels(labels), sort_keys=True, separators=(',', ':'))}"

    def walk(self) -> list[Route]:
        return [self, *(r for child in self.routes for r in child.walk())]


def _build(cfg: RouteConfig, parent: Route | None, route_id: str) -> Route:
    def pick(name: str, default):
        own = getattr(cfg, name)
        if own is not None:
            return own
        return getattr(parent, name) if parent is not None else default

    route = Route(
        id=route_id,
        receiver=pick("receiver", "null"),
        matchers=parse_matchers(cfg.matchers),
        continue_=cfg.continue_,
        group_by=pick("group_by", None),
        group_wait=pick("group_wait", DEFAULT_GROUP_WAIT),
        group_interval=pick("group_interval", DEFAULT_GROUP_INTERVAL),
        repeat_interval=pick("repeat_interval", DEFAULT_REPEAT_INTERVAL),
        # Alertmanager does not inherit time intervals: each route names its own.
        mute_time_intervals=list(cfg.mute_time_intervals),
        active_time_intervals=list(cfg.active_time_intervals),
    )
    route.routes = [_build(child, route, f"{route_id}.{i}") for i, child in enumerate(cfg.routes)]
    return route


class RoutingTree:
    def __init__(self, config: AlertingConfig):
        self.root = _build(config.route, None, "0")
        self.by_id = {r.id: r for r in self.root.walk()}

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        return self.root.match(labels)

    def receivers(self, labels: Mapping[str, str]) -> list[str]:
        seen: list[str] = []
        for r in self.match(labels):
            if r.receiver not in seen:
                seen.append(r.receiver)
        return seen
