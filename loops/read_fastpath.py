"""Mark-read on PostgreSQL in two statements: the fast path of notifications.read_with_token.

The general path (``tokens.authenticate`` + ``notifications.mark_read``, used on
SQLite) runs in an ORM session: a pool pre-ping, BEGIN, the token lookup, the
conditional UPDATE, the ENGAGE insert and COMMIT — six round trips, each costing
CPU on both ends. Profiled under load, that was most of the gap to the raw
baseline (docs/PERFORMANCE.md). Here the same behaviour takes two statements,
each atomic on its own (autocommit):

1. the token lookup, which also bumps ``last_used_at`` when it is a minute old;
2. the first read: a conditional UPDATE, the ENGAGE insert for the primary org
   (same rule as ``signals.primary_org_query``: oldest membership, then lowest
   org id; the same exactly-once ``ON CONFLICT DO NOTHING`` as ``signals``) and,
   when the UPDATE matched nothing, the caller's row as it stands.

A repeat read of a read notification is answered by statement 2 as well. Only a
read after mark-unread, or a race with a concurrent read of the same row, is
left to the general path (``notifications.read_with_token`` decides).

The connections come from a pool of their own without pre-ping: a connection the
server dropped fails the first statement, which is read-only and idempotent, and
that statement is retried once on a new connection.

The statements run on the pooled psycopg connection itself, not through
SQLAlchemy's Connection and Result: profiled in-process, those layers cost about a
third of a mark-read's CPU, more than the driver's own work (docs/PERFORMANCE.md).
The pool is still SQLAlchemy's, so DB_POOL_SIZE and disposal behave as elsewhere.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, cast

import psycopg
from flask import Flask, current_app
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection

from loops import observe
from loops.database import engine_options
from loops.models import SignalKind
from loops.tokens import (
    LAST_USED_RESOLUTION,
    Principal,
    grants_access,
    hash_token,
    plausible_secret,
)

EXTENSION_KEY = "read_fastpath_engine"

AUTH_SQL = """
    WITH found AS (
        SELECT t.id, t.token_hash, t.revoked_at, t.last_used_at, t.user_id, u.role
        FROM api_tokens t JOIN users u ON u.id = t.user_id
        WHERE t.token_hash = %(digest)s
    ), touched AS (
        UPDATE api_tokens SET last_used_at = %(now)s
        FROM found
        WHERE api_tokens.id = found.id AND found.revoked_at IS NULL
          AND (found.last_used_at IS NULL OR found.last_used_at <= %(stale)s)
        RETURNING api_tokens.id
    )
    SELECT token_hash, revoked_at, user_id, role FROM found
"""

READ_SQL = """
    WITH first_read AS (
        UPDATE notifications SET read_at = %(now)s, first_read_at = %(now)s
        WHERE id = %(nid)s AND user_id = %(uid)s AND read_at IS NULL AND first_read_at IS NULL
          AND delivered_at IS NOT NULL
        RETURNING id, feature, title, created_at, read_at
    ), engage AS (
        INSERT INTO loop_signals (org_id, kind, feature, user_id, subject_id, created_at)
        SELECT primary_org.org_id, 'ENGAGE', first_read.feature, %(uid)s, first_read.id, %(now)s
        FROM first_read, (
            SELECT m.org_id FROM org_memberships m
            WHERE m.user_id = %(uid)s ORDER BY m.joined_at, m.org_id LIMIT 1
        ) AS primary_org
        WHERE %(loops)s
        ON CONFLICT DO NOTHING
        RETURNING kind
    )
    SELECT id, feature, title, created_at, read_at, true AS first,
           (SELECT count(*) FROM engage) AS engaged
    FROM first_read
    UNION ALL
    SELECT id, feature, title, created_at, read_at, false, 0 FROM notifications
    WHERE id = %(nid)s AND user_id = %(uid)s AND delivered_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM first_read)
"""


def init_app(app: Flask, main_engine: Engine) -> None:
    """Give PostgreSQL apps the fast path's engine (created on first use).

    Its pool lives and dies with the app's main engine: disposing that one (a
    test's teardown, a forked worker) disposes this one too.
    """
    if main_engine.dialect.name != "postgresql":
        return
    app.extensions[EXTENSION_KEY] = None

    def dispose(_engine: Engine) -> None:
        engine: Engine | None = app.extensions.get(EXTENSION_KEY)
        if engine is not None:
            engine.dispose()
            app.extensions[EXTENSION_KEY] = None

    event.listen(main_engine, "engine_disposed", dispose)


def available(app: Flask | None = None) -> bool:
    """Whether ``app`` (default: the current app) has the fast path: PostgreSQL apps do."""
    return EXTENSION_KEY in (app or current_app).extensions


def _engine(app: Flask | None = None) -> Engine:
    app = app or current_app
    engine: Engine | None = app.extensions.get(EXTENSION_KEY)
    if engine is None:
        options = engine_options(str(app.config["SQLALCHEMY_DATABASE_URI"]), dict(app.config))
        options["pool_pre_ping"] = False
        options["isolation_level"] = "AUTOCOMMIT"
        engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], **options)
        app.extensions[EXTENSION_KEY] = engine
    return engine


def _run(conn: PoolProxiedConnection, sql: str, params: dict[str, Any]) -> Any:
    """One statement on the pooled psycopg connection; its first row (a tuple) or None."""
    driver: psycopg.Connection[Any] = conn.driver_connection  # type: ignore[assignment]
    with driver.cursor() as cursor:
        return cursor.execute(sql, params).fetchone()


class TokenRow(NamedTuple):
    """The token statement's answer (what ``tokens.grants_access`` checks)."""

    token_hash: str
    revoked_at: datetime | None
    user_id: int
    role: str


def _failed(
    conn: PoolProxiedConnection, exc: psycopg.Error, sql: str, params: dict[str, Any]
) -> DBAPIError:
    """The error as SQLAlchemy would raise it (the app answers 503 or 500); a connection
    the server dropped is taken out of the pool."""
    broken = conn.driver_connection is None or bool(conn.driver_connection.broken)
    if broken:
        conn.invalidate(exc)
    error = DBAPIError.instance(sql, params, exc, psycopg.Error, connection_invalidated=broken)
    return cast(DBAPIError, error)


def _authenticate(engine: Engine, params: dict[str, Any]) -> tuple[PoolProxiedConnection, Any]:
    """Run the token lookup; a connection the server dropped is replaced once."""
    for attempt in (1, 2):
        try:
            conn = engine.raw_connection()
        except psycopg.Error as exc:
            # The server is gone (refused, timed out): raised as the app's other paths
            # raise it, so the answer is the same 503.
            error = DBAPIError.instance(None, None, exc, psycopg.Error, connection_invalidated=True)
            raise cast(DBAPIError, error) from exc
        try:
            found = _run(conn, AUTH_SQL, params)
            return conn, None if found is None else TokenRow(*found)
        except psycopg.Error as exc:
            error = _failed(conn, exc, AUTH_SQL, params)
            conn.close()
            if attempt == 2 or not error.connection_invalidated:
                raise error from exc
        except BaseException:
            conn.close()  # back to the pool, not left to the garbage collector
            raise
    raise AssertionError("unreachable")


class ReadRow(NamedTuple):
    """The read statement's answer: the caller's notification, and what this read did."""

    id: int
    feature: str
    title: str
    created_at: datetime
    read_at: datetime | None
    first: bool
    engaged: int


def authenticate_and_read(
    secret: str,
    notification_id: int | None,
    *,
    now: datetime,
    loops_enabled: bool,
    app: Flask | None = None,
) -> tuple[Principal | None, ReadRow | None]:
    """The token's principal (None: unknown or revoked) and, if valid, the read's row.

    ``app``: whose pool to use (default: the current app's; the mark-read WSGI route
    in front of Flask runs outside any app context).

    ``notification_id`` None (not a valid id) authenticates only. A None row for a
    valid principal means the notification is not theirs. The row carries ``first``
    (this call made the first read); a row that is neither a first read nor read
    is one the general path must settle (read again after a mark-unread, or a
    concurrent first read committed meanwhile).
    """
    if not plausible_secret(secret):
        return None, None
    digest = hash_token(secret)
    auth_params = {"digest": digest, "now": now, "stale": now - LAST_USED_RESOLUTION}
    conn, found = _authenticate(_engine(app), auth_params)
    try:
        if found is None or not grants_access(found, digest):
            return None, None
        principal = Principal(int(found.user_id), str(found.role))
        if notification_id is None:
            return principal, None
        params = {
            "nid": notification_id,
            "uid": principal.user_id,
            "now": now,
            "loops": loops_enabled,
        }
        try:
            answer = _run(conn, READ_SQL, params)
        except psycopg.Error as exc:
            raise _failed(conn, exc, READ_SQL, params) from exc
    finally:
        conn.close()
    row = None if answer is None else ReadRow(*answer)
    if row is not None and row.engaged:
        observe.signals_recorded(SignalKind.ENGAGE.value, int(row.engaged))
    return principal, row
