"""Loop signals: attribution to the primary organization and exactly-once emission."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from dashboard.extensions import db
from dashboard.models import LoopSignal, OrgMembership, SignalKind


def primary_org_query(user_id: int):  # type: ignore[no-untyped-def]
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
    dialect = db.session.get_bind().dialect.name
    table = LoopSignal.__table__
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise RuntimeError(f"unsupported database dialect {dialect!r}")


def emit_for_subject(
    kind: SignalKind, *, user_id: int, subject_id: int, feature: str, at: datetime
) -> bool:
    """Record one ``kind`` signal for a notification, attributed to the user's primary org.

    One INSERT … SELECT: no membership inserts nothing, and a second signal of
    the same kind for the same subject is dropped by the unique index. Runs in
    the caller's transaction. Returns True when a row was written.
    """
    source = (
        select(
            OrgMembership.org_id,
            literal(kind.value),
            literal(feature),
            literal(user_id, Integer),
            literal(subject_id),
            literal(at, LoopSignal.__table__.c.created_at.type),
        )
        .where(OrgMembership.user_id == user_id)
        .order_by(OrgMembership.joined_at, OrgMembership.org_id)
        .limit(1)
    )
    stmt = _insert_ignoring_duplicates().from_select(
        ["org_id", "kind", "feature", "user_id", "subject_id", "created_at"], source
    )
    result = db.session.execute(stmt)
    return bool(result.rowcount)  # type: ignore[attr-defined]
