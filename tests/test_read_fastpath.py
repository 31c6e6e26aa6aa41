"""The PostgreSQL mark-read fast path: two statements, and it survives dropped connections."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from loops import read_fastpath
from loops.database import db
from loops.models import LoopSignal, SignalKind

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def reader(make: Any) -> Any:
    user = make.user("fast@example.com")
    make.member(user, make.org("fastco"))
    return user


def engage_count(notification_id: int) -> int:
    db.session.rollback()
    return int(
        db.session.execute(
            sa.select(sa.func.count()).where(
                LoopSignal.kind == SignalKind.ENGAGE.value, LoopSignal.subject_id == notification_id
            )
        ).scalar_one()
    )


def statements_of(app: Flask, action: Any) -> list[str]:
    """The SQL statements the fast path sent to the server during ``action()``."""
    seen: list[str] = []
    real = read_fastpath._run

    def record(conn: Any, statement: str, params: dict[str, Any]) -> Any:
        seen.append(" ".join(statement.split())[:40])
        return real(conn, statement, params)

    read_fastpath._run = record  # type: ignore[assignment]
    try:
        action()
    finally:
        read_fastpath._run = real  # type: ignore[assignment]
    return seen


def test_a_first_read_and_a_repeat_read_are_two_statements_each(
    app: Flask, reader: Any, make: Any, api_as: Any
) -> None:
    assert read_fastpath.available()
    n = make.notification(reader)
    api = api_as(reader)
    replies: list[Any] = []
    first = statements_of(
        app, lambda: replies.append(api.post(f"/api/v1/notifications/{n.id}/read"))
    )
    again = statements_of(
        app, lambda: replies.append(api.post(f"/api/v1/notifications/{n.id}/read"))
    )
    assert [r.get_json()["first_read"] for r in replies] == [True, False]
    assert len(first) == 2 and len(again) == 2
    assert engage_count(n.id) == 1


def test_mark_read_recovers_after_the_server_drops_every_connection(
    app: Flask, reader: Any, make: Any, api_as: Any
) -> None:
    api = api_as(reader)
    warm, after = make.notification(reader).id, make.notification(reader).id
    assert api.post(f"/api/v1/notifications/{warm}/read").status_code == 200
    db.session.rollback()  # the test's own session gives its connection back to the pool
    # A restart or failover: every pooled connection (the fast path's included) dies.
    with db.engine.connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        conn.commit()
    reply = api.post(f"/api/v1/notifications/{after}/read")
    assert reply.status_code == 200
    assert reply.get_json()["first_read"] is True
    assert engage_count(after) == 1


def test_bad_token_is_401_before_a_bad_id_is_404(
    app: Flask, reader: Any, make: Any, api_as: Any
) -> None:
    assert api_as(reader).post("/api/v1/notifications/abc/read").status_code == 404
    bad = app.test_client().post(
        "/api/v1/notifications/abc/read", headers={"Authorization": "Bearer elp_nope"}
    )
    assert bad.status_code == 401
    assert app.test_client().post("/api/v1/notifications/1/read").status_code == 401


def test_mark_read_answers_503_when_the_server_cannot_be_reached(app: Flask) -> None:
    """A refused connection is the database being down, on this path as on every other."""
    from dashboard import create_app

    gone = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "t",
            "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
            "REDIS_URL": app.config["REDIS_URL"],
        }
    )
    with gone.app_context():
        reply = gone.test_client().post(
            "/api/v1/notifications/1/read", headers={"Authorization": "Bearer elp_not_checked"}
        )
        db.engine.dispose()
    assert reply.status_code == 503
    assert reply.get_json()["error"]["code"] == "unavailable"
