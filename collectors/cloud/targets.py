"""Which cloud targets an inventory instance has: one per cloud identity in its `cloud` column."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collectors.cloud.adapter import aws_identity
from collectors.cloud.azure_api import parse_resource_id
from collectors.engines.base import Target


def cloud_targets(name: str, cloud: Mapping[str, Any] | None, aws_options: Mapping[str, Any] | None = None,
                  azure_options: Mapping[str, Any] | None = None, azure_secret: str | None = None) -> list[Target]:
    """Targets for the "aws"/"azure" engine families; their names differ from the SQL target's
    (`name@aws`) so a connection pool keyed by name holds both.

    `aws_options` / `azure_options` add service-wide settings (endpoint_url, workspace_id,
    tenant_id, client_id...) to the instance's own identity; `azure_secret` is the resolved
    client secret, if one is configured.
    """
    cloud = dict(cloud or {})
    out: list[Target] = []
    ident = aws_identity(cloud)
    if ident is not None:
        region, _ = ident
        out.append(Target(name=f"{name}@aws", engine="aws", host=f"monitoring.{region}.amazonaws.com", port=443,
                          options={**(aws_options or {}), **cloud}))
    if parse_resource_id(str(cloud.get("resource_id", ""))) is not None:
        out.append(Target(name=f"{name}@azure", engine="azure", host=str(cloud.get("region") or "azure"), port=443,
                          password=azure_secret, options={**(azure_options or {}), **cloud}))
    return out
