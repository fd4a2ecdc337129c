"""The registry of collector specs: a dict, filled by importing the engine packages."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from collectors.spec import CollectorSpec

if TYPE_CHECKING:  # collectors.common.maintenance imports the adapters' base, which imports this module
    from collectors.common.maintenance import MaintenanceSpec

_SPECS: dict[tuple[str, str], CollectorSpec] = {}
_MAINTENANCE: dict[str, MaintenanceSpec] = {}

# Engine families: an aurora-postgres instance runs the postgres collectors, and so on.
ENGINE_FAMILY = {
    "postgres": "postgres",
    "aurora-postgres": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "aurora-mysql": "mysql",
    "sqlserver": "sqlserver",
    "oracle": "oracle",
}
# Cloud families read the provider's monitoring API about an instance, not the instance itself.
CLOUD_FAMILIES = ("aws", "azure")
FAMILIES = frozenset(ENGINE_FAMILY.values()) | frozenset(CLOUD_FAMILIES)
_PACKAGES = ("postgres", "mysql", "sqlserver", "oracle", "cloud")
_loaded = False


def register(spec: CollectorSpec) -> CollectorSpec:
    key = (spec.engine, spec.name)
    if key in _SPECS and _SPECS[key] is not spec:
        raise ValueError(f"collector {spec.engine}/{spec.name} registered twice")
    _SPECS[key] = spec
    return spec


def register_maintenance(spec: MaintenanceSpec) -> MaintenanceSpec:
    """An engine family's partition maintenance (plan / apply), one per family."""
    if spec.engine in _MAINTENANCE and _MAINTENANCE[spec.engine] is not spec:
        raise ValueError(f"partition maintenance for {spec.engine} registered twice")
    _MAINTENANCE[spec.engine] = spec
    return spec


def maintenance_for(engine: str) -> MaintenanceSpec | None:
    """The partition maintenance of an inventory engine's family, None where it has none."""
    _load()
    return _MAINTENANCE.get(ENGINE_FAMILY.get(engine, engine))


def _load() -> None:
    global _loaded
    if not _loaded:
        for pkg in _PACKAGES:
            importlib.import_module(f"collectors.{pkg}")
        _loaded = True


def all_specs() -> list[CollectorSpec]:
    _load()
    return list(_SPECS.values())


def specs_for(engine: str, version: int | None = None) -> list[CollectorSpec]:
    """Specs for an inventory engine name; with a version, only those whose SQL fits it."""
    _load()
    family = ENGINE_FAMILY.get(engine, engine)
    out = []
    for spec in _SPECS.values():
        if spec.engine != family:
            continue
        if version is not None and spec.sql and min(spec.sql) > version:
            continue
        out.append(spec)
    return out


def collector_names() -> list[str]:
    return sorted({s.name for s in all_specs()})
