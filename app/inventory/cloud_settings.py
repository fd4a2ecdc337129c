"""The `cloud:` settings section, and the cloud targets (CloudWatch / Azure Monitor) of an instance."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.inventory.credentials import resolve_credential
from collectors.cloud.targets import cloud_targets
from collectors.engines.base import Target

SUBSCRIPTION_ID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class AwsCloud(BaseModel):
    model_config = ConfigDict(extra="forbid")

    regions: list[str] = Field(default_factory=list, description="regions the discovery job scans")
    tags: dict[str, str] = Field(default_factory=dict, description="only discover instances with all these tags")
    interval_s: int = Field(3600, ge=60, description="how often the discovery job runs")
    endpoint_url: str | None = Field(None, description="VPC endpoint, LocalStack or moto instead of AWS")
    secret_ttl_s: int = Field(300, ge=0, description="how long a Secrets Manager value is cached")


class AzureCloud(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscriptions: list[str] = Field(default_factory=list, description="subscriptions the discovery job scans")
    tags: dict[str, str] = Field(default_factory=dict, description="only discover servers with all these tags")
    interval_s: int = Field(3600, ge=60, description="how often the discovery job runs")
    management_endpoint: str = Field("https://management.azure.com",
                                     description="Azure Resource Manager (another cloud, or a test server)")
    workspace_id: str | None = Field(None, description="Log Analytics workspace with the servers' diagnostic logs")
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = Field(None, description="a reference (env:VAR, file:/path, aws-sm:...), never the secret")
    metrics_endpoint: str | None = None
    logs_endpoint: str | None = None

    @field_validator("subscriptions")
    @classmethod
    def _subscription_ids(cls, v: list[str]) -> list[str]:
        for sub in v:
            if not SUBSCRIPTION_ID.match(sub):
                raise ValueError(f"{sub!r} is not a subscription id (a GUID; `az account list` shows them)")
        return v

    @field_validator("client_secret")
    @classmethod
    def _reference(cls, v: str | None) -> str | None:
        if v and ":" not in v:
            raise ValueError("must be a reference such as env:AZURE_CLIENT_SECRET, not the secret itself")
        return v


class CloudSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    aws: AwsCloud = Field(default_factory=AwsCloud)
    azure: AzureCloud = Field(default_factory=AzureCloud)

    @classmethod
    def of(cls, settings: Any) -> "CloudSettings":
        """From Settings (whose `cloud` may be this model or still a plain dict) or a dict."""
        section = getattr(settings, "cloud", settings)
        return section if isinstance(section, cls) else cls.model_validate(section or {})


async def targets_for_cloud(name: str, cloud: dict[str, Any] | None, settings: Any) -> list[Target]:
    """The instance's cloud targets ("aws"/"azure" engine families) with service-wide options."""
    cfg = CloudSettings.of(settings)
    aws = {"endpoint_url": cfg.aws.endpoint_url} if cfg.aws.endpoint_url else {}
    azure = {k: v for k, v in cfg.azure.model_dump(include={"workspace_id", "tenant_id", "client_id",
                                                             "metrics_endpoint", "logs_endpoint"}).items() if v}
    secret = await resolve_credential(cfg.azure.client_secret) if cfg.azure.client_secret else None
    return cloud_targets(name, cloud, aws, azure, secret)
