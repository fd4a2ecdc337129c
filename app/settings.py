"""Settings: environment (prefix DBFLEET_, nested with __) over an optional dbfleet.yaml."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, IPvAnyNetwork, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)


class StoreSettings(BaseModel):
    embedded_dir: Path = Path(".dbfleet/pg")
    retention_days: int = Field(14, ge=1, description="days of samples and query stats kept")
    premake_days: int = Field(3, ge=1, description="daily store partitions created ahead")
    pool_size: int | None = Field(None, ge=1, description="store connections; default worker.concurrency + 4")


class WorkerSettings(BaseModel):
    concurrency: int = Field(32, ge=1, le=1000, description="instances collected at once")
    shard: str = Field("0/1", description="i/N, or 'auto' for the StatefulSet pod ordinal")
    shard_count: int | None = Field(None, ge=1, description="N when shard is 'auto'")
    connect_timeout_s: float = Field(5.0, gt=0)
    statement_timeout_ms: int = Field(10_000, ge=100)
    lock_timeout_ms: int = Field(1_000, ge=10)
    backoff_base_s: float = Field(30.0, ge=0)
    backoff_max_s: float = Field(1800.0, ge=0)
    metrics_port: int = Field(9108, ge=0, le=65535)
    identity_ttl_s: float = Field(
        10.0, ge=0, description="seconds a server's role and identity reading is reused: collectors fired together "
                                "share one; a failover is seen within this long")


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)


class CredentialSettings(BaseModel):
    """Where instance credential references may point. Without a limit an admin could aim
    `env:ANY_VAR` or `file:/any/path` at a host they control and have the worker send it as the
    password. aws-sm: and aws-iam are governed by IAM and are not limited here."""

    env_prefixes: list[str] = Field(default_factory=lambda: ["DBFLEET_CRED_"],
                                    description="env:VAR is allowed only when VAR starts with one of these")
    file_dirs: list[str] = Field(default_factory=lambda: ["/var/run/secrets/dbfleet"],
                                 description="file:/path is allowed only when its real path is inside one of these")


class LiveSettings(BaseModel):
    """Live troubleshooting (app/api/live.py): what it may do to a monitored database."""

    # EXPLAIN ANALYZE runs the query: a heavy one costs what it costs in production (PgHero #438).
    allow_analyze: bool = False
    allow_terminate: bool = Field(False, description="operators may cancel queries and terminate sessions")
    min_interval_s: float = Field(1.0, ge=0, description="live requests per instance at most one per this long")


class ProxySignInSettings(BaseModel):
    """Console sign-in by a reverse proxy that has authenticated the user (an SSO gateway,
    oauth2-proxy): the user name comes in a header, believed only from the proxies listed."""

    header: str = Field(min_length=1, description="the request header with the user name, e.g. X-Forwarded-User")
    trusted_proxies: list[IPvAnyNetwork] = Field(
        min_length=1, description="addresses or CIDRs of the proxies; the header from any other peer is ignored")
    role: Literal["viewer", "operator", "admin"] = Field("viewer", description="the role of a user not in roles")
    roles: dict[str, Literal["viewer", "operator", "admin"]] = Field(default_factory=dict,
                                                                     description="user name -> role")


class ConsoleSettings(BaseModel):
    proxy_sign_in: ProxySignInSettings | None = None


class CollectorSettings(BaseModel):
    """Per-collector overrides; per-tag thresholds are keyed 'key=value'."""

    enabled: bool = True
    interval_s: int | None = Field(None, ge=5)
    thresholds: dict[str, Any] = Field(default_factory=dict)
    by_tag: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("by_tag")
    @classmethod
    def _tag_keys(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for key in v:
            if "=" not in key:
                raise ValueError(f"by_tag key {key!r} must be 'tag=value'")
        return v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DBFLEET_", env_nested_delimiter="__", extra="forbid")

    database_url: str | None = Field(None, description="the store; unset = embedded PostgreSQL")
    # Short aliases the Helm chart sets on the worker StatefulSet (DBFLEET_SHARD=auto).
    shard: str | None = Field(None, description="overrides worker.shard")
    shard_count: int | None = Field(None, ge=1, description="overrides worker.shard_count")
    store: StoreSettings = Field(default_factory=StoreSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    credentials: CredentialSettings = Field(default_factory=CredentialSettings)
    live: LiveSettings = Field(default_factory=LiveSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    collectors: dict[str, CollectorSettings] = Field(default_factory=dict)
    alerting: dict[str, Any] = Field(default_factory=dict)
    partitions: dict[str, Any] = Field(default_factory=dict)
    cloud: dict[str, Any] = Field(default_factory=dict)
    checks: list[dict[str, Any]] = Field(default_factory=list, description="data quality checks (app/quality)")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get("DBFLEET_CONFIG")
        if path:
            if not Path(path).is_file():
                raise FileNotFoundError(f"DBFLEET_CONFIG points at {path}, which is not a file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    def store_pool_size(self) -> int:
        """A sweep holds one store connection per instance it collects, so the pool must cover the
        concurrency or the concurrency is silently capped by the pool."""
        return self.store.pool_size or self.worker.concurrency + 4

    def collector(self, name: str) -> CollectorSettings:
        return self.collectors.get(name) or CollectorSettings()


def config_problems(settings: Settings) -> list[str]:
    """Every error in the sections other parts own (alerting, cloud, partitions), with its path.

    The API and the worker refuse to start on any of them; `dbfleet config check` prints them.
    """
    from pydantic import ValidationError

    from app.alerting.config import check_config
    from app.inventory.cloud_settings import CloudSettings

    problems = check_config(settings.alerting)
    try:
        CloudSettings.of(settings)
    except ValidationError as e:
        problems += [f"cloud.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
    from app.partitions import PolicyScope

    for i, raw in enumerate(settings.partitions.get("policies", [])):
        try:
            PolicyScope.model_validate(raw)
        except ValidationError as e:
            problems += [f"partitions.policies[{i}].{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
    from app.quality.definitions import parse_definitions

    problems += parse_definitions(settings.checks)[1]
    return problems + credential_problems(settings)


def credential_problems(settings: Settings) -> list[str]:
    """Allow-list entries that would not limit what they seem to, or would expose dbfleet's own settings."""
    problems = []
    own = [f"DBFLEET_{name.upper()}" for name in Settings.model_fields]
    for i, prefix in enumerate(settings.credentials.env_prefixes):
        if not prefix.strip():
            problems.append(f"credentials.env_prefixes[{i}]: empty; it is ignored (it would allow every variable)")
        elif exposed := [v for v in own if v.startswith(prefix) or prefix.startswith(v)]:
            problems.append(f"credentials.env_prefixes[{i}]: {prefix!r} would let an instance send dbfleet's own "
                            f"settings (e.g. {exposed[0]}) as a password")
    for i, path in enumerate(settings.credentials.file_dirs):
        if not os.path.isabs(path):
            problems.append(f"credentials.file_dirs[{i}]: {path!r} is relative; give an absolute directory")
        elif os.path.realpath(path) == "/":
            problems.append(f"credentials.file_dirs[{i}]: {path!r} allows every file on the host")
    return problems


@lru_cache
def get_settings() -> Settings:
    return Settings()
