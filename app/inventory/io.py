"""Inventory files: YAML and CSV in, YAML and CSV out. Parsing is all-or-nothing.

Every error names where it is (YAML line, CSV row) and which field is wrong, so a DBA fixing a
500-line file sees every problem at once instead of one per attempt.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

import yaml
from pydantic import ValidationError

from app.inventory.credentials import configured_allow_list, refusal
from app.inventory.schemas import InstanceIn
from app.settings import CredentialSettings

CSV_COLUMNS = ["name", "engine", "host", "port", "dbname", "user", "credential", "tls_mode", "tags", "enabled",
               "overrides"]


class InventoryFileError(ValueError):
    """The file is not a valid inventory; `errors` lists every problem found."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__(f"{len(errors)} problem(s) in inventory file:\n" + "\n".join(f"  {e}" for e in errors))


def _field_errors(where: str, exc: ValidationError) -> list[str]:
    return [f"{where}: {'.'.join(str(p) for p in err['loc']) or 'item'}: {err['msg']}" for err in exc.errors()]


def _validate(items: Iterable[tuple[str, Any]], allowed: CredentialSettings | None) -> list[InstanceIn]:
    """Every item checked, credentials against the allow-list (`allowed`, else the process's settings)."""
    allowed = allowed or configured_allow_list()
    out, errors, names = [], [], {}
    for where, raw in items:
        if not isinstance(raw, dict):
            errors.append(f"{where}: expected a mapping of instance fields, got {type(raw).__name__}")
            continue
        try:
            inst = InstanceIn.model_validate(raw)
        except ValidationError as e:
            errors.extend(_field_errors(where, e))
            continue
        if reason := refusal(inst.credential, allowed):
            errors.append(f"{where}: credential: {reason}")
        if inst.name in names:
            errors.append(f"{where}: name: duplicate name {inst.name!r} (also at {names[inst.name]})")
            continue
        names[inst.name] = where
        out.append(inst)
    if errors:
        raise InventoryFileError(errors)
    return out


def parse_yaml(text: str, allowed: CredentialSettings | None = None) -> list[InstanceIn]:
    """A YAML list of instances, or a mapping with an `instances:` list."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        # Lead with the line like every other error, then the parser's own words.
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "line 1"
        raise InventoryFileError([f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}"]) from None
    if root is None:
        return []
    if isinstance(root, yaml.MappingNode) and isinstance(data, dict) and set(data) == {"instances"}:
        root = next(v for k, v in root.value if k.value == "instances")
        data = data["instances"]
    if not isinstance(data, list) or not isinstance(root, yaml.SequenceNode):
        raise InventoryFileError(["line 1: expected a list of instances (or 'instances:' holding one)"])
    return _validate(((f"line {node.start_mark.line + 1}", item) for node, item in zip(root.value, data)), allowed)


def _csv_row(row: dict[str, str | None]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
    if "tags" in out:
        pairs = [p for p in out["tags"].split(";") if p.strip()]
        bad = [p for p in pairs if "=" not in p]
        if bad:
            raise ValueError(f"tags: {bad[0]!r} is not key=value (use k=v;k=v)")
        out["tags"] = dict(p.strip().split("=", 1) for p in pairs)
    if "enabled" in out:
        value = out["enabled"].strip().lower()
        if value not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"enabled: {out['enabled']!r} is not true/false")
        out["enabled"] = value in ("true", "1", "yes")
    if "overrides" in out:
        try:
            out["overrides"] = json.loads(out["overrides"])
        except json.JSONDecodeError:
            raise ValueError("overrides: not valid JSON") from None
    return out


def parse_csv(text: str, allowed: CredentialSettings | None = None) -> list[InstanceIn]:
    """CSV with the export's header row; tags as k=v;k=v."""
    # Spreadsheets save "CSV UTF-8" with a byte-order mark, which would otherwise glue onto "name".
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
    unknown = [c for c in (reader.fieldnames or []) if c not in CSV_COLUMNS]
    if not reader.fieldnames or "name" not in reader.fieldnames:
        raise InventoryFileError(["row 1: header must include at least name, engine, host"])
    if unknown:
        raise InventoryFileError([f"row 1: unknown column(s) {', '.join(unknown)}; known: {', '.join(CSV_COLUMNS)}"])
    items, errors = [], []
    for n, row in enumerate(reader, start=2):
        if None in row:
            errors.append(f"row {n}: more fields than the header has columns")
            continue
        try:
            items.append((f"row {n}", _csv_row(row)))
        except ValueError as e:
            errors.append(f"row {n}: {e}")
    try:
        parsed = _validate(items, allowed)
    except InventoryFileError as e:
        errors.extend(e.errors)
    if errors:
        raise InventoryFileError(errors)
    return parsed


def parse(text: str, fmt: str, allowed: CredentialSettings | None = None) -> list[InstanceIn]:
    if fmt == "yaml":
        return parse_yaml(text, allowed)
    if fmt == "csv":
        return parse_csv(text, allowed)
    raise InventoryFileError([f"unknown format {fmt!r}: use yaml or csv"])


def format_for(filename: str, content_type: str = "") -> str:
    if filename.endswith(".csv") or "csv" in content_type:
        return "csv"
    return "yaml"


def _exported(inst: Any) -> dict[str, Any]:
    data = InstanceIn(
        name=inst.name, engine=inst.engine, host=inst.host, port=inst.port, dbname=inst.dbname, user=inst.user,
        credential=inst.credential, tls_mode=inst.tls_mode, tags=inst.tags, enabled=inst.enabled,
        overrides=inst.overrides,
    ).model_dump(exclude_defaults=True)
    data.setdefault("port", inst.port)
    return data


def dump_yaml(instances: Iterable[Any]) -> str:
    return yaml.safe_dump({"instances": [_exported(i) for i in instances]}, sort_keys=False)


def dump_csv(instances: Iterable[Any]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for inst in instances:
        data = _exported(inst)
        data["tags"] = ";".join(f"{k}={v}" for k, v in data.get("tags", {}).items())
        data["overrides"] = json.dumps(data["overrides"]) if data.get("overrides") else ""
        data["enabled"] = str(data.get("enabled", True)).lower()
        writer.writerow({c: data.get(c, "") for c in CSV_COLUMNS})
    return buf.getvalue()
