"""Cloud collectors: CloudWatch and Azure Monitor metrics, Log Analytics events.

Owns the "aws" and "azure" engine families (adapter.py, azure_api.py), the boto3 client cache
(clients.py), request coalescing (batching.py) and the decisions both clouds share
(decisions.py). Imports collectors/ only, never app/. Importing this package registers the
adapters and the specs.
"""

from collectors.cloud import adapter, azure_api  # noqa: F401  (register the adapters)
from collectors.cloud import azure_logs, azure_metrics, cloudwatch  # noqa: F401
from collectors.cloud.targets import cloud_targets  # noqa: F401
