"""Behind a proxy: TRUSTED_PROXY_COUNT decides whose X-Forwarded-* headers are believed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask, url_for

from loops.models import Role
from tests.support.dashboard import TEST_PASSWORD
from tests.support.live_server import LiveServer, start_gunicorn

PROXY = "127.0.0.1"  # where a reverse proxy on the same host connects from
CLIENT_A = "198.51.100.10"
CLIENT_B = "198.51.100.20"


def forwarded(client_addr: str, proto: str = "http") -> dict[str, Any]:
    """What the test client sends when a proxy relays a request from ``client_addr``."""
    return {
        "environ_base": {"REMOTE_ADDR": PROXY},
        "headers": {"X-Forwarded-For": client_addr, "X-Forwarded-Proto": proto},
    }


@pytest.fixture
def app_config(app_config: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    return {**app_config, **getattr(request, "param", {})}


trusting_one = pytest.mark.parametrize("app_config", [{"TRUSTED_PROXY_COUNT": 1}], indirect=True)


# --- the client's address -----------------------------------------------------


def test_without_trusted_proxies_a_forged_forwarded_for_is_ignored(client):
    # A remote client claiming to be loopback does not get /metrics.
    response = client.get(
        "/metrics",
        environ_base={"REMOTE_ADDR": CLIENT_A},
        headers={"X-Forwarded-For": "127.0.0.1"},
    )
    assert response.status_code == 403


@trusting_one
def test_with_one_trusted_proxy_the_client_address_is_the_forwarded_one(client):
    assert client.get("/metrics", **forwarded(CLIENT_A)).status_code == 403
    assert client.get("/metrics", **forwarded("127.0.0.1")).status_code == 200
    # The client prepends a forged hop; the proxy appends the address it saw. Only the
    # last hop, the one our proxy wrote, counts.
    forged_chain = {
        "environ_base": {"REMOTE_ADDR": PROXY},
        "headers": {"X-Forwarded-For": f"127.0.0.1, {CLIENT_A}"},
    }
    assert client.get("/metrics", **forged_chain).status_code == 403


def _fail_logins(app: Flask, client_addr: str, times: int) -> list[int]:
    client = app.test_client()
    statuses = []
    for _ in range(times):
        response = client.post(
            "/login",
            data={"email": "pm@example.com", "password": "wrong"},
            **forwarded(client_addr),
        )
        statuses.append(response.status_code)
    return statuses


@pytest.mark.parametrize(
    "app_config",
    [{"TRUSTED_PROXY_COUNT": 1, "RATELIMIT_ENABLED": True, "WTF_CSRF_ENABLED": False}],
    indirect=True,
)
def test_login_throttling_keys_on_the_forwarded_client(app, make):
    make.user("pm@example.com", Role.VIEWER)
    assert _fail_logins(app, CLIENT_A, 6) == [401] * 5 + [429]
    # Another client behind the same proxy is not locked out by the first one.
    assert _fail_logins(app, CLIENT_B, 1) == [401]


@pytest.mark.parametrize(
    "app_config", [{"RATELIMIT_ENABLED": True, "WTF_CSRF_ENABLED": False}], indirect=True
)
def test_without_trusted_proxies_forged_addresses_do_not_escape_throttling(app, make):
    make.user("pm@example.com", Role.VIEWER)
    assert _fail_logins(app, CLIENT_A, 5) == [401] * 5
    assert _fail_logins(app, CLIENT_B, 1) == [429]


# --- the original scheme --------------------------------------------------------


def _set_cookies(response: Any) -> list[str]:
    headers = response.headers
    return (
        headers.get_list("set-cookie")
        if hasattr(headers, "get_list")
        else headers.getlist("Set-Cookie")
    )


def _cookie_header(set_cookies: list[str]) -> str:
    return "; ".join(c.split(";", 1)[0] for c in set_cookies)


@trusting_one
def test_https_at_the_proxy_means_secure_cookies_https_redirects_and_hsts(app, client, make):
    @app.get("/test-external-url")
    def external_url() -> str:
        return url_for("auth.login", _external=True)

    user = make.user("pm@example.com", Role.VIEWER)
    page = client.get("/login", **forwarded(CLIENT_A, "https"))
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert token
    request = forwarded(CLIENT_A, "https")
    # The proxy-to-app hop is plain HTTP: hand back the Secure session cookie as a
    # proxy would (the test client, like a browser, keeps Secure cookies for https).
    request["headers"]["Cookie"] = _cookie_header(_set_cookies(page))
    # A browser's same-origin Referer, which CSRF protection requires over HTTPS.
    request["headers"]["Referer"] = "https://localhost/login"
    response = client.post(
        "/login",
        data={"email": user.email, "password": TEST_PASSWORD, "csrf_token": token.group(1)},
        **request,
    )
    assert response.status_code == 302
    cookies = _set_cookies(response)
    assert cookies and all("Secure" in c for c in cookies)
    assert not response.headers["Location"].startswith("http:")
    url = client.get("/test-external-url", **forwarded(CLIENT_A, "https")).get_data(as_text=True)
    assert url == "https://localhost/login"


def test_without_trusted_proxies_a_forged_https_changes_nothing(client, make):
    make.user("pm@example.com", Role.VIEWER)
    page = client.get("/login", **forwarded(CLIENT_A, "https"))
    assert "Strict-Transport-Security" not in page.headers
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert token
    response = client.post(
        "/login",
        data={"email": "pm@example.com", "password": TEST_PASSWORD, "csrf_token": token.group(1)},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert response.status_code == 302
    assert not any("Secure" in c for c in _set_cookies(response))


def test_plain_http_gets_no_hsts(client):
    assert "Strict-Transport-Security" not in client.get("/login").headers


# --- a real gunicorn behind a (simulated) proxy ------------------------------------


@pytest.fixture
def gunicorn_behind_proxy(
    app: Flask, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[LiveServer]:
    live = start_gunicorn(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": app.config["REDIS_URL"],
            "SECRET_KEY": "proxy-test",
            "TRUSTED_PROXY_COUNT": str(request.param),
        },
        tmp_path / "gunicorn.log",
        workers=2,
        threads=4,
    )
    yield live
    live.stop()


def _gunicorn_login(live: LiveServer, client_addr: str, proto: str, password: str) -> Any:
    headers = {"X-Forwarded-For": client_addr, "X-Forwarded-Proto": proto}
    with httpx.Client(base_url=live.url, headers=headers, timeout=30) as http:
        page = http.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token, page.text
        data = {"email": "pm@example.com", "password": password, "csrf_token": token.group(1)}
        # Sent as a proxy would, Secure or not: the proxy-to-app hop is plain HTTP.
        extra = {
            "Cookie": _cookie_header(_set_cookies(page)),
            # A browser's same-origin Referer, which CSRF protection requires over HTTPS.
            "Referer": f"{proto}://127.0.0.1:{live.port}/login",
        }
        http.cookies.clear()
        return page, http.post("/login", data=data, headers=extra)


@pytest.mark.slow
@pytest.mark.parametrize("gunicorn_behind_proxy", [1], indirect=True)
def test_gunicorn_trusting_one_proxy(gunicorn_behind_proxy, make, redis_conn):
    live = gunicorn_behind_proxy
    make.user("pm@example.com", Role.VIEWER)
    for _ in range(5):
        _, response = _gunicorn_login(live, CLIENT_A, "https", "wrong")
        assert response.status_code == 401, live.log()
    _, throttled = _gunicorn_login(live, CLIENT_A, "https", "wrong")
    assert throttled.status_code == 429
    page, other = _gunicorn_login(live, CLIENT_B, "https", TEST_PASSWORD)
    assert other.status_code == 302
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    assert all("Secure" in c for c in _set_cookies(page) + _set_cookies(other))


@pytest.mark.slow
@pytest.mark.parametrize("gunicorn_behind_proxy", [0], indirect=True)
def test_gunicorn_trusting_no_proxy(gunicorn_behind_proxy, make, redis_conn):
    live = gunicorn_behind_proxy
    make.user("pm@example.com", Role.VIEWER)
    for client_addr in (CLIENT_A, CLIENT_B, "203.0.113.1", "203.0.113.2", "203.0.113.3"):
        _, response = _gunicorn_login(live, client_addr, "https", "wrong")
        assert response.status_code == 401
    # Five different forged addresses were one client all along.
    page, throttled = _gunicorn_login(live, "203.0.113.4", "https", TEST_PASSWORD)
    assert throttled.status_code == 429
    assert "Strict-Transport-Security" not in page.headers
    assert _set_cookies(page)
    assert not any("Secure" in c for c in _set_cookies(page))
