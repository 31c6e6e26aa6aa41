"""Reading calibrations through the API: roles, cold start, unknown tenants."""

from __future__ import annotations

import pytest

from loops.database import db
from loops.models import Calibration, Role
from loops.timeutil import utcnow


@pytest.fixture
def acme(make):
    return make.org("acme", "Acme")


def test_cold_start_reads_null(acme, make, api_as):
    viewer = make.user(role=Role.VIEWER)
    response = api_as(viewer).get("/api/v1/orgs/acme/calibrations/engagement-rate:mention")
    assert response.status_code == 200
    assert response.get_json() == {
        "key": "engagement-rate:mention",
        "value": None,
        "sample_size": 0,
        "computed_at": None,
    }


@pytest.mark.parametrize("role", [Role.VIEWER, Role.ADMIN])
def test_viewer_and_admin_read_any_tenant(acme, make, api_as, role):
    at = utcnow()
    db.session.add(
        Calibration(
            org_id=acme.id,
            key="engagement-rate:mention",
            value=2.1333,
            sample_size=64,
            window_days=30,
            computed_at=at,
        )
    )
    db.session.commit()
    body = (
        api_as(make.user(role=role))
        .get("/api/v1/orgs/acme/calibrations/engagement-rate:mention")
        .get_json()
    )
    assert body["value"] == 2.1333
    assert body["sample_size"] == 64
    assert body["window_days"] == 30
    assert body["computed_at"].endswith("Z")


def test_member_token_is_forbidden(acme, make, api_as):
    member = make.user(role=Role.MEMBER)
    make.member(member, acme)
    response = api_as(member).get("/api/v1/orgs/acme/calibrations/engagement-rate:mention")
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"


def test_unknown_tenant_is_404(make, api_as):
    response = api_as(make.user(role=Role.VIEWER)).get(
        "/api/v1/orgs/nope/calibrations/engagement-rate:x"
    )
    assert response.status_code == 404


def test_no_token_is_401(client, acme):
    response = client.get("/api/v1/orgs/acme/calibrations/engagement-rate:x")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
