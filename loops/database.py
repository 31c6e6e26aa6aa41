"""The database object and engine settings per backend (pool checks, timeouts, SQLite WAL)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


# Flask-SQLAlchemy's session object: bound to an app by the app factory, used by the
# domain and the jobs inside an app context.
db = SQLAlchemy(model_class=Base)


def dialect_insert(table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT for the session's database that offers ``ON CONFLICT`` (both backends do).

    Every upsert and exactly-once insert starts here, so a third backend fails in
    one place, by name, instead of silently taking a plain INSERT.
    """
    dialect = db.session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {dialect!r}")


def engine_options(url: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Engine keyword arguments from the app's typed settings (``DB_POOL_SIZE`` …)."""
    if url.startswith("sqlite"):
        # Many threads/processes share one file: wait for the write lock instead
        # of failing with "database is locked".
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    statement_timeout = config["DB_STATEMENT_TIMEOUT_MS"]
    return {
        "pool_pre_ping": True,  # recover by itself after a database restart
        "pool_size": config["DB_POOL_SIZE"],
        "max_overflow": config["DB_MAX_OVERFLOW"],
        "pool_timeout": 10,
        "pool_recycle": 1800,
        "connect_args": {
            "connect_timeout": config["DB_CONNECT_TIMEOUT_S"],
            # Every timestamp computed in SQL (date(), day buckets) is UTC.
            # No JIT: the tune's aggregations over a partitioned loop_signals cross
            # jit_above_cost, and compiling took 0.3-1.1 s a query, longer than the
            # query itself (docs/PERFORMANCE.md); nothing this app runs gains from it.
            "options": f"-c timezone=UTC -c statement_timeout={statement_timeout} -c jit=off",
        },
    }


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Read through a memory map (shared by every connection, no per-connection
    # copy): the tune's aggregations scan a month of signal index pages.
    cursor.execute("PRAGMA mmap_size=268435456")
    cursor.close()


def discard_session() -> None:
    """End the request's session even when its connection died under it.

    A rollback on a connection the server dropped (crash, restart, failover)
    raises; left to Flask-SQLAlchemy's own teardown it would escape the app as
    gunicorn's HTML 500. Invalidate instead: the pool replaces the connection.
    """

    try:
        db.session.remove()
    except SQLAlchemyError:
        db.session().invalidate()
        db.session.remove()


def init_engine(app: Flask, engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)


def init_app(app: Flask) -> None:
    # Registered after Flask-SQLAlchemy's teardown, so it runs first (teardowns run
    # in reverse) and leaves that one nothing to roll back.
    app.teardown_appcontext(lambda _exc: discard_session())
