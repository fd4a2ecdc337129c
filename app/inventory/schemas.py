"""What an instance looks like on the way in and out; validation names the wrong field."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

Engine = Literal["postgres", "aurora-postgres", "mysql", "mariadb", "aurora-mysql", "sqlserver", "oracle"]
TlsMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
DEFAULT_PORTS = {"postgres": 5432, "aurora-postgres": 5432, "mysql": 3306, "mariadb": 3306,
                 "aurora-mysql": 3306, "sqlserver": 1433, "oracle": 1521}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}$")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.:\-]")
_CREDENTIAL = re.compile(r"(env:[A-Za-z_][A-Za-z0-9_]*|file:/.+|aws-sm:[^#\s]+(#[^\s]+)?|aws-iam|azure-ad)")
_TAG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]{0,99}")
# Lone surrogates come in through YAML "\ud800" escapes and JSON; no database driver can encode them.
# What the name and tag validators accept, as JSON Schema for the OpenAPI document.
NAME_SCHEMA = {"pattern": _NAME.pattern, "maxLength": 200}
TAGS_SCHEMA = {"propertyNames": {"pattern": "^" + _TAG_KEY.pattern + "$"},
               "additionalProperties": {"type": "string", "maxLength": 500, "pattern": "^[^;\\x00-\\x1f\\x7f]*$"}}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def _printable(v: str) -> str:
    """The store's text columns refuse NUL, and no host, database or tag needs a control character."""
    if m := _CONTROL.search(v):
        raise ValueError(f"character U+{ord(m.group()):04X} at position {m.start() + 1}; use printable text")
    return v


def _json_value(v: Any, path: str = "") -> Any:
    """A threshold is stored as JSON: text, a finite number, true/false, null, or lists/mappings of them."""
    if isinstance(v, str):
        _printable(v)
    elif isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{path or 'value'}: {v} is not a number JSON can hold")
    elif isinstance(v, float) and abs(v) >= 2 ** 63:
        # jsonb keeps 1e30 as 1000...0, which reads back as an integer out of range
        raise ValueError(f"{path or 'value'}: {v} is out of range (beyond a 64-bit integer)")
    elif isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2 ** 63:
        raise ValueError(f"{path or 'value'}: {v} is out of range (a 64-bit integer)")
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _json_value(x, f"{path}[{i}]")
    elif isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise ValueError(f"{path or 'key'}: key {k!r} must be text")
            _json_value(x, f"{path}.{k}" if path else k)
    elif not (v is None or isinstance(v, (bool, int, float))):
        raise ValueError(f"{path or 'value'}: {type(v).__name__} is not a number, text, true/false or a list")
    return v


# Lengths are the store's column sizes (app/models.py): longer would be a database error, not a 4xx.
Host = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(_printable)]
DbName = Annotated[str, StringConstraints(max_length=200), AfterValidator(_printable)]
Credential = Annotated[str, StringConstraints(max_length=500), AfterValidator(_printable)]
Pattern = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_printable)]


def is_mysql(engine: str | None) -> bool:
    return engine in ("mysql", "mariadb", "aurora-mysql")


def schema_list(schemas: list[str], engine: str | None, dbname: str | None) -> list[str]:
    """A MySQL entry's schemas: dbname first, no repeats; other engines have databases, not schema sets."""
    if not schemas:
        return []
    if engine and not is_mysql(engine):
        raise ValueError("only MySQL/MariaDB entries group schemas; list each database as its own entry")
    if dbname and dbname not in schemas:
        raise ValueError(f"must include dbname {dbname!r} (an entry's dbname is its first schema)")
    if len(set(schemas)) != len(schemas) or not all(schemas):
        raise ValueError("each schema once, none empty")
    return [dbname, *(x for x in schemas if x != dbname)] if dbname else list(schemas)


def entry_name(server: str, dbname: str) -> str:
    """`<server>.<database>`: a valid instance name (API paths stay one segment), at most 200."""
    if not dbname:
        return server
    return _NAME_CHARS.sub("_", f"{server}.{dbname}")[:200]


class CollectorOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    interval_s: int | None = Field(None, ge=5, le=2_592_000, description="seconds, 5 to 30 days")
    thresholds: dict[str, Any] = Field(default_factory=dict)

    _thresholds = field_validator("thresholds")(lambda v: _json_value(v))


class InstanceIn(BaseModel):
    """An instance as a DBA declares it (REST body, one YAML item, one CSV row)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(json_schema_extra=NAME_SCHEMA)
    engine: Engine
    host: Host
    port: int | None = Field(None, ge=1, le=65535)
    dbname: DbName = ""
    user: DbName = ""
    credential: Credential | None = Field(None, description="env:VAR, file:/path, aws-sm:NAME[#key], aws-iam; never the secret. "
                                                     "env: and file: only inside the credentials allow-list")
    tls_mode: TlsMode = "prefer"
    tags: dict[str, str] = Field(default_factory=dict, json_schema_extra=TAGS_SCHEMA)
    enabled: bool = True
    overrides: dict[str, CollectorOverride] = Field(default_factory=dict)
    schemas: list[DbName] = Field(default_factory=list, description="MySQL/MariaDB: the schemas this entry covers "
                                                                 "(dbname is the first); [] = dbname alone")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("use letters, digits and _ . : - (at most 200), starting with a letter or digit")
        return v

    @field_validator("credential")
    @classmethod
    def _credential(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not _CREDENTIAL.fullmatch(v):
            raise ValueError("must be a reference: env:VAR, file:/path, aws-sm:NAME[#key] or aws-iam "
                             "(passwords are never stored in the inventory)")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not _TAG_KEY.fullmatch(key):
                raise ValueError(f"tag key {key[:100]!r}: use letters, digits and _ . - / (at most 100)")
            if len(value) > 500:
                raise ValueError(f"tag {key}: value of {len(value)} characters; at most 500")
            _printable(value)
            if ";" in value:
                # CSV files carry tags as k=v;k=v, so a ';' in a value could not come back.
                raise ValueError(f"tag {key}: value {value!r} must not contain ';'")
        return v

    @field_validator("schemas")
    @classmethod
    def _schemas(cls, v: list[str], info: ValidationInfo) -> list[str]:
        return schema_list(v, info.data.get("engine"), info.data.get("dbname"))

    @model_validator(mode="after")
    def _first_schema_is_dbname(self) -> InstanceIn:
        if self.schemas and not self.dbname:
            self.dbname = self.schemas[0]
        return self

    def resolved_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.engine]


class InstancePatch(BaseModel):
    """A partial update; only the fields sent change."""

    model_config = ConfigDict(extra="forbid")  # stripped when merged into InstanceIn/ServerIn

    # null only where the stored field may be null (port: the engine's default; credential: none)
    engine: Engine = None  # type: ignore[assignment]
    host: Host = None  # type: ignore[assignment]
    port: int | None = Field(None, ge=1, le=65535)
    dbname: DbName = None  # type: ignore[assignment]
    user: DbName = None  # type: ignore[assignment]
    credential: Credential | None = None
    tls_mode: TlsMode = None  # type: ignore[assignment]
    tags: dict[str, str] = Field(None, json_schema_extra=TAGS_SCHEMA)  # type: ignore[assignment]
    enabled: bool = None  # type: ignore[assignment]
    overrides: dict[str, CollectorOverride] = None  # type: ignore[assignment]
    schemas: list[DbName] = None  # type: ignore[assignment]

    _credential = field_validator("credential")(InstanceIn._credential.__func__)
    _tags = field_validator("tags")(InstanceIn._tags.__func__)


class InstanceOut(BaseModel):
    """An instance as the API returns it: the credential reference's kind only, never a secret."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    engine: str
    host: str
    port: int
    dbname: str
    user: str
    credential: str | None
    tls_mode: str
    tags: dict[str, str]
    enabled: bool
    overrides: dict[str, Any]
    schemas: list[str] = Field(default_factory=list)
    server: str | None = Field(None, description="the server this database entry is on")
    source: str
    cloud: dict[str, Any]
    gone_at: datetime | None
    created_at: datetime
    updated_at: datetime


# --- Servers: a server and the database entries dbfleet monitors on it --------------------------


class DatabaseIn(BaseModel):
    """One entry on a server: a PostgreSQL database, or a MySQL schema or group of schemas."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    dbname: DbName = Field("", description="the database (MySQL: the schema; with schemas, the first of them)")
    name: str | None = Field(None, description="the entry's instance name; default <server>.<dbname>")
    schemas: list[DbName] = Field(default_factory=list, description="MySQL/MariaDB: several schemas as one entry")
    tags: dict[str, str] = Field(default_factory=dict, description="added to the server's tags")
    enabled: bool = True
    overrides: dict[str, CollectorOverride] = Field(default_factory=dict)

    _name = field_validator("name")(lambda v: v if v is None else InstanceIn._name.__func__(InstanceIn, v))
    _tags = field_validator("tags")(InstanceIn._tags.__func__)

    @model_validator(mode="after")
    def _named(self) -> DatabaseIn:
        self.schemas = schema_list(self.schemas, None, self.dbname or None)
        self.dbname = self.dbname or (self.schemas[0] if self.schemas else "")
        # {name: x} alone: an entry without a database of its own (MySQL: every schema no other
        # entry on the server names).
        if not self.dbname and not self.name:
            raise ValueError("dbname (or schemas, or the entry's name) is required")
        return self


def _or_dbname(schema: dict[str, Any]) -> None:
    """The document says what _entries takes: an entry, or a database by its name."""
    schema["items"] = {"anyOf": [schema["items"], {"type": "string", "maxLength": 200}]}


def _entries(v: Any) -> Any:
    """A plain string is a database by name: `databases: [shop, clean]`."""
    return [{"dbname": x} if isinstance(x, str) else x for x in v] if isinstance(v, list) else v


class DatabasePatterns(BaseModel):
    """Databases found on the server by name patterns (shell globs), as pgwatch does."""

    model_config = ConfigDict(extra="forbid")

    include: list[Pattern] = Field(default_factory=lambda: ["*"], min_length=1)
    exclude: list[Pattern] = Field(default_factory=list)
    listed: list[DatabaseIn] = Field(default_factory=list, description="entries kept whatever discovery finds",
                                     json_schema_extra=lambda s: _or_dbname(s))

    _listed = field_validator("listed", mode="before")(_entries)


# A list of entries or a mapping of patterns; the tags keep error paths short (io drops them).
DATABASES_FORMS = ("entries", "patterns")
Databases = Annotated[Annotated[list[DatabaseIn], Tag("entries"), Field(json_schema_extra=lambda s: _or_dbname(s))]
                      | Annotated[DatabasePatterns, Tag("patterns")],
                      Discriminator(lambda v: "entries" if isinstance(v, list) else "patterns")]


def _unique_entries(entries: list[DatabaseIn]) -> list[DatabaseIn]:
    seen: dict[str, int] = {}
    for n, e in enumerate(entries):
        if e.dbname and e.dbname in seen:
            raise ValueError(f"dbname {e.dbname!r} is listed twice (databases.{seen[e.dbname]} and databases.{n})")
        seen[e.dbname] = n
    return entries


class ServerIn(BaseModel):
    """A server as a DBA declares it (REST body, one YAML `servers:` item)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(json_schema_extra=NAME_SCHEMA)
    engine: Engine
    host: Host
    port: int | None = Field(None, ge=1, le=65535)
    user: DbName = ""
    credential: Credential | None = Field(None, description="a reference, as for an instance; never the secret")
    tls_mode: TlsMode = "prefer"
    tags: dict[str, str] = Field(default_factory=dict, json_schema_extra=TAGS_SCHEMA)
    enabled: bool = True
    databases: Databases | None = Field(
        None, description="the entries ([shop, clean], MySQL: schemas), or {include, exclude} patterns to "
                          "discover them; omitted: one entry, the server's default database")

    _name = field_validator("name")(InstanceIn._name.__func__)
    _credential = field_validator("credential")(InstanceIn._credential.__func__)
    _tags = field_validator("tags")(InstanceIn._tags.__func__)
    _databases_before = field_validator("databases", mode="before")(_entries)

    @field_validator("databases")
    @classmethod
    def _databases(cls, v: Any, info: ValidationInfo) -> Any:
        entries = v.listed if isinstance(v, DatabasePatterns) else v or []
        if not is_mysql(info.data.get("engine")) and any(e.schemas for e in entries):
            raise ValueError("schemas: only MySQL/MariaDB entries group schemas; list each database as its own entry")
        _unique_entries(entries)
        return v

    def resolved_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.engine]

    def entries(self) -> list[DatabaseIn]:
        """The entries this item declares; none said: the server's default database."""
        if self.databases is None:
            return [DatabaseIn(dbname=DEFAULT_DATABASE.get(self.engine, ""), name=self.name)]
        return self.databases.listed if isinstance(self.databases, DatabasePatterns) else self.databases

    def patterns(self) -> dict[str, Any] | None:
        if isinstance(self.databases, DatabasePatterns):
            return {"include": self.databases.include, "exclude": self.databases.exclude}
        return None


# A server declared without databases is monitored through this one (MySQL: '' = every schema).
DEFAULT_DATABASE = {"postgres": "postgres", "aurora-postgres": "postgres", "sqlserver": "master"}


class ServerPatch(BaseModel):
    """A partial update of a server; connection fields follow to the entries that shared them."""

    model_config = ConfigDict(extra="forbid")  # stripped when merged into InstanceIn/ServerIn

    # null only where the stored field may be null (port, credential; databases: the default entry)
    engine: Engine = None  # type: ignore[assignment]
    host: Host = None  # type: ignore[assignment]
    port: int | None = Field(None, ge=1, le=65535)
    user: DbName = None  # type: ignore[assignment]
    credential: Credential | None = None
    tls_mode: TlsMode = None  # type: ignore[assignment]
    tags: dict[str, str] = Field(None, json_schema_extra=TAGS_SCHEMA)  # type: ignore[assignment]
    enabled: bool = None  # type: ignore[assignment]
    databases: Databases | None = None

    _credential = field_validator("credential")(InstanceIn._credential.__func__)
    _tags = field_validator("tags")(InstanceIn._tags.__func__)
    _databases_before = field_validator("databases", mode="before")(_entries)


class DatabaseEntryOut(BaseModel):
    """One entry of a server with its health: open findings by severity."""

    name: str
    dbname: str
    schemas: list[str]
    enabled: bool
    source: str
    gone_at: datetime | None
    open_findings: dict[str, int] = Field(description="open findings by severity (critical, warning, info)")


class ServerOut(BaseModel):
    """A server as the API returns it: credential reference only, never a secret."""

    id: int
    name: str
    engine: str
    host: str
    port: int
    user: str
    credential: str | None
    tls_mode: str
    tags: dict[str, str]
    enabled: bool
    cloud: dict[str, Any]
    patterns: dict[str, Any] | None = Field(description="discovery patterns {include, exclude}; null: listed only")
    databases: list[DatabaseEntryOut]
    created_at: datetime
    updated_at: datetime
