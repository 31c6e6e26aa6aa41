"""Exactly-once under real concurrency: many HTTP clients against a real gunicorn."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from loops.database import db
from loops.models import LoopSignal, Notification, SignalKind
from loops.timeutil import utcnow
from tests.support.live_server import LiveServer, start_gunicorn

pytestmark = pytest.mark.slow


@pytest.fixture
def server(app: Any, database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    live = start_gunicorn(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": app.config["REDIS_URL"],
            "LOOPS_ENABLED": "true",
            "SECRET_KEY": "concurrency-test",
        },
        tmp_path / "gunicorn.log",
    )
    yield live
    live.stop()


def post(conn: http.client.HTTPConnection, path: str, token: str) -> tuple[int, dict[str, Any]]:
    conn.request("POST", path, headers={"Authorization": f"Bearer {token}", "Content-Length": "0"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def engage_count() -> int:
    db.session.rollback()
    return db.session.execute(
        select(func.count())
        .select_from(LoopSignal)
        .where(LoopSignal.kind == SignalKind.ENGAGE.value)
    ).scalar_one()


def test_64_simultaneous_first_reads_of_one_notification(server, make: Any):
    user = make.user()
    make.member(user, make.org())
    notification_id = make.notification(user).id
    token = make.token(user)
    clients = 64
    barrier = threading.Barrier(clients)

    def read(_: int) -> tuple[int, bool]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.connect()
        barrier.wait()
        status, body = post(conn, f"/api/v1/notifications/{notification_id}/read", token)
        conn.close()
        return status, bool(body.get("first_read"))

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(read, range(clients)))

    assert Counter(status for status, _ in results) == {200: clients}, server.log()
    assert sum(first for _, first in results) == 1
    assert engage_count() == 1


def test_1000_distinct_reads_by_32_clients(server, make: Any):
    org = make.org()
    users = [make.user() for _ in range(8)]
    for user in users:
        make.member(user, org)
    tokens = {user.id: make.token(user) for user in users}
    now = utcnow()
    rows = [
        {
            "user_id": users[i % len(users)].id,
            "feature": f"f{i % 5}",
            "title": f"n{i}",
            "created_at": now,
            "delivered_at": now,  # delivered at once, as without a digest policy
        }
        for i in range(1000)
    ]
    db.session.execute(insert(Notification), rows)
    db.session.commit()
    work = [(n.id, tokens[n.user_id]) for n in db.session.execute(select(Notification)).scalars()]
    clients = 32

    def run(slot: int) -> list[int]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        statuses = [
            post(conn, f"/api/v1/notifications/{nid}/read", token)[0]
            for nid, token in work[slot::clients]
        ]
        conn.close()
        return statuses

    with ThreadPoolExecutor(clients) as pool:
        statuses = [s for chunk in pool.map(run, range(clients)) for s in chunk]

    assert Counter(statuses) == {200: 1000}, server.log()
    assert engage_count() == 1000
    distinct = db.session.execute(
        select(func.count(func.distinct(LoopSignal.subject_id))).where(
            LoopSignal.kind == SignalKind.ENGAGE.value
        )
    ).scalar_one()
    assert distinct == 1000
    unread = db.session.execute(
        select(func.count()).select_from(Notification).where(Notification.read_at.is_(None))
    ).scalar_one()
    assert unread == 0
