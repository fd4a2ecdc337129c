"""dbt interop: source freshness (and models with freshness) from a dbt YAML file as dbfleet checks.

dbt's rules carry over as written: warn_after / error_after ({count, period}), loaded_at_field
(or loaded_at_query), the freshness filter, set on the source and overridden per table
(`freshness: null` on a table turns it off there). Each dbt source is mapped to an inventory
entry with `--map KEY=INSTANCE`, KEY being the source's name, its database.schema, or its schema.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from collectors.quality.checks import ROUTING_LABELS

_FRESHNESS_KEYS = ("warn_after", "error_after", "filter")


def parse_mapping(items: list[str]) -> dict[str, str]:
    """['shop=shop-db', 'raw.erp=erp-db'] -> {key: instance}; ValueError names the bad item."""
    out = {}
    for item in items:
        key, sep, instance = item.partition("=")
        if not sep or not key.strip() or not instance.strip():
            raise ValueError(f"--map {item!r} must be SOURCE_OR_DB.SCHEMA=INSTANCE")
        out[key.strip().lower()] = instance.strip()
    return out


def check_name(*parts: str) -> str:
    """A dbfleet check name from dbt names: letters, digits and _, at most 56 characters."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(["dbt", *parts])).strip("_.-")
    return name[:56]


def _duration(value: Any) -> dict[str, Any] | None:
    if not value or value.get("count") is None:
        return None
    return {"count": int(value["count"]), "period": str(value["period"])}


def _labels(source_name: str, *metas: Any) -> dict[str, str]:
    labels = {"source": source_name}
    for meta in metas:
        for key in ROUTING_LABELS:
            if isinstance(meta, dict) and isinstance(meta.get(key), str):
                labels[key] = meta[key]
    return labels


def _instance(mapping: dict[str, str], *keys: str | None) -> str | None:
    for key in keys:
        if key and key.lower() in mapping:
            return mapping[key.lower()]
    return None


def _check(name: str, instance: str, table: str, freshness: dict[str, Any], loaded_at_field: str | None,
           loaded_at_query: str | None, labels: dict[str, str], description: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "kind": "freshness", "instances": [instance], "tables": [table],
                           "labels": labels, "description": (description or "")[:1000]}
    for key in ("warn_after", "error_after"):
        if (d := _duration(freshness.get(key))) is not None:
            out[key] = d
    if freshness.get("filter"):
        out["filter"] = str(freshness["filter"])
    if loaded_at_query:
        out["loaded_at_query"] = loaded_at_query
        del out["tables"]
    else:
        out["loaded_at_field"] = loaded_at_field
    return out


def _effective(source_fresh: Any, table: dict[str, Any]) -> dict[str, Any] | None:
    """A table's freshness: the source's, with the table's own keys over it (as dbt merges them);
    `freshness: null` on the table turns it off there."""
    if "freshness" in table and table["freshness"] is None:
        return None
    fresh = {**(source_fresh or {}), **(table.get("freshness") or {})}
    if not fresh or not any(fresh.get(k) for k in ("warn_after", "error_after")):
        return None
    return fresh


def checks_from_dbt(doc: Any, mapping: dict[str, str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The check dicts a dbt sources/models file declares, and what could not be imported."""
    checks: list[dict[str, Any]] = []
    problems: list[str] = []
    if not isinstance(doc, dict):
        return [], ["not a dbt YAML file (expected a mapping with sources: or models:)"]
    for i, src in enumerate(doc.get("sources") or []):
        name = src.get("name")
        if not name:
            problems.append(f"sources[{i}]: no name")
            continue
        schema = src.get("schema") or name  # dbt's default: the schema is the source's name
        database = src.get("database")
        instance = _instance(mapping, name, f"{database}.{schema}" if database else None, schema, database)
        fresh_tables = [(t, f) for t in src.get("tables") or [] if (f := _effective(src.get("freshness"), t))]
        if fresh_tables and instance is None:
            keys = " or ".join(k for k in (name, f"{database}.{schema}" if database else None, schema) if k)
            problems.append(f"source {name}: no --map for {keys}")
            continue
        for table, fresh in fresh_tables:
            field = table.get("loaded_at_field") or src.get("loaded_at_field")
            query = table.get("loaded_at_query") or src.get("loaded_at_query")
            if not field and not query:
                problems.append(f"source {name}, table {table.get('name')}: no loaded_at_field (metadata-based "
                                f"freshness is not imported)")
                continue
            ident = table.get("identifier") or table["name"]
            checks.append(_check(check_name(name, table["name"]), instance, f"{schema}.{ident}", fresh, field, query,
                                 _labels(name, src.get("meta"), table.get("meta")), table.get("description", "")))
    for i, model in enumerate(doc.get("models") or []):
        config = model.get("config") or {}
        fresh = model.get("freshness") or config.get("freshness")
        field = model.get("loaded_at_field") or config.get("loaded_at_field")
        if not fresh or not any(fresh.get(k) for k in ("warn_after", "error_after")):
            continue
        name, schema = model.get("name"), config.get("schema") or model.get("schema")
        instance = _instance(mapping, name, f"{config.get('database')}.{schema}", schema)
        if instance is None or not field:
            problems.append(f"models[{i}] {name}: " + ("no --map for it" if instance is None else "no loaded_at_field"))
            continue
        checks.append(_check(check_name("model", name), instance, f"{schema}.{name}" if schema else name, fresh,
                             field, None, _labels(config.get("meta", {}).get("source") or name, model.get("meta")),
                             model.get("description", "")))
    return checks, problems


def load_dbt_file(text: str, mapping: dict[str, str]) -> tuple[list[dict[str, Any]], list[str]]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [], [f"not valid YAML: {e}"]
    return checks_from_dbt(doc, mapping)
