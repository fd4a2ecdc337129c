"""aws-sm and aws-iam credential references against moto's Secrets Manager and RDS signer."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collectors" / "cloud"))
from cloud_fakes import FaultProxy, json_error  # noqa: E402

from app.inventory import aws_credentials  # noqa: E402
from app.inventory.credentials import CredentialError, resolve_credential  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

REGION = "eu-west-1"
PASSWORD = "s3cr3t-V@lue"


@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    sm = boto3.client("secretsmanager", region_name=REGION, endpoint_url=url)
    sm.create_secret(Name="dbf/pg1", SecretString=json.dumps({"username": "app", "password": PASSWORD}))
    sm.create_secret(Name="dbf/plain", SecretString=PASSWORD)
    sm.create_secret(Name="dbf/notjson", SecretString="user=app " + PASSWORD)
    yield url
    server.stop()


@pytest.fixture
def aws(moto_url):
    aws_credentials.configure(endpoint_url=moto_url, ttl_s=300, default_region=REGION)
    yield moto_url
    aws_credentials.configure()


async def test_json_key_and_plain_secret(aws):
    assert await resolve_credential("aws-sm:dbf/pg1#password") == PASSWORD
    assert await resolve_credential("aws-sm:dbf/plain") == PASSWORD


async def test_secret_by_arn_takes_the_region_from_the_arn(aws):
    arn = boto3.client("secretsmanager", region_name=REGION, endpoint_url=aws).describe_secret(SecretId="dbf/pg1")["ARN"]
    aws_credentials.configure(endpoint_url=aws, default_region="us-east-2")
    assert await resolve_credential(f"aws-sm:{arn}#username") == "app"


async def test_secret_is_cached_until_invalidated(aws):
    sm = boto3.client("secretsmanager", region_name=REGION, endpoint_url=aws)
    sm.create_secret(Name="dbf/rotating", SecretString="v1")
    assert await resolve_credential("aws-sm:dbf/rotating") == "v1"
    sm.put_secret_value(SecretId="dbf/rotating", SecretString="v2")
    assert await resolve_credential("aws-sm:dbf/rotating") == "v1"
    aws_credentials.invalidate("aws-sm:dbf/rotating")
    assert await resolve_credential("aws-sm:dbf/rotating") == "v2"


@pytest.mark.parametrize("reference, message", [
    ("aws-sm:dbf/notjson#password", r"aws-sm:dbf/notjson#password: the secret is not a JSON object, so key 'password'"),
    ("aws-sm:dbf/pg1#pwd", r"aws-sm:dbf/pg1#pwd: the secret has no key 'pwd' \(keys: password, username\)"),
    ("aws-sm:dbf/missing", r"aws-sm:dbf/missing: no such secret in eu-west-1"),
])
async def test_bad_references_are_clear_and_never_show_the_value(aws, reference, message):
    with pytest.raises(CredentialError, match=message) as err:
        await resolve_credential(reference)
    assert PASSWORD not in str(err.value)


async def test_access_denied_and_throttling(aws):
    proxy = FaultProxy(aws)
    try:
        aws_credentials.configure(endpoint_url=proxy.url, default_region=REGION)
        proxy.faults = [json_error("AccessDeniedException", "not authorized")]
        with pytest.raises(CredentialError, match="access denied in eu-west-1 .* secretsmanager:GetSecretValue"):
            await resolve_credential("aws-sm:dbf/plain")
        proxy.faults = [json_error("ThrottlingException", "Rate exceeded")] * 2
        proxy.requests = 0
        assert await resolve_credential("aws-sm:dbf/plain") == PASSWORD
        assert proxy.requests == 3  # two throttled attempts retried with backoff, then the answer
    finally:
        proxy.close()


async def test_iam_token_is_signed_per_connection(aws):
    instance = {"name": "pg1", "host": "pg1.abc.eu-west-1.rds.amazonaws.com", "port": 5432, "user": "dbfleet",
                "cloud": {"region": REGION}}
    token = await resolve_credential("aws-iam", instance)
    url = urlparse("https://" + token)
    query = parse_qs(url.query)
    assert url.hostname == instance["host"] and url.port == 5432
    assert query["Action"] == ["connect"] and query["DBUser"] == ["dbfleet"]
    assert f"/{REGION}/rds-db/aws4_request" in query["X-Amz-Credential"][0]


async def test_iam_token_needs_user_and_region(aws):
    aws_credentials.configure(endpoint_url=aws)
    with pytest.raises(CredentialError, match="aws-iam on pg1: host, port and user"):
        await resolve_credential("aws-iam", {"name": "pg1", "host": "h", "port": 5432})
    with pytest.raises(CredentialError, match="aws-iam on pg1: no region"):
        await resolve_credential("aws-iam", {"name": "pg1", "host": "h", "port": 5432, "user": "u"})
