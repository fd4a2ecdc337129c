"""Inhibit stage: a firing source alert mutes target alerts that share the `equal` labels
(e.g. instance_unreachable mutes every other alert on that instance). An alert never inhibits itself."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Mapping

import asyncpg

from app import store_codec
from app.alerting.config import InhibitRule
from app.alerting.matchers import Matcher, equality_subset, matches_all, parse_matchers


class Inhibitor:
    def __init__(self, rules: list[InhibitRule]):
        self.rules: list[tuple[list[Matcher], list[Matcher], list[str]]] = [
            (parse_matchers(r.source_matchers), parse_matchers(r.target_matchers), r.equal) for r in rules]
        # Per rule: the `equal` label values of firing sources -> their fingerprints.
        self.sources: list[dict[tuple[str, ...], set[str]]] = [defaultdict(set) for _ in self.rules]

    def add_source(self, fingerprint: str, labels: Mapping[str, str]) -> None:
        for i, (source, _, equal) in enumerate(self.rules):
            if matches_all(source, labels):
                self.sources[i][tuple(str(labels.get(k, "")) for k in equal)].add(fingerprint)

    def inhibited_by(self, fingerprint: str, labels: Mapping[str, str]) -> list[str]:
        by: set[str] = set()
        for i, (_, target, equal) in enumerate(self.rules):
            if not matches_all(target, labels):
                continue
            by |= self.sources[i].get(tuple(str(labels.get(k, "")) for k in equal), set()) - {fingerprint}
        return sorted(by)

    async def load(self, conn: asyncpg.Connection) -> Inhibitor:
        """Read the firing alerts that can be sources, narrowed in SQL by each rule's `=` matchers."""
        for source, _, _ in self.rules:
            rows = await conn.fetch(
                "select fingerprint, labels from alerts where status = 'firing' and labels @> $1::jsonb",
                json.dumps(equality_subset(source)))
            for r in rows:
                labels: Any = r["labels"]
                self.add_source(r["fingerprint"], store_codec.decoded(labels))
        return self
