"""/api/v1/keys: admins create a key (shown once, stored hashed), list and revoke it."""

from __future__ import annotations

from app.auth import hash_key


async def test_create_use_list_and_revoke_a_key(client, auth, clean_store):
    r = await client.post("/api/v1/keys", json={"name": "grafana", "role": "viewer"}, headers=auth["admin"])
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    assert key.startswith("dbf_") and len(key) > 40
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get("/api/v1/instances", headers=headers)).status_code == 200
    assert (await client.post("/api/v1/sweeps", json={}, headers=headers)).status_code == 403

    listed = (await client.get("/api/v1/keys", headers=auth["admin"])).text
    assert key not in listed and hash_key(key) not in listed and '"grafana"' in listed
    async with clean_store.raw() as conn:
        row = await conn.fetchrow("select key_hash, prefix, last_used_at from api_keys where name = 'grafana'")
    assert row["key_hash"] == hash_key(key) and key.startswith(row["prefix"]) and row["last_used_at"] is not None

    key_id = next(k["id"] for k in (await client.get("/api/v1/keys", headers=auth["admin"])).json()
                  if k["name"] == "grafana")
    assert (await client.delete(f"/api/v1/keys/{key_id}", headers=auth["admin"])).status_code == 204
    r = await client.get("/api/v1/instances", headers=headers)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    async with clean_store.raw() as conn:
        actions = [tuple(a) for a in await conn.fetch("select actor, action, target from audit_log order by id")]
    assert actions == [("test-admin", "key.create", "grafana"), ("test-admin", "key.revoke", "grafana")]


async def test_keys_are_for_admins(client, auth):
    for role in ("viewer", "operator"):
        assert (await client.get("/api/v1/keys", headers=auth[role])).status_code == 403
        r = await client.post("/api/v1/keys", json={"name": "x", "role": "admin"}, headers=auth[role])
        assert r.status_code == 403
    r = await client.post("/api/v1/keys", json={"name": "x", "role": "root"}, headers=auth["admin"])
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "role"]
    assert (await client.delete("/api/v1/keys/999999", headers=auth["admin"])).status_code == 404
