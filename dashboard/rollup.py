"""Daily signal counts per tenant, kind and feature: what dashboard charts read."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from sqlalchemy import Date, cast, delete, func, insert, select

from dashboard.extensions import db
from dashboard.models import LoopSignal, SignalDailyCount
from dashboard.timeutil import UTC


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _day_of(column):  # type: ignore[no-untyped-def]
    # PostgreSQL sessions run in UTC (see database.py), so the cast is a UTC day;
    # SQLite stores naive UTC text, whose date() is the UTC day too.
    if db.session.get_bind().dialect.name == "sqlite":
        return func.date(column)
    return cast(column, Date)


def refresh(org_id: int, since: date, until: date | None = None) -> int:
    """Recount days [since, until] (inclusive) for one tenant. Returns rows written.

    Delete-and-insert inside the caller's transaction, so readers never see a
    half-recounted day.
    """
    until = until or date.max
    db.session.execute(
        delete(SignalDailyCount).where(
            SignalDailyCount.org_id == org_id,
            SignalDailyCount.day >= since,
            SignalDailyCount.day <= until,
        )
    )
    day = _day_of(LoopSignal.created_at)
    upper = (
        [] if until == date.max else [LoopSignal.created_at < day_start(until + timedelta(days=1))]
    )
    counts = (
        select(LoopSignal.org_id, LoopSignal.kind, LoopSignal.feature, day, func.count())
        .where(
            LoopSignal.org_id == org_id,
            LoopSignal.created_at >= day_start(since),
            *upper,
        )
        .group_by(LoopSignal.org_id, LoopSignal.kind, LoopSignal.feature, day)
    )
    result = db.session.execute(
        insert(SignalDailyCount).from_select(["org_id", "kind", "feature", "day", "count"], counts)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
