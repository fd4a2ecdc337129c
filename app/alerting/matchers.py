"""Label matchers in Alertmanager's syntax: name=value, name!=value, name=~regex, name!~regex."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

# Longest operators first so "=~" is not read as "=" followed by "~value".
_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$')
OPS = ("=", "!=", "=~", "!~")


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str
    _regex: re.Pattern | None = field(default=None, compare=False, repr=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        # A missing label matches as the empty string, as in Alertmanager.
        actual = str(labels.get(self.name, ""))
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = self._regex.fullmatch(actual) is not None  # anchored, like Prometheus regexes
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def parse_matcher(text: str) -> Matcher:
    """Parse `name op value`; the value may be double-quoted. Raises ValueError with the reason."""
    m = _MATCHER.match(text)
    if not m:
        raise ValueError(f"bad matcher {text!r}: expected name=value, name!=value, name=~re or name!~re")
    name, op, value = m.groups()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"')
    regex = None
    if op in ("=~", "!~"):
        try:
            regex = re.compile(value)
        except re.error as e:
            raise ValueError(f"bad regex in matcher {text!r}: {e}") from None
    return Matcher(name, op, value, regex)


def parse_matchers(texts: list[str]) -> list[Matcher]:
    return [parse_matcher(t) for t in texts]


def matches_all(matchers: list[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def equality_subset(matchers: list[Matcher]) -> dict[str, str]:
    """The `=` matchers as a dict, for a jsonb containment pre-filter in SQL."""
    return {m.name: m.value for m in matchers if m.op == "=" and m.value != ""}
