"""Who may do what: every state-changing route, sessions at login/logout, tokens by role."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.routing import Rule

from loops.database import db
from loops.models import Role, TuneRun
from tests.support.dashboard import TEST_PASSWORD

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# Routes anyone may POST to; every other state-changing route needs a role.
PUBLIC = {"auth.login"}
# Routes any signed-in dashboard user may POST to.
ANY_SIGNED_IN = {"auth.logout"}
ARGS = {
    "slug": "acme",
    "job_id": "job-1",
    "queue_name": "engagement",
    "registry_name": "failed",
    "instance_number": 0,
    "per_page": 10,
    "page": 1,
    "order": "asc",
    "filename": "x.js",
}


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    # Authorization, not CSRF, is under test here (CSRF has its own test below).
    return {**app_config, "WTF_CSRF_ENABLED": False}


def _dashboard_rules(app: Flask, methods: set[str]) -> list[tuple[Rule, str]]:
    found = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") or rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) & methods):
            found.append((rule, method))
    return found


def _url(rule: Rule) -> str:
    url = rule.rule
    for name in rule.arguments:
        url = re.sub(rf"<(?:[^:<>]+:)?{name}>", str(ARGS.get(name, "x")), url)
    return url


def _login(client: FlaskClient, email: str, remember: bool = False) -> None:
    data = {"email": email, "password": TEST_PASSWORD}
    if remember:
        data["remember"] = "1"
    reply = client.post("/login", data=data)
    assert reply.status_code == 302, reply.data[:300]


def test_every_state_changing_dashboard_route_refuses_anonymous_and_viewers(
    app: Flask, make: Any
) -> None:
    make.org(slug="acme")
    viewer = make.user(role=Role.VIEWER)
    routes = [
        (rule, method)
        for rule, method in _dashboard_rules(app, STATE_CHANGING)
        if rule.endpoint not in PUBLIC
    ]
    endpoints = {rule.endpoint for rule, _ in routes}
    # The enumeration really found the dashboard's own actions (and rq-dashboard's).
    assert {"views.tune_all", "views.tune_tenant", "views.tune_rerun_failed"} <= endpoints
    assert any(e.startswith("rq_dashboard.") for e in endpoints)

    anonymous = app.test_client()
    for rule, method in routes:
        reply = anonymous.open(_url(rule), method=method)
        assert reply.status_code == 401 or (
            reply.status_code in (302, 303) and "/login" in reply.headers["Location"]
        ), (method, rule.rule, reply.status_code)

    signed_in = app.test_client()
    _login(signed_in, viewer.email)
    for rule, method in routes:
        if rule.endpoint in ANY_SIGNED_IN:
            continue
        reply = signed_in.open(_url(rule), method=method, headers={"Origin": "http://localhost"})
        assert reply.status_code == 403, (method, rule.rule, reply.status_code)
    assert db.session.execute(select(func.count()).select_from(TuneRun)).scalar_one() == 0


def test_admin_pages_refuse_viewers(app: Flask, make: Any) -> None:
    viewer = make.user(role=Role.VIEWER)
    client = app.test_client()
    _login(client, viewer.email)
    for rule, method in _dashboard_rules(app, {"GET"}):
        if not rule.rule.startswith("/admin/"):
            continue
        # follow_redirects: werkzeug's trailing-slash 308 comes before any guard.
        reply = client.open(_url(rule), method=method, follow_redirects=True)
        assert reply.status_code == 403, (rule.rule, reply.status_code)


def test_api_roles_member_token_cannot_create_or_read_calibrations(
    make: Any, api_as: Any, client: FlaskClient
) -> None:
    make.org(slug="acme")
    member = api_as(make.user(role=Role.MEMBER))
    viewer = api_as(make.user(role=Role.VIEWER))
    body = {"user_email": "nobody@example.com", "feature": "mention", "title": "t"}
    assert member.post("/api/v1/notifications", json=body).status_code == 403
    assert viewer.post("/api/v1/notifications", json=body).status_code == 403
    assert member.get("/api/v1/orgs/acme/calibrations/engagement-rate:x").status_code == 403
    assert viewer.get("/api/v1/orgs/acme/calibrations/engagement-rate:x").status_code == 200
    for method, path in (
        ("GET", "/api/v1/notifications"),
        ("POST", "/api/v1/notifications"),
        ("POST", "/api/v1/notifications/1/read"),
        ("DELETE", "/api/v1/notifications/1/read"),
        ("POST", "/api/v1/notifications/read"),
        ("GET", "/api/v1/orgs/acme/calibrations/x"),
    ):
        reply = client.open(path, method=method)
        assert reply.status_code == 401 and reply.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_token_is_refused_at_once(make: Any, client: FlaskClient) -> None:
    from loops.models import ApiToken
    from loops.tokens import revoke

    user = make.user()
    token = make.token(user)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/notifications", headers=headers).status_code == 200
    token_id = db.session.execute(select(ApiToken.id).where(ApiToken.user_id == user.id)).scalar()
    assert token_id is not None and revoke(token_id)
    assert client.get("/api/v1/notifications", headers=headers).status_code == 401


def test_tokens_are_compared_in_constant_time(
    make: Any, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hmac

    from loops import tokens

    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    token = make.token(make.user())
    assert (
        client.get(
            "/api/v1/notifications", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 200
    )
    assert calls, "the token check must go through hmac.compare_digest"


def test_login_starts_a_fresh_session(app: Flask, make: Any) -> None:
    viewer = make.user(role=Role.VIEWER)
    client = app.test_client()
    client.get("/login")
    with client.session_transaction() as session:
        session["planted"] = "attacker-chosen"  # e.g. a cookie fixed by an attacker
    before = client.get_cookie("session")
    _login(client, viewer.email)
    after = client.get_cookie("session")
    assert before is not None and after is not None and before.value != after.value
    with client.session_transaction() as session:
        assert "planted" not in session
    assert client.get("/").status_code == 200


def test_logout_invalidates_the_session_and_remember_cookie_everywhere(
    app: Flask, make: Any
) -> None:
    viewer = make.user(role=Role.VIEWER)
    client = app.test_client()
    _login(client, viewer.email, remember=True)
    stolen_session = client.get_cookie("session")
    stolen_remember = client.get_cookie("remember_token")
    assert stolen_session is not None and stolen_remember is not None
    assert client.get("/").status_code == 200
    assert client.post("/logout").status_code in (302, 303)

    replay = app.test_client()
    replay.set_cookie("session", stolen_session.value)
    assert replay.get("/").status_code in (302, 303)
    replay_remember = app.test_client()
    replay_remember.set_cookie("remember_token", stolen_remember.value)
    assert replay_remember.get("/").status_code in (302, 303)


def test_nul_in_dashboard_paths_and_parameters_is_never_a_500(app: Flask, make: Any) -> None:
    """On PostgreSQL a NUL reaching a query raises; found on /tenants/<slug> pages."""
    make.org(slug="acme")
    client = app.test_client()
    _login(client, make.user(role=Role.VIEWER).email)
    for path in (
        "/tenants/a%00b",
        "/tenants/a%00b/calibrations.csv",
        "/tenants/a%00b/history",
        "/tenants/a%00b/calibrations",
    ):
        assert client.get(path).status_code == 404, path
    for path in ("/?q=%00", "/runs?state=%00", "/tune/status?cells=%00"):
        assert client.get(path).status_code == 400, path
    assert (
        client.post("/login", data={"email": "a\x00b@example.com", "password": "x"}).status_code
        == 400
    )


class TestCsrf:
    @pytest.fixture
    def app_config(self, app_config: dict[str, Any]) -> dict[str, Any]:
        return {**app_config, "WTF_CSRF_ENABLED": True}

    def test_admin_post_without_csrf_token_is_400(self, app: Flask, make: Any) -> None:
        admin = make.user(role=Role.ADMIN)
        make.org(slug="acme")
        client = app.test_client()
        page = client.get("/login")
        token = re.search(rb'name="csrf_token" value="([^"]+)"', page.data)
        assert token is not None
        reply = client.post(
            "/login",
            data={"email": admin.email, "password": TEST_PASSWORD, "csrf_token": token.group(1)},
        )
        assert reply.status_code == 302
        for path in ("/tune/run", "/tenants/acme/tune", "/tune/rerun-failed"):
            assert client.post(path).status_code == 400
            assert client.post(path, headers={"X-CSRFToken": "forged"}).status_code == 400
        assert db.session.execute(select(func.count()).select_from(TuneRun)).scalar_one() == 0
