"""The catalogue: every registered collector spec is well-formed (walks the whole registry)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import pytest

from collectors.registry import FAMILIES, all_specs, specs_for
from collectors.spec import CollectorSpec, Context, NodeRole, Result

SPECS = all_specs()
IDS = [f"{s.engine}/{s.name}" for s in SPECS]


def test_registry_is_not_empty_and_has_postgres_health():
    assert ("postgres", "health") in {(s.engine, s.name) for s in SPECS}


def test_engine_and_name_are_unique():
    counts = Counter((s.engine, s.name) for s in SPECS)
    assert [k for k, n in counts.items() if n > 1] == []


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_spec_is_well_formed(spec: CollectorSpec):
    assert spec.engine in FAMILIES
    assert spec.name and spec.name == spec.name.strip() and " " not in spec.name
    assert len(spec.description.strip()) >= 10, "a one-line description a DBA can read"
    assert "\n" not in spec.description
    assert spec.sql or spec.run is not None, "needs SQL or a run hook"
    for version, sql in spec.sql.items():
        assert type(version) is int and version > 0
        assert isinstance(sql, str) and sql.strip()
    assert spec.interval_s > 0 and spec.timeout_s > 0
    assert spec.timeout_s <= spec.interval_s, "a run must end before the next one is due"
    assert isinstance(spec.role, NodeRole)
    assert isinstance(spec.thresholds, Mapping)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_transform_accepts_an_empty_result(spec: CollectorSpec):
    result = spec.transform([], Context(instance="x", engine=spec.engine, thresholds=dict(spec.thresholds)))
    assert isinstance(result, Result)
    assert result.findings == []


@pytest.mark.parametrize("spec", [s for s in SPECS if s.sql], ids=[i for s, i in zip(SPECS, IDS) if s.sql])
def test_sql_for_every_key_and_between(spec: CollectorSpec):
    keys = sorted(spec.sql)
    for i, key in enumerate(keys):
        assert spec.sql_for(key) == spec.sql[key]
        upper = keys[i + 1] - 1 if i + 1 < len(keys) else key * 10
        assert spec.sql_for(upper) == spec.sql[key]
    with pytest.raises(ValueError, match=spec.name):
        spec.sql_for(keys[0] - 1)


SQL = {90600: "v96", 120000: "v12", 150000: "v15"}


@pytest.mark.parametrize("version, expected", [
    (90600, "v96"), (100000, "v96"), (119999, "v96"), (120000, "v12"), (140011, "v12"), (150000, "v15"),
    (180001, "v15"),
])
def test_sql_for_picks_the_closest_lower_key(version: int, expected: str):
    spec = CollectorSpec(name="probe", engine="postgres", description="a probe for sql_for", sql=SQL)
    assert spec.sql_for(version) == expected


@pytest.mark.parametrize("version", [0, 90500, 90599])
def test_sql_for_refuses_a_server_that_is_too_old(version: int):
    spec = CollectorSpec(name="probe", engine="postgres", description="a probe for sql_for", sql=SQL)
    with pytest.raises(ValueError, match=r"probe needs postgres version >= 90600, server is " + str(version)):
        spec.sql_for(version)


def test_specs_for_maps_engines_to_families_and_filters_by_version():
    pg = {s.name for s in specs_for("postgres")}
    assert pg == {s.name for s in specs_for("aurora-postgres")}
    assert "health" in pg
    assert all(s.engine == "postgres" for s in specs_for("aurora-postgres"))
    # Nothing requiring a newer server is offered to an old one.
    old = specs_for("postgres", 90600)
    assert all(not s.sql or min(s.sql) <= 90600 for s in old)
    assert {s.name for s in old} < pg


@pytest.mark.parametrize("role, standby, applies", [
    (NodeRole.any, False, True), (NodeRole.any, True, True), (NodeRole.primary, False, True),
    (NodeRole.primary, True, False), (NodeRole.standby, True, True), (NodeRole.standby, False, False),
])
def test_applies_to_node_role(role: NodeRole, standby: bool, applies: bool):
    spec = CollectorSpec(name="probe", engine="postgres", description="a probe for roles", role=role)
    assert spec.applies_to(standby) is applies
