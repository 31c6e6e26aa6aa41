"""Dashboard failures are HTML pages in the app's layout; the API's stay JSON."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from dashboard import create_app
from loops.database import db
from loops.models import Role
from tests.support.dashboard import login


def _add_failing_routes(app: Flask) -> None:
    """A page and an API route that fail the way real code does, registered before any request."""

    @app.get("/test-broken-page")
    def broken_page() -> str:
        raise RuntimeError("a bug in a page")

    @app.get("/api/v1/test-broken")
    def broken_api() -> str:
        raise RuntimeError("a bug in the API")

    @app.get("/test-needs-database")
    def needs_database() -> str:
        return str(db.session.execute(text("SELECT 1")).scalar_one())


@pytest.fixture
def failing_app(app: Flask) -> Flask:
    _add_failing_routes(app)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: the handlers answer
    return app


def _is_layout_page(body: str) -> bool:
    return 'class="topbar"' in body and "app.css" in body and "</html>" in body


def test_a_failing_page_is_a_500_page_in_the_layout(failing_app, make):
    client = failing_app.test_client()
    user = make.user("pm@example.com", Role.VIEWER)
    login(client, user)
    response = client.get("/test-broken-page")
    assert response.status_code == 500
    assert response.mimetype == "text/html"
    body = response.get_data(as_text=True)
    assert _is_layout_page(body)
    assert "Something went wrong" in body
    assert "pm@example.com" in body  # the signed-in layout, navigation included
    assert "a bug in a page" not in body and "Traceback" not in body


def test_a_failing_api_route_stays_json(failing_app):
    response = failing_app.test_client().get("/api/v1/test-broken")
    assert response.status_code == 500
    assert response.get_json() == {
        "error": {"code": "internal_error", "message": "Internal server error."}
    }


def test_a_dead_database_is_a_503_page_in_the_layout(app_config: dict[str, Any], redis_conn):
    dead = create_app(
        app_config | {"SQLALCHEMY_DATABASE_URI": "sqlite:////nonexistent-dir/none.db"}
    )
    _add_failing_routes(dead)
    dead.config["PROPAGATE_EXCEPTIONS"] = False
    client = dead.test_client()
    response = client.get("/test-needs-database")
    assert response.status_code == 503
    assert response.mimetype == "text/html"
    body = response.get_data(as_text=True)
    assert _is_layout_page(body)
    assert "Temporarily unavailable" in body
    # The JSON side of the same failure.
    api = client.get("/api/v1/notifications", headers={"Authorization": "Bearer elp_" + "x" * 40})
    assert api.status_code == 503
    assert api.get_json()["error"]["code"] == "unavailable"
