"""The database object and engine settings per backend (pool checks, timeouts, SQLite WAL)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, Table, bindparam, event, func, select
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


# (dialect, table, columns, on_conflict) -> the statement insert_rows built for them.
_BULK_INSERTS: dict[tuple[str, str, tuple[str, ...], Any], Any] = {}

OnConflict = Callable[[Any], Any]


def _bulk_insert(
    dialect: str, table: Table, columns: tuple[str, ...], on_conflict: OnConflict | None
) -> Any:
    key = (dialect, table.name, columns, on_conflict)
    stmt = _BULK_INSERTS.get(key)
    if stmt is None:
        if dialect == "postgresql":
            # One array per column, unnested into rows: INSERT … SELECT * FROM unnest(…).
            arrays = [bindparam(c, type_=postgresql.ARRAY(table.c[c].type)) for c in columns]
            values = func.unnest(*arrays).table_valued(*columns).render_derived(name="v")
            insert: Any = postgresql.insert(table).from_select(
                list(columns), select(*(values.c[c] for c in columns))
            )
        else:
            insert = dialect_insert(table)
        stmt = on_conflict(insert) if on_conflict is not None else insert
        _BULK_INSERTS[key] = stmt
    return stmt


def insert_rows(
    table: Table, rows: Sequence[Mapping[str, Any]], on_conflict: OnConflict | None = None
) -> None:
    """Insert (or upsert: ``on_conflict`` adds the clause to a dialect insert) many rows.

    In the session's transaction. On PostgreSQL it is one statement whatever the number
    of rows, each column sent as one array and unnested: an executemany sends, binds and
    answers every row on its own, and for a tune chunk's 2,000 rows that cost more in
    the driver than the writes did in the database. SQLite, in process, takes the
    executemany. Every row has the same keys; no two rows may hit one conflict key.
    The statement is built once per table, columns and ``on_conflict`` (a module-level
    function, so it is the same object every time).
    """
    if not rows:
        return
    columns = tuple(rows[0])
    dialect = db.session.get_bind().dialect.name
    stmt = _bulk_insert(dialect, table, columns, on_conflict)
    if dialect == "postgresql":
        db.session.execute(stmt, {c: [row[c] for row in rows] for c in columns})
    else:
        db.session.execute(stmt, list(rows))


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
