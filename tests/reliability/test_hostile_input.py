"""Hostile input: oversized bodies, huge bulk reads, NUL and surrogates, unicode, headers."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from loops.database import db
from loops.models import Notification, Role
from tests.support.live_server import LiveServer

# Written out, not imported: weakening the policy in the code must fail this test.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
TEN_MB = 10 * 1024 * 1024


def _assert_security_headers(headers: Any, path: str) -> None:
    assert headers.get("Content-Security-Policy") == CSP, path
    assert headers.get("X-Content-Type-Options") == "nosniff", path
    assert headers.get("Referrer-Policy") in ("same-origin", "strict-origin-when-cross-origin")
    assert headers.get("X-Frame-Options") == "DENY", path


def test_security_headers_on_every_kind_of_response(
    app: Flask, client: FlaskClient, make: Any, api_as: Any
) -> None:
    api = api_as(make.user())
    responses = {
        "api 200": api.get("/api/v1/notifications"),
        "api 401": client.get("/api/v1/notifications"),
        "api 404": client.get("/api/v1/nope"),
        "api 405": api.get("/api/v1/notifications/read"),
        "openapi": client.get("/api/v1/openapi.json"),
        "healthz": client.get("/healthz"),
        "login page": client.get("/login"),
        "page redirect": client.get("/"),
        "html 404": client.get("/no-such-page"),
    }
    static = [r for r in app.url_map.iter_rules() if r.endpoint == "static"]
    if static:
        responses["static"] = client.get("/static/no-such-file.js")
    for name, response in responses.items():
        _assert_security_headers(response.headers, name)


def test_oversized_body_with_content_length_is_413_json_before_auth(
    client: FlaskClient, make: Any, api_as: Any
) -> None:
    api = api_as(make.user())
    body = b"[" + b"1," * (TEN_MB // 2) + b"1]"
    for response in (
        client.post("/api/v1/notifications/read", data=body, content_type="application/json"),
        api.post("/api/v1/notifications/read", data=body, content_type="application/json"),
        api.post("/api/v1/notifications", data=body, content_type="application/json"),
        client.post("/login", data=body, content_type="application/x-www-form-urlencoded"),
    ):
        assert response.status_code == 413
    api_reply = api.post("/api/v1/notifications/read", data=body, content_type="application/json")
    assert api_reply.json["error"]["code"] == "payload_too_large"


def test_bulk_read_of_100000_ids_is_refused_and_marks_nothing(make: Any, api_as: Any) -> None:
    reader = make.user()
    make.member(reader, make.org())
    owned = [make.notification(reader).id for _ in range(3)]
    ids = owned + list(range(10_000_000, 10_000_000 + 99_997))
    started = time.monotonic()
    reply = api_as(reader).post("/api/v1/notifications/read", json={"ids": ids})
    assert reply.status_code == 400
    assert reply.json["error"]["field"] == "ids"
    assert time.monotonic() - started < 5
    unread = db.session.execute(
        select(func.count()).select_from(Notification).where(Notification.read_at.is_(None))
    ).scalar_one()
    assert unread == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "a\u0000b"}, "title"),
        ({"title": "a\ud800b"}, "title"),
        ({"user_email": "a\u0000b@example.com", "user_id": None}, "user_email"),
        ({"user_email": "a\udfffb@example.com", "user_id": None}, "user_email"),
    ],
)
def test_nul_and_lone_surrogates_are_400_not_500(
    make: Any, api_as: Any, body: dict[str, Any], field: str
) -> None:
    recipient = make.user()
    payload: dict[str, Any] = {"user_id": recipient.id, "feature": "mention", "title": "t"}
    payload.update(body)
    payload = {k: v for k, v in payload.items() if v is not None}
    reply = api_as(make.user(role=Role.ADMIN)).post(
        "/api/v1/notifications",
        data=json.dumps(payload),  # ensure_ascii: the escapes travel as JSON \u escapes
        content_type="application/json",
    )
    assert reply.status_code == 400, reply.data
    assert reply.json["error"]["field"] == field


def test_nul_in_path_or_query_is_never_a_500(make: Any, api_as: Any, client: FlaskClient) -> None:
    org = make.org(slug="acme")
    assert org.slug == "acme"
    viewer = api_as(make.user(role=Role.VIEWER))
    assert viewer.get("/api/v1/orgs/a%00b/calibrations/x").status_code == 404
    assert viewer.get("/api/v1/orgs/acme/calibrations/engagement-rate:a%00b").status_code == 404
    assert viewer.get("/api/v1/notifications?unread=%00").status_code == 400
    assert client.get("/login?next=%00").status_code == 400
    login = client.post("/login", data={"email": "a\x00b@example.com", "password": "x"})
    assert login.status_code == 400


def test_unicode_and_control_characters_round_trip_as_json(make: Any, api_as: Any) -> None:
    recipient = make.user()
    title = "<script>alert(1)</script> \u202eRTL \x07bell \u00e9\u4e2d\U0001f600 \r\n\t"
    created = api_as(make.user(role=Role.ADMIN)).post(
        "/api/v1/notifications",
        json={"user_id": recipient.id, "feature": "mention", "title": title},
    )
    assert created.status_code == 201
    assert created.headers["Content-Type"].startswith("application/json")
    listed = api_as(recipient).get("/api/v1/notifications").json["notifications"]
    assert [n["title"] for n in listed] == [title]


# --- against gunicorn, over a raw socket -------------------------------------------


def _raw_request(port: int, head: bytes, body_parts: list[bytes]) -> tuple[int, bytes, int]:
    """Send ``head`` and as many body parts as the server takes; returns status, body, sent."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        sock.settimeout(0.05)
        response = b""
        for part in body_parts:
            try:
                sock.sendall(part)
                sent += len(part)
            except OSError:
                break
            try:
                chunk = sock.recv(65536)
                if chunk:
                    response += chunk
                    break
            except TimeoutError:
                continue
        sock.settimeout(30)
        deadline = time.monotonic() + 30
        while b"\r\n\r\n" not in response and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
        head_end = response.index(b"\r\n\r\n")
        status = int(response.split(b" ", 2)[1])
        length = 0
        for line in response[:head_end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = response[head_end + 4 :]
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, body, sent


@pytest.fixture
def live(app: Flask, gunicorn: Any, database_url: str) -> LiveServer:
    server: LiveServer = gunicorn({"DATABASE_URL": database_url}, workers=1, threads=4)
    return server


@pytest.mark.slow
def test_ten_megabytes_with_content_length_is_refused_before_it_is_sent(
    live: LiveServer, make: Any
) -> None:
    token = make.token(make.user())
    head = (
        f"POST /api/v1/notifications/read HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {TEN_MB}\r\n\r\n"
    ).encode()
    parts = [b"x" * 65536] * (TEN_MB // 65536)
    status, body, sent = _raw_request(live.port, head, parts)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert sent < TEN_MB // 2  # answered long before the client could send it all


@pytest.mark.slow
@pytest.mark.parametrize("authenticated", [True, False])
def test_ten_megabytes_chunked_is_refused_after_at_most_the_limit(
    live: LiveServer, make: Any, authenticated: bool
) -> None:
    token = make.token(make.user())
    auth = f"Authorization: Bearer {token}\r\n" if authenticated else ""
    head = (
        f"POST /api/v1/notifications/read HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"x" * 65536
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    status, body, sent = _raw_request(live.port, head, [framed] * (TEN_MB // 65536))
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert sent < TEN_MB // 2


@pytest.mark.slow
def test_small_chunked_body_still_works(live: LiveServer, make: Any) -> None:
    reader = make.user()
    make.member(reader, make.org())
    make.notification(reader)
    token = make.token(reader)
    payload = b'{"all": true}'
    head = (
        f"POST /api/v1/notifications/read HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    framed = f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n"
    status, body, _ = _raw_request(live.port, head, [framed])
    assert (status, json.loads(body)) == (200, {"marked": 1})


def test_user_id_beyond_32_bits_is_400_not_500(make: Any, api_as: Any) -> None:
    """Found by schemathesis on PostgreSQL: users.id is int4, the API accepted int8."""
    reply = api_as(make.user(role=Role.ADMIN)).post(
        "/api/v1/notifications",
        json={"user_id": 6542280259153, "feature": "mention", "title": "t"},
    )
    assert reply.status_code == 400
    assert reply.json["error"]["field"] == "user_id"
