"""MySQL, MariaDB and Aurora MySQL collectors, one module per concern; importing registers them.

SQL is keyed by server version, and MySQL (< 100000) and MariaDB (>= 100000) numbers never
overlap, so one dict holds both flavours. partition_plan (pure DDL planning) and partition_apply
(plan_live/apply for app/partitions.py) are not collectors and are imported on demand.
Imports nothing from app/.
"""

from collectors.mysql import health, index_advice, partitions, query_stats, replication  # noqa: F401
from collectors.mysql import activity, waits  # noqa: F401
from collectors.mysql import partition_apply  # noqa: F401  (registers its MaintenanceSpec)
