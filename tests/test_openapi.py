"""The OpenAPI document is valid and describes the routes as they really behave."""

from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from loops.database import db
from loops.delivery import pin
from loops.models import Role
from loops.policy_rules import DeliveryMode
from loops.timeutil import utcnow


@pytest.fixture
def document(client) -> dict[str, Any]:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_document_is_valid_openapi(document):
    validate(document)


def test_every_api_route_is_documented_and_vice_versa(app, document):
    served: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        if not (rule.rule.startswith("/api/v1/") or rule.rule == "/healthz"):
            continue
        if rule.rule in ("/api/v1/openapi.json", "/api/v1/docs"):  # the document, its viewer
            continue
        path = re.sub(r"<(?:[a-z]+:)?raw_id>", "{id}", rule.rule)
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", path)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method.lower()))
    documented = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert served == documented


def _validator(document: dict[str, Any], path: str, method: str, status: int):
    schema = document["paths"][path][method]["responses"][str(status)]["content"][
        "application/json"
    ]["schema"]
    root = dict(schema, components=document["components"])
    return Draft202012Validator(root)


def test_real_responses_match_their_schemas(document, make, api_as, client):
    admin = make.user(role=Role.ADMIN)
    reader = make.user("reader@example.com")
    org = make.org("acme")
    make.member(reader, org)
    admin_api, reader_api = api_as(admin), api_as(reader)

    calls = []
    created = admin_api.post(
        "/api/v1/notifications",
        json={"user_email": "reader@example.com", "feature": "mention", "title": "Hi"},
    )
    calls.append(("/api/v1/notifications", "post", created))
    nid = created.get_json()["id"]
    path = "/api/v1/notifications/{id}/read"
    calls.append((path, "post", reader_api.post(f"/api/v1/notifications/{nid}/read")))
    calls.append((path, "delete", reader_api.delete(f"/api/v1/notifications/{nid}/read")))
    calls.append((path, "post", reader_api.post("/api/v1/notifications/999/read")))
    calls.append(
        (
            "/api/v1/notifications/read",
            "post",
            reader_api.post("/api/v1/notifications/read", json={"all": True}),
        )
    )
    calls.append(
        (
            "/api/v1/notifications/read",
            "post",
            reader_api.post("/api/v1/notifications/read", json={"ids": "x"}),
        )
    )
    calls.append(("/api/v1/notifications", "get", reader_api.get("/api/v1/notifications")))
    calls.append(("/api/v1/notifications", "get", client.get("/api/v1/notifications")))
    calls.append(
        (
            "/api/v1/notifications",
            "post",
            reader_api.post("/api/v1/notifications", json={"feature": "x", "title": "y"}),
        )
    )
    cal = "/api/v1/orgs/{slug}/calibrations/{key}"
    calls.append((cal, "get", admin_api.get("/api/v1/orgs/acme/calibrations/engagement-rate:x")))
    calls.append((cal, "get", admin_api.get("/api/v1/orgs/none/calibrations/engagement-rate:x")))
    calls.append((cal, "get", admin_api.get("/api/v1/orgs/acme/calibrations/engagement-ratio:x")))
    pol = "/api/v1/orgs/{slug}/delivery-policy"
    calls.append((pol, "get", admin_api.get("/api/v1/orgs/acme/delivery-policy")))
    calls.append((pol, "get", admin_api.get("/api/v1/orgs/none/delivery-policy")))
    pin(org, "mention", DeliveryMode.DIGEST, "admin@example.com", utcnow())
    db.session.commit()
    calls.append((pol, "get", admin_api.get("/api/v1/orgs/acme/delivery-policy")))
    calls.append((pol, "get", reader_api.get("/api/v1/orgs/acme/delivery-policy")))
    calls.append(("/healthz", "get", client.get("/healthz")))

    for doc_path, method, response in calls:
        documented = document["paths"][doc_path][method]["responses"]
        assert str(response.status_code) in documented, (doc_path, method, response.status_code)
        _validator(document, doc_path, method, response.status_code).validate(response.get_json())


def test_unexpected_errors_are_json_without_a_stack_trace(app, make, api_as, monkeypatch):
    from loops import notifications

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(notifications, "list_for_user", explode)
    response = api_as(make.user()).get("/api/v1/notifications")
    assert response.status_code == 500
    assert response.get_json() == {
        "error": {"code": "internal_error", "message": "Internal server error."}
    }
    assert b"secret internals" not in response.data
