"""Loop signals: attribution to the primary organization and exactly-once emission."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from flask import current_app
from sqlalchemy import BigInteger, BindParameter, Integer, Select, String, bindparam, select
from sqlalchemy.sql.dml import Insert

from loops import observe
from loops.database import db, dialect_insert
from loops.models import LoopSignal, OrgMembership, SignalKind
from loops.settings import loops_enabled


def loops_on() -> bool:
    """The running app's loop switch (LOOPS_ENABLED): signals are recorded and tuning
    writes only when it is on. Read per call, so a changed config takes effect at once."""
    return loops_enabled(current_app.config.get("LOOPS_ENABLED"))


def primary_org_query(user_id: int | BindParameter[int]) -> Select[int]:
    """The user's primary org: the oldest membership, ties broken by lowest org id."""
    return (
        select(OrgMembership.org_id)
        .where(OrgMembership.user_id == user_id)
        .order_by(OrgMembership.joined_at, OrgMembership.org_id)
        .limit(1)
    )


def primary_org_id(user_id: int) -> int | None:
    return db.session.execute(primary_org_query(user_id)).scalar_one_or_none()


def _insert_ignoring_duplicates() -> Insert:
    """The exactly-once insert: a second ENGAGE or DELIVER for one notification is dropped
    instead of raising (SQLite: by the partial unique index on (kind, subject_id);
    PostgreSQL: by the loop_signal_once guard's trigger, see loops.partitions)."""
    return dialect_insert(LoopSignal.__table__).on_conflict_do_nothing()


_EMIT_COLUMNS = ["org_id", "kind", "feature", "user_id", "subject_id", "created_at"]
# One prebuilt INSERT … SELECT per dialect, parameters bound at execution: this is on
# the mark-read hot path, where rebuilding the statement per request cost more CPU
# than running it.
_EMIT_STATEMENTS: dict[str, Insert] = {}


def _emit_statement() -> Insert:
    dialect = db.session.get_bind().dialect.name
    stmt = _EMIT_STATEMENTS.get(dialect)
    if stmt is None:
        source = primary_org_query(bindparam("user_id", type_=Integer())).add_columns(
            bindparam("kind", type_=String()),
            bindparam("feature", type_=String()),
            bindparam("user_id", type_=Integer()),
            bindparam("subject_id", type_=BigInteger()),
            bindparam("at", type_=LoopSignal.__table__.c.created_at.type),
        )
        stmt = _insert_ignoring_duplicates().from_select(_EMIT_COLUMNS, source)
        _EMIT_STATEMENTS[dialect] = stmt
    return stmt


def emit_for_subject(
    kind: SignalKind, *, user_id: int, subject_id: int, feature: str, at: datetime
) -> bool:
    """Record one ``kind`` signal for a notification, attributed to the user's primary org.

    One INSERT … SELECT: no membership inserts nothing, and a second signal of
    the same kind for the same subject is dropped by the database. Runs in
    the caller's transaction. Returns True when a row was written.
    """
    result = db.session.execute(
        _emit_statement(),
        {
            "kind": kind.value,
            "feature": feature,
            "user_id": user_id,
            "subject_id": subject_id,
            "at": at,
        },
        # An INSERT's rowcount is not kept once its cursor closes unless asked for
        # (it reads -1, which is true, and a dropped duplicate counted as written).
        execution_options={"preserve_rowcount": True},
    )
    written = bool(result.rowcount)  # type: ignore[attr-defined]
    if written:
        observe.signals_recorded(kind.value)
    return written


def emit_many(
    kind: SignalKind, *, user_id: int, subjects: Sequence[tuple[int, str]], at: datetime
) -> None:
    """``emit_for_subject`` for many notifications of one user: (subject_id, feature) pairs.

    The primary org is looked up once; the rows go through the same exactly-once
    insert, as one executemany. Runs in the caller's transaction.
    """
    if not subjects:
        return
    org_id = primary_org_id(user_id)
    if org_id is None:
        return
    # RETURNING: a batched insert's rowcount is not reliable across drivers, and the
    # count of rows written (duplicates dropped) is what observers are told.
    result = db.session.execute(
        _insert_ignoring_duplicates().returning(LoopSignal.id),
        [
            {
                "org_id": org_id,
                "kind": kind.value,
                "feature": feature,
                "user_id": user_id,
                "subject_id": subject_id,
                "created_at": at,
            }
            for subject_id, feature in subjects
        ],
    )
    observe.signals_recorded(kind.value, len(result.all()))
