"""Oracle collectors, one module per concern; importing registers them.

Owns the Oracle SQL (dictionary and V$ views, read-only) and its pure transforms. Shares the
engine-neutral helpers in collectors/sqlserver/common.py. Imports nothing from app/.
"""

from collectors.oracle import health, index_advice, partitions, query_stats, replication  # noqa: F401
