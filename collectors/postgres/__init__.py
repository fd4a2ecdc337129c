"""PostgreSQL and Aurora PostgreSQL collectors, one module per concern; importing registers them."""

from collectors.postgres import health  # noqa: F401
from collectors.postgres import index_advice  # noqa: F401
from collectors.postgres import query_stats  # noqa: F401
from collectors.postgres import partitions  # noqa: F401
from collectors.postgres import partition_apply  # noqa: F401  (registers its MaintenanceSpec)
from collectors.postgres import replication  # noqa: F401
from collectors.postgres import activity  # noqa: F401
from collectors.postgres import vacuum  # noqa: F401
