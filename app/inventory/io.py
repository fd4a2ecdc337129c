"""Inventory files: YAML and CSV in, YAML and CSV out. Parsing is all-or-nothing.

Every error names where it is (YAML line, CSV row) and which field is wrong, so a DBA fixing a
500-line file sees every problem at once instead of one per attempt.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from app import yaml_file
from app.inventory.credentials import configured_allow_list, refusal
from app.inventory.schemas import (
    DATABASES_FORMS,
    DatabaseIn,
    InstanceIn,
    ServerIn,
    entry_name,
)
from app.settings import CredentialSettings

# csv's default cell limit (128 KiB) fails a whole file with no column named; above it, the
# field's own length check names it. Process-wide, and only ever raised.
csv.field_size_limit(max(csv.field_size_limit(), 16 * 2**20))
CSV_COLUMNS = ["name", "engine", "host", "port", "dbname", "user", "credential", "tls_mode", "tags", "enabled",
               "overrides", "schemas"]


class InventoryFileError(ValueError):
    """The file is not a valid inventory; `errors` lists every problem found."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__(f"{len(errors)} problem(s) in inventory file:\n" + "\n".join(f"  {e}" for e in errors))


@dataclass
class Inventory:
    """A parsed file: servers with their database entries, and instances in the one-level form."""

    servers: list[ServerIn] = field(default_factory=list)
    instances: list[InstanceIn] = field(default_factory=list)
    where: dict[str, str] = field(default_factory=dict)  # server name -> "line N", for the store's errors


def _field_errors(where: str, exc: ValidationError) -> list[str]:
    def path(loc: tuple) -> str:
        return ".".join(str(p) for p in loc if p not in DATABASES_FORMS) or "item"

    return [f"{where}: {path(err['loc'])}: {err['msg']}" for err in exc.errors()]


def _validate(items: Iterable[tuple[str, Any]], allowed: CredentialSettings | None, model: type = InstanceIn,
              names: dict[str, str] | None = None) -> list[Any]:
    """Every item checked, credentials against the allow-list (`allowed`, else the process's settings)."""
    allowed = allowed or configured_allow_list()
    kind = "instance" if model is InstanceIn else "server"
    out, errors, names = [], [], {} if names is None else names
    for where, raw in items:
        if not isinstance(raw, dict):
            errors.append(f"{where}: expected a mapping of {kind} fields, got {type(raw).__name__}")
            continue
        try:
            inst = model.model_validate(raw)
        except ValidationError as e:
            errors.extend(_field_errors(where, e))
            continue
        if reason := refusal(inst.credential, allowed):
            errors.append(f"{where}: credential: {reason}")
        if inst.name in names:
            errors.append(f"{where}: name: duplicate name {inst.name!r} (also at {names[inst.name]})")
            continue
        names[inst.name] = where
        out.append((where, inst))
    if errors:
        raise InventoryFileError(errors)
    return [inst for _, inst in out] if model is InstanceIn else out


def _entry_names(servers: list[tuple[str, ServerIn]], instances: dict[str, str]) -> list[str]:
    """Each server entry's instance name must be free: not another entry's, not a listed instance's."""
    errors, taken = [], dict(instances)
    for where, server in servers:
        for n, entry in enumerate(server.entries()):
            name = entry.name or entry_name(server.name, entry.dbname)
            if name in taken:
                errors.append(f"{where}: databases.{n}: entry name {name!r} is also at {taken[name]}; "
                              "give the entry its own name")
            taken[name] = where
    return errors


def _yaml_lists(text: str) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(instance items, server items), each with its line."""
    try:
        data, lines = yaml_file.load(text)
    except yaml_file.FileTextError as e:
        raise InventoryFileError(e.errors) from None
    if data is None:
        return [], []
    if isinstance(data, list):
        data, lines = {"instances": data}, {("instances", *k): v for k, v in lines.items()}
    elif not isinstance(data, dict) or not data or not set(data) & {"instances", "servers"}:
        raise InventoryFileError(["line 1: expected a list of instances (or 'instances:' and 'servers:' lists)"])
    elif other := [k for k in data if k not in ("instances", "servers")]:
        raise InventoryFileError([f"line {lines.get((k,), 1)}: {k}: unknown key; the file holds 'instances:' and "
                                  "'servers:' lists" for k in other])
    out = []
    for key in ("instances", "servers"):
        items = data.get(key)
        if key in data and not isinstance(items, list):
            raise InventoryFileError([f"line {lines.get((key,), 1)}: {key}: expected a list of {key}"])
        out.append([(f"line {lines.get((key, n), 1)}", item) for n, item in enumerate(items or [])])
    return out[0], out[1]


def parse_inventory_yaml(text: str, allowed: CredentialSettings | None = None) -> Inventory:
    """`servers:` (each with its databases) and `instances:` lists, or a bare list of instances."""
    instance_items, server_items = _yaml_lists(text)
    errors, names = [], {}
    try:
        instances = _validate(instance_items, allowed, InstanceIn, names)
    except InventoryFileError as e:
        errors, instances = e.errors, []
    try:
        servers = _validate(server_items, allowed, ServerIn)
    except InventoryFileError as e:
        errors, servers = errors + e.errors, []
    errors += _entry_names(servers, names)
    if errors:
        raise InventoryFileError(errors)
    return Inventory([s for _, s in servers], instances, {s.name: where for where, s in servers})


def parse_yaml(text: str, allowed: CredentialSettings | None = None) -> list[InstanceIn]:
    """A YAML list of instances, or a mapping with an `instances:` list (servers: parse_inventory)."""
    inventory = parse_inventory_yaml(text, allowed)
    if inventory.servers:
        raise InventoryFileError([f"{inventory.where[inventory.servers[0].name]}: servers: read this file "
                                  "with parse_inventory"])
    return inventory.instances


def read_text(data: bytes) -> str:
    """A file's bytes as text (UTF-8, or UTF-16/32 with its BOM); an error names the line."""
    try:
        return yaml_file.decode(data)
    except yaml_file.FileTextError as e:
        raise InventoryFileError(e.errors) from None


def _csv_row(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in row.items() if v != ""}
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
    if "schemas" in out:
        out["schemas"] = [p.strip() for p in out["schemas"].split(";") if p.strip()]
    return out


def _csv_rows(text: str) -> Iterable[tuple[str, list[str] | str]]:
    """The header, then each row, with where it is: 'row N' (the header is row 1), plus
    '(line L)' when blank lines or a quoted cell spanning lines put its first line elsewhere.
    A row csv cannot read (a cell over its size limit, an unclosed quote) comes as its error."""
    # strict: an unclosed quote is an error, not a cell that silently swallows the rest of the file.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    n = 0
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            row = f"not readable as CSV: {e}"
        if row == []:
            continue
        n += 1
        yield (f"row {n}" if start == n else f"row {n} (line {start})"), row
        if isinstance(row, str):
            return


def parse_csv(text: str, allowed: CredentialSettings | None = None) -> list[InstanceIn]:
    """CSV with the export's header row; tags as k=v;k=v."""
    # Spreadsheets save "CSV UTF-8" with a byte-order mark, which would otherwise glue onto "name".
    rows = _csv_rows(text.removeprefix("\ufeff"))
    where, header = next(rows, ("row 1", []))
    if isinstance(header, str):
        raise InventoryFileError([f"{where}: {header}"])
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if "name" not in header:
        raise InventoryFileError([f"{where}: header must include at least name, engine, host"])
    if unknown:
        raise InventoryFileError([f"{where}: unknown column(s) {', '.join(unknown)}; known: {', '.join(CSV_COLUMNS)}"])
    if twice := sorted({c for c in header if header.count(c) > 1}):
        raise InventoryFileError([f"{where}: column(s) {', '.join(twice)} given twice"])
    items, errors = [], []
    for where, row in rows:
        if isinstance(row, str):
            errors.append(f"{where}: {row}")
        elif len(row) > len(header):
            errors.append(f"{where}: more fields than the header has columns")
        else:
            try:
                items.append((where, _csv_row(dict(zip(header, row)))))
            except ValueError as e:
                errors.append(f"{where}: {e}")
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


def parse_inventory(text: str, fmt: str, allowed: CredentialSettings | None = None) -> Inventory:
    """Either file form: YAML with servers and/or instances, or the instance CSV."""
    if fmt == "yaml":
        return parse_inventory_yaml(text, allowed)
    return Inventory(instances=parse(text, fmt, allowed))


def format_for(filename: str, content_type: str = "") -> str:
    if filename.endswith(".csv") or "csv" in content_type:
        return "csv"
    return "yaml"


def _exported(inst: Any) -> dict[str, Any]:
    data = InstanceIn(
        name=inst.name, engine=inst.engine, host=inst.host, port=inst.port, dbname=inst.dbname, user=inst.user,
        credential=inst.credential, tls_mode=inst.tls_mode, tags=inst.tags, enabled=inst.enabled,
        overrides=inst.overrides, schemas=list(inst.schemas or []),
    ).model_dump(exclude_defaults=True)
    data.setdefault("port", inst.port)
    return data


def _as_entry(server: Any, inst: Any) -> dict[str, Any] | str | None:
    """The `databases:` item that re-imports as this instance, or None if it has a connection or
    tags of its own (it is exported under `instances:`, and re-joins its server by endpoint)."""
    if any(getattr(inst, k) != getattr(server, k) for k in ("engine", "host", "port", "user", "credential", "tls_mode")):
        return None
    if any(inst.tags.get(k) != v for k, v in server.tags.items()) or (inst.enabled and not server.enabled):
        return None
    entry = DatabaseIn(dbname=inst.dbname, name=inst.name, schemas=list(inst.schemas or []), enabled=inst.enabled,
                       tags={k: v for k, v in inst.tags.items() if server.tags.get(k) != v},
                       overrides=inst.overrides).model_dump(exclude_defaults=True)
    if entry.get("name") == entry_name(server.name, inst.dbname) and inst.dbname:
        del entry["name"]
    if entry.get("schemas") and entry.get("dbname") == entry["schemas"][0]:
        del entry["dbname"]
    return entry["dbname"] if set(entry) == {"dbname"} else entry


def _exported_server(server: Any, entries: list[Any]) -> dict[str, Any]:
    data = ServerIn(name=server.name, engine=server.engine, host=server.host, port=server.port, user=server.user,
                    credential=server.credential, tls_mode=server.tls_mode, tags=server.tags,
                    enabled=server.enabled).model_dump(exclude_defaults=True, exclude={"databases"})
    data["port"] = server.port
    if server.databases is not None:
        data["databases"] = {**server.databases, "listed": entries} if entries else dict(server.databases)
    elif entries != [_default_entry(server)]:
        data["databases"] = entries
    return data


def _default_entry(server: Any) -> dict[str, Any] | str:
    """What a server item without `databases:` makes, as exported."""
    default = ServerIn(name=server.name, engine=server.engine, host=server.host).entries()[0]
    return {"dbname": default.dbname, "name": server.name} if default.dbname else {"name": server.name}


def dump_yaml(instances: Iterable[Any], servers: Iterable[Any] | None = None) -> str:
    """The instances form, or with `servers` the servers form: each server with its entries, and
    under `instances:` the entries that connect differently from their server."""
    if servers is None:
        return yaml.safe_dump({"instances": [_exported(i) for i in instances]}, sort_keys=False)
    by_server: dict[int, list[Any]] = {}
    for inst in instances:
        by_server.setdefault(inst.server_id, []).append(inst)
    out, loose = [], []
    for server in servers:
        entries = []
        for inst in by_server.get(server.id, []):
            if inst.source == "discovered" and server.databases is not None:
                continue  # discovery finds it again
            entry = _as_entry(server, inst)
            (loose.append(inst) if entry is None else entries.append(entry))
        out.append(_exported_server(server, entries))
    data: dict[str, Any] = {"servers": out}
    if loose:
        data["instances"] = [_exported(i) for i in loose]
    return yaml.safe_dump(data, sort_keys=False)


def dump_csv(instances: Iterable[Any]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for inst in instances:
        data = _exported(inst)
        data["tags"] = ";".join(f"{k}={v}" for k, v in data.get("tags", {}).items())
        data["overrides"] = json.dumps(data["overrides"]) if data.get("overrides") else ""
        data["enabled"] = str(data.get("enabled", True)).lower()
        data["schemas"] = ";".join(data.get("schemas", []))
        writer.writerow({c: data.get(c, "") for c in CSV_COLUMNS})
    return buf.getvalue()
