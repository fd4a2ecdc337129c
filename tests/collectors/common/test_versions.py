"""The one version-key lookup (CollectorSpec.sql_for, MySQL snapshots and PostgreSQL replication use it)."""

from __future__ import annotations

import pytest

from collectors.common.versions import closest_lower, closest_lower_or_raise

SQL = {90600: "v96", 150000: "v15", 120000: "v12"}   # keys out of order on purpose


@pytest.mark.parametrize(("version", "expected"), [
    (90599, None), (90600, "v96"), (119999, "v96"), (120000, "v12"), (149999, "v12"), (150000, "v15"),
    (180001, "v15"),
])
def test_closest_lower_key(version: int, expected: str | None):
    assert closest_lower(SQL, version) == expected


def test_too_old_a_server_is_an_error_naming_what_needs_it():
    with pytest.raises(ValueError, match="the slots query needs postgres version >= 90600, server is 90500"):
        closest_lower_or_raise(SQL, 90500, "the slots query needs postgres")
    assert closest_lower({}, 150000) is None
