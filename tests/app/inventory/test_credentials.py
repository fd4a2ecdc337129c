"""Credential references: resolved at connect time from env or file; errors name the reference only;
an instance's env:/file: reference outside the allow-list is refused before anything is read."""

from __future__ import annotations

import uuid

import pytest

from app.inventory.credentials import CredentialError, refusal, resolve_credential
from app.inventory.schemas import InstanceIn
from app.inventory.store import upsert_instances
from app.inventory.targets import target_for
from app.models import Instance
from app.settings import CredentialSettings, Settings
from app.sweep import Sweeper

SECRET = "s3cret-" + uuid.uuid4().hex


async def test_env_reference(monkeypatch):
    monkeypatch.setenv("DBF_T_PW", "s3cret")
    assert await resolve_credential("env:DBF_T_PW") == "s3cret"


async def test_file_reference_strips_the_trailing_newline(tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    assert await resolve_credential(f"file:{tmp_path / 'pw'}") == "s3cret"


@pytest.mark.parametrize("reference", [None, ""])
async def test_no_reference_means_no_password(reference):
    assert await resolve_credential(reference) is None


async def test_missing_env_var(monkeypatch):
    monkeypatch.delenv("DBFLEET_TEST_MISSING", raising=False)
    with pytest.raises(CredentialError, match="^environment variable DBFLEET_TEST_MISSING is not set$"):
        await resolve_credential("env:DBFLEET_TEST_MISSING")


async def test_unreadable_file(tmp_path):
    with pytest.raises(CredentialError, match=f"cannot read credential file {tmp_path}/nope: No such file"):
        await resolve_credential(f"file:{tmp_path}/nope")


async def test_unknown_scheme():
    with pytest.raises(CredentialError, match="unknown credential scheme 'vault'"):
        await resolve_credential("vault:secret/db")


async def test_target_for_resolves_now_and_hides_the_password(monkeypatch):
    monkeypatch.setenv("DBFLEET_CRED_T_PW", "s3cret")
    inst = Instance(name="a", engine="postgres", host="h", port=5432, dbname="d", user="u",
                    credential="env:DBFLEET_CRED_T_PW",
                    tls_mode="require", cloud={"pgbouncer": True})
    target = await target_for(inst)
    assert (target.password, target.tls_mode, target.options) == ("s3cret", "require", {"pgbouncer": True})
    assert "s3cret" not in repr(target)


@pytest.fixture
def secrets(tmp_path):
    """An allowed directory holding `pw`, a file outside it, and a symlink inside pointing out."""
    allowed, outside = tmp_path / "secrets", tmp_path / "secrets-not"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "pw").write_text(SECRET)
    (outside / "pw").write_text(SECRET)
    (allowed / "link").symlink_to(outside / "pw")
    (allowed / "sub").mkdir()
    (allowed / "sub" / "ok").symlink_to(allowed / "pw")
    return allowed


REFUSALS = [
    ("env:DBFLEET_CRED_PG", ""),
    ("env:DBFLEET_CRED_", ""),
    ("env:HOME", "env: references must name a variable starting with DBFLEET_CRED_"),
    ("env:DBFLEET_DATABASE_URL", "env: references must name a variable starting with DBFLEET_CRED_"),
    ("env:X_DBFLEET_CRED_PG", "env: references must name"),
    ("file:{d}/pw", ""),
    ("file:{d}/sub/ok", ""),
    ("file:{d}/sub/../pw", ""),
    ("file:{d}/../secrets-not/pw", "file: references must point inside"),
    ("file:{d}/link", "file: references must point inside"),
    ("file:{d}", "file: references must point inside"),
    ("file:{d}-not/pw", "file: references must point inside"),
    ("file:/etc/passwd", "file: references must point inside"),
    ("aws-sm:dbf/pg#password", ""),
    ("aws-iam", ""),
    (None, ""),
]


@pytest.mark.parametrize("reference, expected", REFUSALS)
def test_the_allow_list(secrets, reference, expected):
    allowed = CredentialSettings(env_prefixes=["DBFLEET_CRED_"], file_dirs=[str(secrets)])
    reason = refusal(reference and reference.format(d=secrets), allowed)
    assert reason.startswith(expected) if expected else reason == ""


def test_a_refusal_names_the_allow_list_never_the_reference():
    pasted = "Tr0ub4dor_" + uuid.uuid4().hex
    for reference in (f"env:{pasted}", f"file:/tmp/{pasted}"):
        reason = refusal(reference, CredentialSettings())
        assert reason and pasted not in reason and "credentials." in reason


def test_a_relative_directory_allows_nothing(secrets, monkeypatch):
    monkeypatch.chdir(secrets.parent)
    assert refusal(f"file:{secrets}/pw", CredentialSettings(file_dirs=["secrets"])) != ""


@pytest.mark.parametrize("allowed, message", [
    (CredentialSettings(env_prefixes=[]), "env: references are not allowed"),
    (CredentialSettings(file_dirs=[]), "file: references are not allowed"),
])
def test_an_empty_list_allows_none_of_its_kind(allowed, message):
    assert refusal("env:DBFLEET_CRED_X" if "env" in message else "file:/var/run/secrets/dbfleet/x", allowed) \
        .startswith(message)


async def test_an_instance_reference_outside_the_allow_list_is_never_read(secrets, monkeypatch):
    monkeypatch.setenv("DBF_I12_OTHER", SECRET)
    for reference in ("env:DBF_I12_OTHER", f"file:{secrets}/pw", f"file:{secrets}/link"):
        with pytest.raises(CredentialError) as refused:
            await resolve_credential(reference, {"name": "a"})
        assert "credentials." in str(refused.value) and SECRET not in str(refused.value)
    # The same references are read when the allow-list given covers them.
    allowed = CredentialSettings(env_prefixes=["DBF_I12_"], file_dirs=[str(secrets)])
    assert await resolve_credential("env:DBF_I12_OTHER", {"name": "a"}, allowed) == SECRET
    assert await resolve_credential(f"file:{secrets}/pw", {"name": "a"}, allowed) == SECRET
    with pytest.raises(CredentialError, match="file: references must point inside"):
        await resolve_credential(f"file:{secrets}/link", {"name": "a"}, allowed)


async def test_target_for_refuses_a_reference_outside_the_allow_list(monkeypatch):
    monkeypatch.setenv("DBF_I12_OTHER", SECRET)
    inst = Instance(name="a", engine="postgres", host="h", port=5432, dbname="d", user="u",
                    credential="env:DBF_I12_OTHER", tls_mode="prefer", cloud={})
    with pytest.raises(CredentialError, match="DBFLEET_CRED_"):
        await target_for(inst)


async def test_a_stored_reference_outside_the_allow_list_is_credential_unavailable(clean_store, target_db, monkeypatch):
    """One that got into the store before the allow-list existed (or past every door) is refused at connect."""
    monkeypatch.setenv("DBF_I12_OTHER", SECRET)
    db = await target_db(prefix="dbf_i12")
    async with clean_store.sessions() as session, session.begin():
        await upsert_instances(session, [InstanceIn(name="legacy", engine="postgres", host="127.0.0.1", port=5432,
                                                    dbname=db, user="postgres", credential="env:DBF_I12_OTHER")],
                               actor="test")
    sweeper = Sweeper(clean_store, Settings(worker={"backoff_base_s": 0, "connect_timeout_s": 2}))
    try:
        summary = await sweeper.sweep(["health"])
    finally:
        await sweeper.close()
    assert (summary.ok, summary.failed) == (0, 1)
    async with clean_store.raw() as conn:
        rows = await conn.fetch("select f.check, f.title, f::text as everything from findings f")
    assert [r["check"] for r in rows] == ["credential_unavailable"]
    assert "DBFLEET_CRED_" in rows[0]["title"] and SECRET not in rows[0]["everything"]
