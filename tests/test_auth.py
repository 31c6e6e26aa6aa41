"""Dashboard sign-in: roles, redirects, CSRF, cookies, session fixation, logout, throttling."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

from dashboard.web.auth import is_safe_next
from loops.database import db
from loops.models import Role, User
from tests.support.dashboard import csrf_token, login


def test_login_page_renders_with_a_csrf_field(client: FlaskClient) -> None:
    response = client.get("/login")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'name="csrf_token"' in html
    assert 'name="remember"' in html


@pytest.mark.parametrize("role", [Role.VIEWER, Role.ADMIN])
def test_viewers_and_admins_sign_in(client: FlaskClient, make: Any, role: Role) -> None:
    user = make.user("pm@example.com", role)
    response = login(client, user)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert client.get("/").status_code == 200


def test_wrong_password_and_unknown_email_are_refused_alike(client: FlaskClient, make: Any) -> None:
    make.user("pm@example.com", Role.VIEWER)
    wrong = login(client, "pm@example.com", password="nope")
    unknown = login(client, "nobody@example.com")
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert "Wrong email or password." in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_members_are_refused_with_a_clear_message(client: FlaskClient, make: Any) -> None:
    make.user("member@example.com", Role.MEMBER)
    response = login(client, "member@example.com")
    assert response.status_code == 403
    assert "members use the API" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_anonymous_pages_redirect_to_login_with_next(client: FlaskClient) -> None:
    for path in ("/", "/runs", "/tenants/acme", "/tenants/acme/calibrations.csv"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next=")


def test_login_redirects_back_to_the_page_asked_for(client: FlaskClient, make: Any) -> None:
    user = make.user("pm@example.com", Role.VIEWER)
    response = login(client, user, next="/runs?state=failed")
    assert response.headers["Location"] == "/runs?state=failed"


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"]
)
def test_login_never_redirects_off_site(client: FlaskClient, make: Any, target: str) -> None:
    user = make.user("pm@example.com", Role.VIEWER)
    response = login(client, user, next=target)
    assert response.headers["Location"] == "/"
    assert not is_safe_next(target)


def test_htmx_request_without_session_gets_hx_redirect(client: FlaskClient) -> None:
    response = client.get(
        "/tune/status", headers={"HX-Request": "true", "HX-Current-URL": "http://x/runs"}
    )
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login?next=/runs"


def test_login_without_csrf_token_is_400(client: FlaskClient, make: Any) -> None:
    make.user("pm@example.com", Role.VIEWER)
    response = client.post("/login", data={"email": "pm@example.com", "password": "x"})
    assert response.status_code == 400


def test_session_cookie_flags(client: FlaskClient, make: Any) -> None:
    user = make.user("pm@example.com", Role.VIEWER)
    response = login(client, user)
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("session="))
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain HTTP (local development)


def test_cookies_are_secure_over_https(app: Flask, make: Any) -> None:
    user = make.user("pm@example.com", Role.VIEWER)
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    token = csrf_token(client)
    response = client.post(
        "/login",
        data={
            "email": user.email,
            "password": "correct-horse-battery",
            "csrf_token": token,
            "remember": "1",
        },
        base_url="https://localhost",
        headers={"Referer": "https://localhost/login"},  # Flask-WTF's strict HTTPS check
    )
    assert response.status_code == 302
    cookies = response.headers.getlist("Set-Cookie")
    # flask-login sets the remember-me cookie in a hook of its own: that one too.
    assert any(c.startswith("remember_token=") for c in cookies)
    assert all("Secure" in c for c in cookies)


def test_remember_me_sets_a_long_lived_cookie_only_when_asked(
    client: FlaskClient, app: Flask, make: Any
) -> None:
    user = make.user("pm@example.com", Role.VIEWER)
    response = login(client, user)
    assert not any(c.startswith("remember_token=") for c in response.headers.getlist("Set-Cookie"))
    other = app.test_client()
    response = login(other, user, remember="1")
    remember = [
        c for c in response.headers.getlist("Set-Cookie") if c.startswith("remember_token=")
    ]
    assert remember and "HttpOnly" in remember[0] and "SameSite=Lax" in remember[0]


def test_session_fixation_nothing_planted_survives_login(client: FlaskClient, make: Any) -> None:
    user = make.user("pm@example.com", Role.VIEWER)
    with client.session_transaction() as sess:
        sess["planted"] = "by-attacker"
    login(client, user)
    with client.session_transaction() as sess:
        assert "planted" not in sess
        assert sess["_user_id"] == f"{user.id}:0"


def test_logout_is_post_only_with_csrf(client: FlaskClient, make: Any) -> None:
    user = make.user("pm@example.com", Role.VIEWER)
    login(client, user)
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200


def test_logout_kills_every_copy_of_the_old_cookie(
    client: FlaskClient, app: Flask, make: Any
) -> None:
    user = make.user("pm@example.com", Role.VIEWER)
    login(client, user, remember="1")
    stolen = {c.key: c.value for c in client._cookies.values()}  # type: ignore[attr-defined]
    token = csrf_token(client, "/")
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert db.session.get(User, user.id).session_version == 1
    replay = app.test_client()
    for key, value in stolen.items():
        replay.set_cookie(key, value)
    assert replay.get("/").status_code == 302


@pytest.fixture
def app_config(app_config: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    """Per-test overrides through indirect parametrization."""
    return {**app_config, **getattr(request, "param", {})}


@pytest.mark.parametrize("app_config", [{"RATELIMIT_ENABLED": True}], indirect=True)
def test_login_is_throttled_after_repeated_failures(
    app: Flask, make: Any, redis_conn: Redis
) -> None:
    make.user("pm@example.com", Role.VIEWER)
    _assert_throttles(app)
    assert any(b"el-limit" in k for k in redis_conn.keys("*"))


@pytest.mark.parametrize(
    "app_config",
    [{"RATELIMIT_ENABLED": True, "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1/0"}],
    indirect=True,
)
def test_login_throttling_falls_back_to_memory_when_redis_is_down(app: Flask, make: Any) -> None:
    make.user("pm@example.com", Role.VIEWER)
    _assert_throttles(app)


def test_successful_logins_are_not_counted(app: Flask, make: Any) -> None:
    app.config["RATELIMIT_ENABLED"] = True
    user = make.user("pm@example.com", Role.VIEWER)
    for _ in range(8):
        client = app.test_client()
        assert login(client, user).status_code == 302


def _assert_throttles(app: Flask) -> None:
    client = app.test_client()
    statuses = [login(client, "pm@example.com", password="wrong").status_code for _ in range(6)]
    assert statuses[:5] == [401] * 5
    assert statuses[5] == 429
    # Even the right password is refused while throttled.
    response = login(client, "pm@example.com")
    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.get_data(as_text=True)
