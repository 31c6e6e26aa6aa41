"""The product's two mark-read statements (loops.read_fastpath) run on a raw psycopg pool.

Shared by the two-statement baselines (``bench.baseline_twostatement``: plain WSGI;
``bench.baseline_flask``: a minimal Flask app). The SQL is the product's own text,
taken from ``loops.read_fastpath`` with its ``:name`` binds rewritten to psycopg's
``%(name)s``, so the baselines can never drift from what the fast path sends. Each
statement runs on its own in autocommit, as in the product; the database is the
product's, so ENGAGE inserts pay the same exactly-once trigger.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import ConnectionPool

from loops.read_fastpath import AUTH_SQL, READ_SQL
from loops.tokens import LAST_USED_RESOLUTION

DSN = os.environ.get("BASELINE_DSN") or os.environ.get("DATABASE_URL", "").replace(
    "postgresql+psycopg://", "postgresql://"
)
POOL_SIZE = int(os.environ.get("GUNICORN_THREADS", "8"))
LOOPS_ENABLED = os.environ.get("LOOPS_ENABLED", "true").lower() in {"1", "true", "yes", "on"}


_pool: ConnectionPool | None = None
_pool_lock = threading.Lock()


def pool() -> ConnectionPool:
    """One autocommit pool per worker process, opened lazily after gunicorn forks."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ConnectionPool(
                    DSN,
                    min_size=POOL_SIZE,
                    max_size=POOL_SIZE,
                    kwargs={"options": "-c timezone=UTC", "autocommit": True},
                    open=True,
                )
    return _pool


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


UNAUTHORIZED = {"error": {"code": "unauthorized", "message": "Invalid or revoked token."}}
NOT_FOUND = {"error": {"code": "not_found", "message": "Not found."}}


def mark_read(secret: str, notification_id: int) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of one mark-read: the token statement, then the read one."""
    if not secret or len(secret) > 256:
        return 401, UNAUTHORIZED
    now = datetime.now(UTC)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    with pool().connection() as conn:
        found = conn.execute(
            AUTH_SQL, {"digest": digest, "now": now, "stale": now - LAST_USED_RESOLUTION}
        ).fetchone()
        if found is None or found[1] is not None or not hmac.compare_digest(found[0], digest):
            return 401, UNAUTHORIZED
        row = conn.execute(
            READ_SQL,
            {"nid": notification_id, "uid": found[2], "now": now, "loops": LOOPS_ENABLED},
        ).fetchone()
    if row is None:
        return 404, NOT_FOUND
    nid, feature, title, created_at, read_at, first, _engaged = row
    # The product hands "unread but not a first read" (a read after mark-unread) to its
    # general path; the bench walk never produces one, so the baseline answers as is.
    return 200, {
        "id": nid,
        "feature": feature,
        "title": title,
        "created_at": _iso(created_at),
        "read_at": _iso(read_at),
        "first_read": bool(first),
    }


def healthy() -> bool:
    with pool().connection() as conn:
        conn.execute("SELECT 1")
    return True
