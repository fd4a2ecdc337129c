"""The OpenAPI document is exact: every route names its response schema and its error statuses,
one error shape (RFC 9457) for all of them, and the inputs issue 18 found reaching PostgreSQL or
a 500 are 4xx problems now."""

from __future__ import annotations

import pytest

from app.api.errors import PROBLEM_MEDIA_TYPE
from app.auth import Role
from app.main import create_app
from app.settings import Settings
from tests.app.api.api_roles import api_routes, required_role

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def document() -> dict:
    return create_app(Settings(), "postgresql://unused@127.0.0.1:1/unused", check_migrated=False).openapi()


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield f"{method.upper()} {path}", op


def _named(schema: dict) -> bool:
    """A model of its own (or a list of one), or a file: not FastAPI's "any JSON object"."""
    return "$ref" in schema or "$ref" in schema.get("items", {}) or schema.get("type") == "string" \
        or bool(schema.get("properties"))


def test_every_operation_names_its_success_schema(document):
    missing = []
    for label, op in operations(document):
        [ok] = [code for code in op["responses"] if code.startswith("2")]
        content = op["responses"][ok].get("content", {})
        if ok == "204":
            assert content == {}, label
        elif not content or not all(_named(media.get("schema", {})) for media in content.values()):
            missing.append(label)
    assert missing == []


def test_every_error_is_one_problem_shape(document):
    assert "HTTPValidationError" not in document["components"]["schemas"]
    wrong = []
    for label, op in operations(document):
        for code, response in op["responses"].items():
            if code[0] in "45" and label != "GET /readyz":  # readiness reports its own status body
                schema = response.get("content", {}).get(PROBLEM_MEDIA_TYPE, {}).get("schema", {})
                if schema.get("$ref") != "#/components/schemas/Problem":
                    wrong.append(f"{label} {code}")
    assert wrong == []


def test_authenticated_operations_document_401_422_and_a_role_refusal(document):
    by_label = dict(operations(document))
    gaps = []
    for label, route in api_routes():
        op = by_label[label]
        codes = set(op["responses"])
        if op.get("security") and "401" not in codes:
            gaps.append(f"{label}: 401")
        if required_role(route) > Role.viewer and "403" not in codes:
            gaps.append(f"{label}: 403")
        if op.get("parameters") or op.get("requestBody"):
            if "422" not in codes:
                gaps.append(f"{label}: 422")
    assert gaps == []


def test_ids_and_names_carry_their_constraints(document):
    params = {(label, p["name"]): p["schema"] for label, op in operations(document) for p in op.get("parameters", [])}
    assert params[("POST /api/v1/findings/{finding_id}:resolve", "finding_id")]["maximum"] == 2**63 - 1
    assert params[("DELETE /api/v1/keys/{key_id}", "key_id")]["maximum"] == 2**31 - 1  # api_keys.id is an integer
    assert params[("PATCH /api/v1/instances/{name}", "name")]["pattern"].startswith("^[A-Za-z0-9]")
    instance_filter = params[("GET /api/v1/runs", "instance")]["anyOf"][0]
    assert instance_filter["maxLength"] == 200 and "pattern" in instance_filter


async def test_the_inputs_issue_18_found_are_4xx_problems(client, auth, clean_store):
    admin = auth["admin"]
    r = await client.post("/api/v1/findings/32947679656091269988352:resolve", headers=admin)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert r.json()["errors"][0]["loc"] == ["path", "finding_id"]
    for path in ("/api/v1/runs", "/api/v1/findings"):
        r = await client.get(path, params={"instance": "a\x00b"}, headers=admin)
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "instance"], r.text
        assert "a\x00b" not in r.text and "\\u0000" not in r.text  # the value is not echoed
    body = {"name": "pg-a", "engine": "postgres", "host": "127.0.0.1", "port": 1, "dbname": "x"}
    assert (await client.post("/api/v1/instances", json=body, headers=admin)).status_code == 201
    r = await client.patch("/api/v1/instances/pg-a", json={"host": None}, headers=admin)
    assert r.status_code == 422 and [e["loc"] for e in r.json()["errors"]] == [["body", "host"]]
    r = await client.post("/api/v1/instances/pg-a/partitions:apply", content=b"null",
                          headers={**admin, "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body"]
    r = await client.post("/api/v1/sweeps", json={"wait": 0}, headers=auth["operator"])
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "wait"]  # 0 is not false


async def test_an_unreachable_database_is_a_502_with_the_reason(client, auth, clean_store):
    body = {"name": "pg-gone", "engine": "postgres", "host": "127.0.0.1", "port": 1, "dbname": "x"}
    assert (await client.post("/api/v1/instances", json=body, headers=auth["admin"])).status_code == 201
    r = await client.get("/api/v1/instances/pg-gone/partitions/plan", headers=auth["viewer"])
    problem = r.json()
    assert r.status_code == 502 and problem["title"] == "Bad Gateway" and problem["status"] == 502
    assert problem["detail"].startswith("pg-gone is unreachable:") and len(problem["detail"]) > 25


async def test_a_viewer_is_refused_what_needs_an_operator_or_admin(client, auth, clean_store):
    r = await client.post("/api/v1/sweeps", json={}, headers=auth["viewer"])
    assert r.status_code == 403 and r.json()["detail"] == "this needs the operator role; key 'test-viewer' is viewer"
    # the role is checked before the body: a viewer learns nothing about what a valid body is
    r = await client.post("/api/v1/keys", json={"role": "root"}, headers=auth["viewer"])
    assert r.status_code == 403


async def test_405_names_every_documented_method(client):
    r = await client.options("/api/v1/instances/pg-a")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, PATCH"
    r = await client.get("/api/v1/findings/1:ack")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


async def test_revoking_the_key_that_signs_the_request_is_409(client, auth, clean_store):
    keys = (await client.get("/api/v1/keys", headers=auth["admin"])).json()
    own = next(k["id"] for k in keys if k["name"] == "test-admin")
    r = await client.delete(f"/api/v1/keys/{own}", headers=auth["admin"])
    assert r.status_code == 409 and "another admin key" in r.json()["detail"]
