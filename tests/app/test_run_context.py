"""The run context: every need a spec declares has a provider; thresholds merge in one order."""

from __future__ import annotations

from app.run_context import PROVIDERS
from collectors.registry import all_specs


def test_every_declared_need_has_a_provider():
    declared = {(s.engine, s.name, need) for s in all_specs() for need in s.needs}
    assert declared  # the registry does declare some
    assert {d for d in declared if d[2] not in PROVIDERS} == set()
