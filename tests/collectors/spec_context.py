"""A Context as the sweep builds it, for tests that call a transform or run hook directly.

The runner merges a collector's thresholds once (app/run_context.merged_thresholds: the spec's
defaults first, then config and overrides), so transforms read ctx.thresholds as they are. A test
gives only the thresholds it changes; this puts the spec's defaults under them the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collectors.registry import specs_for
from collectors.spec import CollectorSpec, Context


def spec_named(engine: str, name: str) -> CollectorSpec:
    return next(s for s in specs_for(engine) if s.name == name)


def merged(spec: CollectorSpec, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Spec defaults < the test's overrides, as merged_thresholds orders them."""
    return {**spec.thresholds, **(overrides or {})}


def spec_context(spec: CollectorSpec, *args: Any, thresholds: Mapping[str, Any] | None = None, **kw: Any) -> Context:
    """Context(*args, **kw) with the spec's default thresholds under `thresholds`."""
    return Context(*args, thresholds=merged(spec, thresholds), **kw)
