"""Credential references: resolved at connect time from env or file; errors name the reference only."""

from __future__ import annotations

import pytest

from app.inventory.credentials import CredentialError, resolve_credential
from app.inventory.store import target_for
from app.models import Instance


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
    monkeypatch.setenv("DBF_T_PW", "s3cret")
    inst = Instance(name="a", engine="postgres", host="h", port=5432, dbname="d", user="u", credential="env:DBF_T_PW",
                    tls_mode="require", cloud={"pgbouncer": True})
    target = await target_for(inst)
    assert (target.password, target.tls_mode, target.options) == ("s3cret", "require", {"pgbouncer": True})
    assert "s3cret" not in repr(target)
