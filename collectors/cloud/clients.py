"""boto3 clients shared by the cloud collectors, discovery and credential resolvers.

Clients are thread-safe and slow to build (endpoint resolution, credential chain), so one per
(service, region, endpoint) per process. Retries use botocore's standard mode: exponential
backoff with jitter on throttling and 5xx, so a throttled API slows a sweep down instead of
failing it.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

try:  # the aws extra: without it the rest of dbfleet runs, and each AWS call says what to install
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
    AWS_INSTALLED = True
except ImportError:
    AWS_INSTALLED = False

    class BotoCoreError(Exception):  # stand-ins keep callers' `except` clauses valid; never raised
        pass

    ClientError = BotoCoreError

MAX_ATTEMPTS = 6
_lock = threading.Lock()
_PARTITIONS = ("aws", "aws-cn", "aws-us-gov")


class CloudApiError(Exception):
    """A cloud API refused or failed a call; the message says what to fix, never a secret."""


class ExtraMissing(CloudApiError):
    """A cloud feature was used on an install without its optional extra."""

    def __init__(self, extra: str, feature: str):
        self.extra = extra
        super().__init__(f"{feature} needs the {extra} extra: pip install 'dbfleet[{extra}]'")


def require_aws(feature: str) -> None:
    """Raise ExtraMissing unless boto3 (the aws extra) is installed."""
    if not AWS_INSTALLED:
        raise ExtraMissing("aws", feature)


def retry_config(max_attempts: int = MAX_ATTEMPTS, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 20.0) -> Config:
    return Config(retries={"max_attempts": max_attempts, "mode": "standard"},
                  connect_timeout=connect_timeout_s, read_timeout=read_timeout_s)


@lru_cache(maxsize=256)
def aws_client(service: str, region: str, endpoint_url: str | None = None,
               max_attempts: int = MAX_ATTEMPTS) -> Any:
    """A cached boto3 client; `endpoint_url` is for VPC endpoints, LocalStack or moto."""
    require_aws(f"AWS {service}")
    with _lock:  # boto3's default session is not safe to use from several threads at once
        session = boto3.session.Session()
        return session.client(service, region_name=region, endpoint_url=endpoint_url,
                              config=retry_config(max_attempts))


@lru_cache(maxsize=1)
def known_regions() -> frozenset[str]:
    require_aws("checking an AWS region")
    session = boto3.session.Session()
    regions: set[str] = set()
    for partition in _PARTITIONS:
        regions.update(session.get_available_regions("rds", partition_name=partition))
    return frozenset(regions)


def check_region(region: str, endpoint_url: str | None = None) -> None:
    """Refuse a region botocore does not know (a typo would otherwise end in a DNS timeout)."""
    if endpoint_url is None and region not in known_regions():
        raise CloudApiError(f"unknown AWS region {region!r}; known regions look like us-east-1, eu-west-1")


def explain(e: Exception, action: str, region: str, permission: str) -> CloudApiError:
    """A DBA-readable error for a failed AWS call (access denied, throttled, unreachable)."""
    if isinstance(e, ClientError):
        code = e.response.get("Error", {}).get("Code", "Unknown")
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation",
                    "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken"):
            return CloudApiError(f"{action} in {region} was denied ({code}): grant {permission} "
                                 "to the role dbfleet runs as")
        if code in ("Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"):
            return CloudApiError(f"{action} in {region} is still throttled after {MAX_ATTEMPTS} attempts "
                                 f"({code}); lower the sweep concurrency or raise the interval")
        return CloudApiError(f"{action} in {region} failed ({code})")
    if isinstance(e, BotoCoreError):
        return CloudApiError(f"{action} in {region} failed: {type(e).__name__}: {e}")
    return CloudApiError(f"{action} in {region} failed: {type(e).__name__}")
