"""A connection dropped by the server between a view's last query and teardown is no 500."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from loops.database import db

pytestmark = pytest.mark.postgres_only


def test_connection_killed_before_teardown_still_answers(app: Flask) -> None:
    @app.get("/api/v1/_test/read-then-lose-connection")
    def read_then_lose_connection() -> Any:
        pid = db.session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        # The session's transaction stays open (a read, no commit), as after any
        # read-only view; the server then drops the connection (crash, failover).
        with db.engine.connect() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            other.commit()
        return {"ok": True}

    def requests() -> list[tuple[int, Any]]:
        client = app.test_client()
        first = client.get("/api/v1/_test/read-then-lose-connection")
        # The pool replaced the dead connection: the next request just works.
        second = client.get("/healthz")
        return [(first.status_code, first.json), (second.status_code, second.json)]

    # A thread of its own: the fixture's app context would otherwise swallow the
    # per-request teardown this test is about.
    with ThreadPoolExecutor(1) as pool:
        replies = pool.submit(requests).result(timeout=60)
    assert replies[0] == (200, {"ok": True})
    assert replies[1][0] == 200
    app.extensions["redis"].close()
