"""Daily signal counts per tenant, kind and feature: what dashboard charts read."""

from __future__ import annotations

import logging
import time as clock
from datetime import date, datetime, time, timedelta

from sqlalchemy import Date, cast, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from dashboard.extensions import db
from dashboard.models import LoopSignal, Organization, SignalDailyCount
from dashboard.timeutil import UTC

log = logging.getLogger(__name__)

# How many recent days the periodic refresh recounts: today and yesterday (a
# signal's day is its UTC day, and yesterday keeps receiving late reads at midnight).
RECENT_DAYS = 2


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

    Delete-and-upsert inside the caller's transaction, so readers never see a
    half-recounted day. The upsert (not a plain insert) lets the tune job and the
    periodic refresh recount the same tenant at the same time without a key clash.
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
    dialect = db.session.get_bind().dialect.name
    upsert = (postgresql if dialect == "postgresql" else sqlite).insert(SignalDailyCount)
    stmt = upsert.from_select(["org_id", "kind", "feature", "day", "count"], counts)
    stmt = stmt.on_conflict_do_update(
        index_elements=["org_id", "kind", "feature", "day"],
        set_={"count": stmt.excluded["count"]},
    )
    result = db.session.execute(stmt)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def refresh_recent(now: datetime, days: int = RECENT_DAYS) -> int:
    """Recount the last ``days`` UTC days for every tenant, one short transaction each.

    Keeps the dashboard's charts and volumes current between weekly tune runs:
    each tenant is an index range scan over ``days`` days of its signals.
    """
    since = (now - timedelta(days=days - 1)).date()
    started = clock.monotonic()
    org_ids = list(db.session.execute(select(Organization.id).order_by(Organization.id)).scalars())
    rows = 0
    for org_id in org_ids:
        rows += refresh(org_id, since)
        db.session.commit()
    log.info(
        "event=rollup_refreshed tenants=%d since=%s rows=%d ms=%d",
        len(org_ids),
        since.isoformat(),
        rows,
        (clock.monotonic() - started) * 1000,
    )
    return rows
