"""Settings: environment (prefix DBFLEET_, nested with __) over an optional dbfleet.yaml.

A bad value is reported as `line N: key.path: what is wrong` (the file) or `DBFLEET_X__Y: key.path:
...` (the environment), never with the value itself: a secret pasted into the wrong key stays out
of terminals and logs.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from app import yaml_file


class Section(BaseModel):
    """A settings section: a misspelt key (`concurency:`) is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid")


class StoreSettings(Section):
    embedded_dir: Path = Path(".dbfleet/pg")
    retention_days: int = Field(14, ge=1, description="days of samples and query stats kept")
    premake_days: int = Field(3, ge=1, description="daily store partitions created ahead")
    pool_size: int | None = Field(None, ge=1, description="store connections; default worker.concurrency + 4")


class WorkerSettings(Section):
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


class ApiSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="`dbfleet serve` processes sharing the port, one event loop "
                                                      "each; about one per core the API may use")


class CredentialSettings(Section):
    """Where instance credential references may point. Without a limit an admin could aim
    `env:ANY_VAR` or `file:/any/path` at a host they control and have the worker send it as the
    password. aws-sm: and aws-iam are governed by IAM and are not limited here."""

    env_prefixes: list[str] = Field(default_factory=lambda: ["DBFLEET_CRED_"],
                                    description="env:VAR is allowed only when VAR starts with one of these")
    file_dirs: list[str] = Field(default_factory=lambda: ["/var/run/secrets/dbfleet"],
                                 description="file:/path is allowed only when its real path is inside one of these")


class LiveSettings(Section):
    """Live troubleshooting (app/api/live.py): what it may do to a monitored database."""

    # EXPLAIN ANALYZE runs the query: a heavy one costs what it costs in production (PgHero #438).
    allow_analyze: bool = False
    allow_terminate: bool = Field(False, description="operators may cancel queries and terminate sessions")
    min_interval_s: float = Field(1.0, ge=0, description="live requests per instance at most one per this long")


class ProxySignInSettings(Section):
    """Console sign-in by a reverse proxy that has authenticated the user (an SSO gateway,
    oauth2-proxy): the user name comes in a header, believed only from the proxies listed."""

    header: str = Field(min_length=1, description="the request header with the user name, e.g. X-Forwarded-User")
    trusted_proxies: list[IPvAnyNetwork] = Field(
        min_length=1, description="addresses or CIDRs of the proxies; the header from any other peer is ignored")
    role: Literal["viewer", "operator", "admin"] = Field("viewer", description="the role of a user not in roles")
    roles: dict[str, Literal["viewer", "operator", "admin"]] = Field(default_factory=dict,
                                                                     description="user name -> role")


class ConsoleSettings(Section):
    proxy_sign_in: ProxySignInSettings | None = None


class CollectorSettings(Section):
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
            sources.append(InitSettingsSource(settings_cls, read_config_file(path)[0]))
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

    policies = settings.partitions.get("policies", [])
    if not isinstance(policies, list):
        return problems + ["partitions.policies: expected a list of policies"] + credential_problems(settings)
    for i, raw in enumerate(policies):
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


class ConfigFileError(ValueError):
    """dbfleet.yaml cannot be read as a configuration; `errors` are 'line N: ...' strings."""

    def __init__(self, path: str, errors: list[str]):
        self.path, self.errors = path, errors
        super().__init__("\n".join(errors))


def read_config_file(path: str) -> tuple[dict[str, Any], dict[tuple, int]]:
    """The file's settings and the line of every key path in it."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"DBFLEET_CONFIG points at {path}, which is not a file")
    try:
        data, lines = yaml_file.load(yaml_file.decode(Path(path).read_bytes()))
    except yaml_file.FileTextError as e:
        raise ConfigFileError(path, e.errors) from None
    except OSError as e:
        raise ConfigFileError(path, [f"line 1: cannot read the file: {e.strerror}"]) from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigFileError(path, [("line 1: expected a mapping of sections (store:, worker:, alerting: ...), "
                                     f"got a {type(data).__name__}")])
    if bad := [k for k in data if not isinstance(k, str)]:
        raise ConfigFileError(path, [f"line {lines.get((k,), 1)}: {k!r}: a section name must be text" for k in bad])
    if nul := _nul_paths(data):
        raise ConfigFileError(path, [f"line {lines.get(p, 1)}: {key_path(p)}: a NUL character (\\0); no setting "
                                     "takes one" for p in nul])
    return data, lines


def _nul_paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Where a "\\0" escape put a NUL: paths and directories with one fail only when used, far from here."""
    if isinstance(value, str):
        return [path] if "\x00" in value else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [p for k, v in items for p in _nul_paths(v, (*path, k))]


def key_path(loc: tuple) -> str:
    """('worker', 'concurrency') -> worker.concurrency; list items as [i], as config_problems writes them."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _parse_path(path: str) -> tuple:
    return tuple(int(p[1:-1]) if p.startswith("[") else p for p in re.findall(r"\[\d+\]|[^.\[\]]+", path))


def _in_file(loc: tuple, lines: dict[tuple, int]) -> tuple:
    """The path as the file spells it: a union's tag (receivers[0].webhook.url) is not a key there."""
    kept: tuple = ()
    for i, part in enumerate(loc):
        if (*kept, part) in lines:
            kept += (part,)
        elif not (i + 1 < len(loc) and (*kept, loc[i + 1]) in lines):
            return kept + loc[i:]  # the rest is not in the file: a missing or misspelt key
    return kept


def _where(loc: tuple, lines: dict[tuple, int]) -> str:
    """The environment variable that set the path (it wins over the file), else 'line N: ' of the
    deepest part of the path the file has."""
    for n in range(len(loc), 0, -1):
        name = "DBFLEET_" + "__".join(str(p) for p in loc[:n]).upper()
        if name in os.environ:
            return f"{name}: "
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return f"line {lines[loc[:n]]}: "
    return ""


def _config_lines() -> dict[tuple, int]:
    path = os.environ.get("DBFLEET_CONFIG")
    try:
        return read_config_file(path)[1] if path else {}
    except (ConfigFileError, FileNotFoundError):
        return {}


def settings_errors(exc: ValidationError) -> list[str]:
    """Each error as `line N: key.path: message`, without the value (it may be a secret)."""
    lines = _config_lines()
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = _in_file(tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))), lines)
        out.append(f"{_where(loc, lines)}{key_path(loc) or 'settings'}: {err['msg']}")
    return out


def config_report(settings: Settings) -> list[str]:
    """config_problems with the line (or environment variable) of each key path in front."""
    lines = _config_lines()
    out = []
    for problem in config_problems(settings):
        path, sep, rest = problem.partition(": ")
        loc = _in_file(_parse_path(path), lines)
        out.append(f"{_where(loc, lines)}{key_path(loc)}: {rest}" if sep and loc else problem)
    return out


@lru_cache
def get_settings() -> Settings:
    return Settings()
