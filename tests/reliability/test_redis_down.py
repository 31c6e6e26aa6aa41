"""Redis killed under gunicorn: API, /healthz, pages, Run now and login cope, then recover."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from flask import Flask
from sqlalchemy import func, select

from loops.database import db
from loops.models import LoopSignal, Notification, Role, TuneRun
from tests.support.dashboard import TEST_PASSWORD
from tests.support.procs import RedisServer, http, wait_until

pytestmark = pytest.mark.slow


def _engage_count(ids: list[int]) -> int:
    db.session.remove()
    return int(
        db.session.execute(
            select(func.count())
            .select_from(LoopSignal)
            .where(LoopSignal.kind == "ENGAGE", LoopSignal.subject_id.in_(ids))
        ).scalar_one()
    )


def test_read_path_and_healthz_survive_redis_death_and_recover(
    app: Flask, make: Any, redis_server: RedisServer, gunicorn: Any, database_url: str
) -> None:
    reader = make.user(role=Role.MEMBER)
    make.member(reader, make.org())
    token = make.token(reader)
    ids = [make.notification(reader, feature="mention").id for _ in range(20)]
    server = gunicorn({"DATABASE_URL": database_url, "REDIS_URL": redis_server.url})
    pids_before = server.process.pid

    assert http("GET", f"{server.url}/healthz").json() == {"database": "ok", "redis": "ok"}

    redis_server.kill()

    health = http("GET", f"{server.url}/healthz")
    assert health.status == 200
    assert health.json() == {"database": "ok", "redis": "down"}
    for notification_id in ids[:10]:
        reply = http("POST", f"{server.url}/api/v1/notifications/{notification_id}/read", token)
        assert reply.status == 200, reply.body
        assert reply.json()["first_read"] is True
        # Nothing on this path touches Redis, so nothing waits on its connect timeout.
        assert reply.seconds < 2.0
    listed = http("GET", f"{server.url}/api/v1/notifications?unread=true", token=token)
    assert listed.status == 200 and listed.json()["unread_count"] == 10
    assert _engage_count(ids[:10]) == 10

    redis_server.start()

    wait_until(
        lambda: http("GET", f"{server.url}/healthz").json().get("redis") == "ok",
        15,
        what="healthz to see Redis again",
    )
    for notification_id in ids[10:]:
        reply = http("POST", f"{server.url}/api/v1/notifications/{notification_id}/read", token)
        assert reply.status == 200
    assert _engage_count(ids) == 20
    assert server.process.pid == pids_before and server.process.poll() is None
    db.session.remove()
    unread = db.session.execute(
        select(func.count()).select_from(Notification).where(Notification.read_at.is_(None))
    ).scalar_one()
    assert unread == 0


BANNER = "Redis is unreachable."
QUEUE_DOWN = "Could not queue the run: Redis"


def _login(client: httpx.Client, email: str, password: str = TEST_PASSWORD) -> httpx.Response:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    return client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token.group(1)}
    )


def _csrf(page: httpx.Response) -> str:
    token = re.search(r'X-CSRFToken&#34;: &#34;([^&]+)&#34;|"X-CSRFToken": "([^"]+)"', page.text)
    assert token is not None, page.text[:500]
    return token.group(1) or token.group(2)


def _queued_runs() -> int:
    db.session.remove()
    return int(db.session.execute(select(func.count()).select_from(TuneRun)).scalar_one())


def test_dashboard_and_run_now_with_redis_down_then_back(
    app: Flask, make: Any, redis_server: RedisServer, gunicorn: Any, database_url: str
) -> None:
    admin = make.user(role=Role.ADMIN)
    org = make.org(slug="acme", name="Acme Corp")
    server = gunicorn({"DATABASE_URL": database_url, "REDIS_URL": redis_server.url})
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=True) as client:
        assert _login(client, admin.email).status_code == 200
        assert BANNER not in client.get("/").text

        redis_server.kill()

        for path in ("/", f"/tenants/{org.slug}", "/runs"):
            started = time.monotonic()
            page = client.get(path)
            assert page.status_code == 200, (path, page.status_code)
            assert BANNER in page.text, path
            assert time.monotonic() - started < 5, path  # a dead Redis costs ~1 s, not a hang
        page = client.get("/")
        hx = {"X-CSRFToken": _csrf(page), "HX-Request": "true"}
        for path in ("/tune/run", f"/tenants/{org.slug}/tune"):
            reply = client.post(path, headers=hx)
            assert reply.status_code < 500 or reply.status_code == 503, reply.status_code
            assert QUEUE_DOWN in reply.text, reply.text[:500]
        assert _queued_runs() == 0  # "nothing was started"

        redis_server.start()

        wait_until(lambda: BANNER not in client.get("/").text, 15, what="the banner to clear")
        reply = client.post(f"/tenants/{org.slug}/tune", headers=hx)
        assert reply.status_code == 200 and QUEUE_DOWN not in reply.text
        assert _queued_runs() == 1
    assert server.process.poll() is None


def test_login_throttling_fails_open_to_a_local_limit_when_redis_dies(
    app: Flask, make: Any, redis_server: RedisServer, gunicorn: Any, database_url: str
) -> None:
    viewer = make.user(role=Role.VIEWER)
    server = gunicorn(
        {"DATABASE_URL": database_url, "REDIS_URL": redis_server.url}, workers=1, threads=4
    )
    with httpx.Client(base_url=server.url, timeout=30) as client:
        statuses = [_login(client, viewer.email, "wrong").status_code for _ in range(6)]
        assert statuses == [401] * 5 + [429]  # 5 failures a minute per account, in Redis
        assert any(b"el-limit" in k for k in redis_server_keys(redis_server))

        redis_server.kill()

        other = make.user(role=Role.VIEWER)
        statuses = [_login(client, other.email, "wrong").status_code for _ in range(6)]
        assert statuses == [401] * 5 + [429]  # counted in the process meanwhile
        assert client.get("/login").status_code == 200
        ok = _login(client, make.user(role=Role.VIEWER).email)
        assert ok.status_code == 302  # the right password still signs in


def redis_server_keys(server: RedisServer) -> list[bytes]:
    from redis import Redis

    conn = Redis(host="127.0.0.1", port=server.port)
    try:
        return list(conn.scan_iter("*"))
    finally:
        conn.close()
