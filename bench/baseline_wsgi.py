"""Raw baseline for mark-read: plain WSGI + psycopg 3 pool, the same SQL the product must do.

Served by the product's own gunicorn configuration (``gunicorn -c gunicorn.conf.py
bench.baseline_wsgi:app``) so the two differ only in the code between the socket and
the database. Per request: one token lookup, then in one transaction the conditional
``UPDATE … WHERE read_at IS NULL RETURNING``, the primary-org lookup and the ENGAGE
insert (one ``INSERT … SELECT … ON CONFLICT DO NOTHING``). A repeat read is the
failed conditional UPDATE plus one SELECT of the caller's row.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg_pool import ConnectionPool

DSN = os.environ.get("BASELINE_DSN") or os.environ.get("DATABASE_URL", "").replace(
    "postgresql+psycopg://", "postgresql://"
)
POOL_SIZE = int(os.environ.get("GUNICORN_THREADS", "8"))
LAST_USED_RESOLUTION = timedelta(minutes=1)

_pool: ConnectionPool | None = None
_pool_lock = threading.Lock()

TOKEN_SQL = """
SELECT t.id, t.user_id, t.last_used_at FROM api_tokens t
WHERE t.token_hash = %s AND t.revoked_at IS NULL
"""
FIRST_READ_SQL = """
UPDATE notifications SET read_at = %(now)s, first_read_at = %(now)s
WHERE id = %(id)s AND user_id = %(user)s AND read_at IS NULL AND first_read_at IS NULL
RETURNING id, feature, title, created_at, read_at
"""
ENGAGE_SQL = """
INSERT INTO loop_signals (org_id, kind, feature, user_id, subject_id, created_at)
SELECT m.org_id, 'ENGAGE', %(feature)s, %(user)s, %(id)s, %(now)s FROM org_memberships m
WHERE m.user_id = %(user)s ORDER BY m.joined_at, m.org_id LIMIT 1
ON CONFLICT DO NOTHING
"""
REREAD_SQL = """
UPDATE notifications SET read_at = %(now)s
WHERE id = %(id)s AND user_id = %(user)s AND read_at IS NULL
"""
OWNED_SQL = """
SELECT id, feature, title, created_at, read_at FROM notifications
WHERE id = %(id)s AND user_id = %(user)s
"""

StartResponse = Callable[..., Any]


def pool() -> ConnectionPool:
    """One pool per worker process, opened lazily after gunicorn forks."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ConnectionPool(
                    DSN,
                    min_size=POOL_SIZE,
                    max_size=POOL_SIZE,
                    kwargs={"options": "-c timezone=UTC"},
                    open=True,
                )
    return _pool


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def _row_json(row: tuple[Any, ...], first: bool) -> dict[str, Any]:
    nid, feature, title, created_at, read_at = row
    return {
        "id": nid,
        "feature": feature,
        "title": title,
        "created_at": _iso(created_at),
        "read_at": _iso(read_at),
        "first_read": first,
    }


def mark_read(token: str, notification_id: int) -> tuple[str, dict[str, Any]]:
    now = datetime.now(UTC)
    digest = hashlib.sha256(token.encode()).hexdigest()
    with pool().connection() as conn:
        found = conn.execute(TOKEN_SQL, (digest,)).fetchone()
        if found is None:
            conn.rollback()
            return "401 Unauthorized", {"error": {"code": "unauthorized", "message": "Bad token."}}
        token_id, user_id, last_used = found
        if last_used is None or now - last_used >= LAST_USED_RESOLUTION:
            conn.execute("UPDATE api_tokens SET last_used_at = %s WHERE id = %s", (now, token_id))
        conn.commit()
        params = {"now": now, "id": notification_id, "user": user_id}
        with conn.transaction():
            row = conn.execute(FIRST_READ_SQL, params).fetchone()
            if row is not None:
                conn.execute(ENGAGE_SQL, params | {"feature": row[1]})
                return "200 OK", _row_json(row, True)
            conn.execute(REREAD_SQL, params)
            row = conn.execute(OWNED_SQL, params).fetchone()
        if row is None:
            return "404 Not Found", {"error": {"code": "not_found", "message": "Not found."}}
        return "200 OK", _row_json(row, False)


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path: str = environ.get("PATH_INFO", "")
    method: str = environ.get("REQUEST_METHOD", "GET")
    if path == "/healthz":
        with pool().connection() as conn:
            conn.execute("SELECT 1")
        return _json(start_response, "200 OK", {"database": "ok"})
    parts = path.strip("/").split("/")
    # api/v1/notifications/<id>/read
    if (
        method == "POST"
        and len(parts) == 5
        and parts[:3] == ["api", "v1", "notifications"]
        and parts[4] == "read"
        and parts[3].isdigit()
        and len(parts[3]) <= 18
    ):
        scheme, _, secret = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not secret:
            return _json(
                start_response,
                "401 Unauthorized",
                {"error": {"code": "unauthorized", "message": "Missing bearer token."}},
            )
        status, body = mark_read(secret.strip(), int(parts[3]))
        return _json(start_response, status, body)
    return _json(
        start_response, "404 Not Found", {"error": {"code": "not_found", "message": "Not found."}}
    )
