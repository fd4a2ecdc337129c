"""API test helpers: Authorization headers per role, and findings planted through the write path."""

from __future__ import annotations

import pytest


@pytest.fixture
def auth(keys: dict[str, str]) -> dict[str, dict[str, str]]:
    """{'viewer': {...headers...}, 'operator': ..., 'admin': ...}."""
    return {role: {"Authorization": f"Bearer {key}"} for role, key in keys.items()}
