"""SQL Server collectors, one module per concern; importing registers them.

Owns the SQL Server SQL (T-SQL against DMVs and catalog views) and its pure transforms, plus
common.py, the engine-neutral helpers the Oracle family shares. Imports nothing from app/.
"""

from collectors.sqlserver import health, index_advice, partitions, query_stats, replication  # noqa: F401
from collectors.sqlserver import activity  # noqa: F401
from collectors.sqlserver import partition_apply  # noqa: F401  (registers its MaintenanceSpec)
