"""Redis killed under a running gunicorn: the read path and /healthz answer, then recover."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from dashboard.extensions import db
from dashboard.models import LoopSignal, Notification, Role

from .procs import RedisServer, http, wait_for

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

    wait_for(
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
