"""AWS credential references: `aws-sm:NAME_OR_ARN[#json_key]` (Secrets Manager, cached with a
TTL) and `aws-iam` (an RDS IAM auth token generated for each connection).

Errors name the reference and what to fix; a secret's value never appears in one.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field

from app.inventory.credentials import CredentialError, register_resolver
from collectors.cloud.clients import BotoCoreError, ClientError, ExtraMissing, aws_client, require_aws

_SECRET_ARN = re.compile(r"^arn:aws[\w-]*:secretsmanager:(?P<region>[a-z0-9-]+):\d+:secret:.+$")
_DENIED = {"AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidClientTokenId",
           "ExpiredTokenException"}


@dataclass
class AwsCredentialConfig:
    """Set once at startup from the `cloud.aws` settings (tests point it at moto)."""

    endpoint_url: str | None = None
    ttl_s: float = 300.0
    default_region: str | None = None
    _cache: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict, repr=False)


config = AwsCredentialConfig()


def configure(endpoint_url: str | None = None, ttl_s: float = 300.0, default_region: str | None = None) -> None:
    global config
    config = AwsCredentialConfig(endpoint_url=endpoint_url, ttl_s=ttl_s, default_region=default_region)


def invalidate(reference: str | None = None) -> None:
    """Forget cached secrets (all, or one reference) — e.g. after a login failure due to rotation."""
    if reference is None:
        config._cache.clear()
        return
    secret_id = reference.removeprefix("aws-sm:").split("#", 1)[0]
    for key in [k for k in config._cache if k[1] == secret_id]:
        del config._cache[key]


def _region(secret_id: str, instance: dict) -> str:
    match = _SECRET_ARN.match(secret_id)
    region = (match["region"] if match else None) or (instance.get("cloud") or {}).get("region") or config.default_region
    if not region:
        import boto3

        region = boto3.session.Session().region_name
    if not region:
        raise CredentialError(f"no AWS region for secret {secret_id}: use its ARN or set the instance's cloud region")
    return region


def _fetch(region: str, secret_id: str) -> str:
    client = aws_client("secretsmanager", region, config.endpoint_url)
    answer = client.get_secret_value(SecretId=secret_id)
    if "SecretString" in answer:
        return answer["SecretString"]
    return answer["SecretBinary"].decode("utf-8")


def _explain(e: Exception, reference: str, region: str) -> CredentialError:
    if isinstance(e, ClientError):
        code = e.response.get("Error", {}).get("Code", "Unknown")
        if code == "ResourceNotFoundException":
            return CredentialError(f"{reference}: no such secret in {region}")
        if code in _DENIED:
            return CredentialError(f"{reference}: access denied in {region} ({code}); grant "
                                   "secretsmanager:GetSecretValue (and kms:Decrypt on its key)")
        return CredentialError(f"{reference}: Secrets Manager in {region} failed ({code})")
    if isinstance(e, UnicodeDecodeError):
        return CredentialError(f"{reference}: the secret is binary, not text")
    return CredentialError(f"{reference}: Secrets Manager in {region} failed ({type(e).__name__})")


async def secret_string(secret_id: str, instance: dict, reference: str) -> str:
    """The secret's text, from the cache while younger than the TTL."""
    _require_aws(reference)
    region = _region(secret_id, instance)
    key = (region, secret_id)
    cached = config._cache.get(key)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    try:
        value = await asyncio.to_thread(_fetch, region, secret_id)
    except (ClientError, BotoCoreError, UnicodeDecodeError) as e:
        raise _explain(e, reference, region) from None
    config._cache[key] = (time.monotonic() + config.ttl_s, value)
    return value


def _require_aws(reference: str) -> None:
    try:
        require_aws(reference)
    except ExtraMissing as e:
        raise CredentialError(str(e)) from None


def pick_key(value: str, key: str, reference: str) -> str:
    try:
        data = json.loads(value)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise CredentialError(f"{reference}: the secret is not a JSON object, so key {key!r} cannot be read "
                              "(drop '#key' to use the whole secret)")
    if key not in data:
        raise CredentialError(f"{reference}: the secret has no key {key!r} (keys: {', '.join(sorted(data))})")
    return str(data[key])


async def resolve_secrets_manager(rest: str, instance: dict) -> str:
    reference = f"aws-sm:{rest}"
    secret_id, _, key = rest.partition("#")
    if not secret_id:
        raise CredentialError("aws-sm reference needs a secret name or ARN: aws-sm:NAME[#key]")
    value = await secret_string(secret_id, instance, reference)
    return pick_key(value, key, reference) if key else value


def _token(host: str, port: int, user: str, region: str) -> str:
    client = aws_client("rds", region, config.endpoint_url)
    return client.generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user, Region=region)


async def resolve_iam_token(rest: str, instance: dict) -> str:
    """A 15-minute RDS IAM token for this host/port/user, signed locally (no API call).

    The connection must use TLS (tls_mode require or stricter); RDS refuses IAM logins without it.
    """
    host, port, user = instance.get("host"), instance.get("port"), instance.get("user")
    name = instance.get("name") or host
    if not (host and port and user):
        raise CredentialError(f"aws-iam on {name}: host, port and user are needed to sign a token")
    _require_aws(f"aws-iam on {name}")
    region = rest or (instance.get("cloud") or {}).get("region") or config.default_region
    if not region:
        raise CredentialError(f"aws-iam on {name}: no region; discover the instance or set cloud.region")
    try:
        return await asyncio.to_thread(_token, host, int(port), user, region)
    except BotoCoreError as e:
        raise CredentialError(f"aws-iam on {name}: cannot sign a token ({type(e).__name__}: {e})") from None


def register() -> None:
    register_resolver("aws-sm", resolve_secrets_manager)
    register_resolver("aws-iam", resolve_iam_token)


register()
