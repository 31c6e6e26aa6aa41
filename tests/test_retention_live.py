"""A prune while 32 clients mark notifications read through a real gunicorn: nobody notices."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from loops import partitions
from loops.database import db
from loops.models import LoopSignal, Notification, SignalKind
from loops.retention import prune
from loops.timeutil import utcnow
from tests.conftest import is_postgres
from tests.support.live_server import LiveServer, start_gunicorn
from tests.test_retention import only_default_partition

pytestmark = pytest.mark.slow

CLIENTS = 32
NOTIFICATIONS = 1600
OLD_PER_MONTH = 12_000
RETENTION = 60


@pytest.fixture
def server(app: Any, database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    live = start_gunicorn(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": app.config["REDIS_URL"],
            "LOOPS_ENABLED": "true",
            "SECRET_KEY": "retention-live-test",
        },
        tmp_path / "gunicorn.log",
        workers=2,
        threads=16,
    )
    yield live
    live.stop()


def _seed_old_signals(app: Any, org_id: int) -> int:
    """Three old months of DELIVER rows (in their own partitions on PostgreSQL)."""
    now = utcnow()
    total = 0
    subject = 50_000_000
    for days_ago in (200, 170, 140):
        month = partitions.month_start(now - timedelta(days=days_ago))
        if is_postgres(app):
            partitions.create_month(month)
        rows = []
        for i in range(OLD_PER_MONTH):
            subject += 1
            rows.append(
                {
                    "org_id": org_id,
                    "kind": SignalKind.DELIVER.value,
                    "feature": "mention",
                    "user_id": 1,
                    "subject_id": subject,
                    "created_at": month + timedelta(minutes=i),
                }
            )
        db.session.execute(insert(LoopSignal), rows)
        db.session.commit()
        total += len(rows)
    return total


def test_a_prune_while_32_clients_read_loses_and_fails_nothing(app, make, server) -> None:
    only_default_partition()
    org = make.org()
    users = [make.user() for _ in range(8)]
    for user in users:
        make.member(user, org)
    tokens = {user.id: make.token(user) for user in users}
    now = utcnow()
    db.session.execute(
        insert(Notification),
        [
            {
                "user_id": users[i % len(users)].id,
                "feature": f"f{i % 4}",
                "title": f"n{i}",
                "created_at": now,
                "delivered_at": now,
            }
            for i in range(NOTIFICATIONS)
        ],
    )
    db.session.commit()
    work = [(n.id, tokens[n.user_id]) for n in db.session.execute(select(Notification)).scalars()]
    old = _seed_old_signals(app, org.id)
    db.session.rollback()

    stop = threading.Event()
    done: list[tuple[float, int]] = []  # (when, status) of every request
    errors: list[str] = []
    lock = threading.Lock()

    def client(slot: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        mine = work[slot::CLIENTS]
        i = 0
        # Through its own notifications once (first reads), then again (repeat reads)
        # until the prune is over: reads keep arriving for as long as the prune runs.
        give_up = time.monotonic() + 120
        while (i < len(mine) or not stop.is_set()) and len(errors) < 20:
            if time.monotonic() > give_up:
                errors.append("client still reading after 120 s")
                break
            nid, token = mine[i % len(mine)]
            i += 1
            try:
                conn.request(
                    "POST",
                    f"/api/v1/notifications/{nid}/read",
                    headers={"Authorization": f"Bearer {token}", "Content-Length": "0"},
                )
                response = conn.getresponse()
                body = response.read()
                with lock:
                    done.append((time.monotonic(), response.status))
                if response.status != 200:
                    errors.append(f"{response.status} {body[:200]!r}")
                elif json.loads(body)["id"] != nid:
                    errors.append(f"answered for another notification: {body[:200]!r}")
            except Exception as exc:  # any transport error is a failure of the test
                errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.close()

    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(done) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    try:
        outcome = prune(utcnow(), RETENTION)
        finished = time.monotonic()
    finally:
        stop.set()
        for t in threads:
            t.join(150)

    assert errors == [], (errors[:5], server.log()[-3000:])
    assert Counter(status for _, status in done) == {200: len(done)}
    during = [when for when, _ in done if started <= when <= finished]
    assert during, "no read happened while the prune ran"
    # Every notification was first-read exactly once, every first read kept its ENGAGE.
    db.session.rollback()
    engaged = db.session.execute(
        select(func.count(), func.count(func.distinct(LoopSignal.subject_id))).where(
            LoopSignal.kind == SignalKind.ENGAGE.value
        )
    ).one()
    assert tuple(engaged) == (NOTIFICATIONS, NOTIFICATIONS)
    unread = db.session.execute(
        select(func.count()).select_from(Notification).where(Notification.read_at.is_(None))
    ).scalar()
    assert unread == 0
    # And the prune did its work: every old signal is gone.
    assert outcome.removed == old
    left = db.session.execute(
        select(func.count()).where(LoopSignal.kind == SignalKind.DELIVER.value)
    ).scalar()
    assert left == 0
    if is_postgres(app):
        assert len(outcome.dropped) == 3
