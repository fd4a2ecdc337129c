"""What an instance looks like on the way in and out; validation names the wrong field."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Engine = Literal["postgres", "aurora-postgres", "mysql", "mariadb", "aurora-mysql", "sqlserver", "oracle"]
TlsMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
DEFAULT_PORTS = {"postgres": 5432, "aurora-postgres": 5432, "mysql": 3306, "mariadb": 3306,
                 "aurora-mysql": 3306, "sqlserver": 1433, "oracle": 1521}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}$")
_CREDENTIAL = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:/.+|aws-sm:[^#\s]+(#[^\s]+)?|aws-iam|azure-ad)$")


class CollectorOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    interval_s: int | None = Field(None, ge=5)
    thresholds: dict[str, Any] = Field(default_factory=dict)


class InstanceIn(BaseModel):
    """An instance as a DBA declares it (REST body, one YAML item, one CSV row)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str
    engine: Engine
    host: str = Field(min_length=1, max_length=255)
    port: int | None = Field(None, ge=1, le=65535)
    dbname: str = ""
    user: str = ""
    credential: str | None = Field(None, description="env:VAR, file:/path, aws-sm:NAME[#key], aws-iam; never the secret. "
                                                     "env: and file: only inside the credentials allow-list")
    tls_mode: TlsMode = "prefer"
    tags: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True
    overrides: dict[str, CollectorOverride] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use letters, digits and _ . : - (at most 200), starting with a letter or digit")
        return v

    @field_validator("credential")
    @classmethod
    def _credential(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not _CREDENTIAL.match(v):
            raise ValueError("must be a reference: env:VAR, file:/path, aws-sm:NAME[#key] or aws-iam "
                             "(passwords are never stored in the inventory)")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_.\-/]*$", key):
                raise ValueError(f"tag key {key!r}: use letters, digits and _ . - /")
            if ";" in value:
                # CSV files carry tags as k=v;k=v, so a ';' in a value could not come back.
                raise ValueError(f"tag {key}: value {value!r} must not contain ';'")
        return v

    def resolved_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.engine]


class InstancePatch(BaseModel):
    """A partial update; only the fields sent change."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    engine: Engine | None = None
    host: str | None = Field(None, min_length=1, max_length=255)
    port: int | None = Field(None, ge=1, le=65535)
    dbname: str | None = None
    user: str | None = None
    credential: str | None = None
    tls_mode: TlsMode | None = None
    tags: dict[str, str] | None = None
    enabled: bool | None = None
    overrides: dict[str, CollectorOverride] | None = None

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
    source: str
    cloud: dict[str, Any]
    gone_at: datetime | None
    created_at: datetime
    updated_at: datetime
