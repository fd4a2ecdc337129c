"""Engine adapters: one module per driver (asyncpg, aiomysql, aioodbc, oracledb).

Each opens a read-only, time-limited session named `dbfleet` and offers `fetch(sql) -> rows as
dicts`. Owns the Target description, the adapter registry and the held-open connection pool with
per-instance backoff. Imports nothing from app/.
"""

from collectors.engines.base import (  # noqa: F401
    ConnectFailed,
    CredentialUnavailable,
    LoginFailed,
    SessionLimits,
    Target,
    Unreachable,
    connect,
    register_adapter,
)
