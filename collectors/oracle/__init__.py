"""Oracle collectors, one module per concern; importing registers them.

Owns the Oracle SQL (dictionary and V$ views, read-only) and its pure transforms. Shares the
engine-neutral helpers in collectors/common/. Imports nothing from app/.
"""

from collectors.oracle import health, index_advice, partitions, query_stats, replication  # noqa: F401
from collectors.oracle import activity  # noqa: F401
from collectors.oracle import partition_apply  # noqa: F401  (registers its MaintenanceSpec)
