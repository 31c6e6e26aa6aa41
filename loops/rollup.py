"""Daily signal counts per tenant, kind and feature: what dashboard charts read."""

from __future__ import annotations

import logging
import time as clock
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    Date,
    Select,
    String,
    and_,
    bindparam,
    cast,
    delete,
    func,
    or_,
    select,
    tuple_,
    type_coerce,
)

from loops.database import db, insert_rows
from loops.models import LoopSignal, Organization, SignalDailyCount, SignalPrune
from loops.timeutil import UTC

log = logging.getLogger(__name__)

# How many recent days the periodic refresh recounts: today and yesterday (a
# signal's day is its UTC day, and yesterday keeps receiving late reads at midnight).
RECENT_DAYS = 2

# (kind, feature, day) -> count: one tenant's rows of loop_signal_daily.
DayKey = tuple[str, str, date]
Counts = dict[DayKey, int]


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _dialect() -> str:
    return str(db.session.get_bind().dialect.name)


def _day_of(column):  # type: ignore[no-untyped-def]
    # PostgreSQL sessions run in UTC (see database.py), so the cast is a UTC day;
    # SQLite stores naive UTC text, whose date() is the UTC day too.
    if _dialect() == "sqlite":
        return func.date(column)
    return cast(column, Date)


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _until(until: date | None) -> date:
    return until or date.max


def _recount_statement(since: date, until: date | None) -> Select[Any]:
    """(org_id, kind, feature, day, n): the signals of the tenants bound as ``orgs`` per
    UTC day in [since, until], counted from loop_signals."""
    s = LoopSignal
    bounds = [s.created_at >= day_start(since)]
    if until is not None:
        bounds.append(s.created_at < day_start(until + timedelta(days=1)))
    day = _day_of(s.created_at)
    return (
        select(s.org_id, s.kind, s.feature, day.label("day"), func.count().label("n"))
        .where(s.org_id.in_(bindparam("orgs", expanding=True)), *bounds)
        .group_by(s.org_id, s.kind, s.feature, day)
    )


def _stored_statement(since: date, until: date | None, day: Any = None) -> Select[Any]:
    """(org_id, kind, feature, day, count): the rows of loop_signal_daily of the tenants
    bound as ``orgs`` in [since, until]; ``day``: the day column as read (default as is)."""
    t = SignalDailyCount
    return select(
        t.org_id, t.kind, t.feature, (t.day if day is None else day).label("day"), t.count
    ).where(t.org_id.in_(bindparam("orgs", expanding=True)), t.day >= since, t.day <= _until(until))


def recount(org_ids: Sequence[int], since: date, until: date | None = None) -> dict[int, Counts]:
    """Count the tenants' signals per UTC day in [since, until], from loop_signals. One query."""
    out: dict[int, Counts] = {org_id: {} for org_id in org_ids}
    if not org_ids:
        return out
    rows = db.session.execute(_recount_statement(since, until), {"orgs": list(org_ids)})
    for org_id, kind, feature, day_value, count in rows:
        out[int(org_id)][(str(kind), str(feature), _as_date(day_value))] = int(count)
    return out


def stored(org_ids: Sequence[int], since: date, until: date | None = None) -> dict[int, Counts]:
    """The tenants' rows of loop_signal_daily in [since, until]. One query."""
    out: dict[int, Counts] = {org_id: {} for org_id in org_ids}
    if not org_ids:
        return out
    # On SQLite the day comes back as its ISO text (parsed by _as_date): SQLAlchemy's
    # SQLite DATE parsing costs more than the query for a month of rows.
    day: Any = type_coerce(SignalDailyCount.day, String) if _dialect() == "sqlite" else None
    rows = db.session.execute(_stored_statement(since, until, day), {"orgs": list(org_ids)})
    for org_id, kind, feature, day_value, count in rows:
        out[int(org_id)][(str(kind), str(feature), _as_date(day_value))] = int(count)
    return out


def changes(
    current: Mapping[DayKey, int], recounted: Mapping[DayKey, int]
) -> tuple[Counts, list[DayKey]]:
    """What turns ``current`` into ``recounted``: rows to upsert and rows to delete. Pure."""
    upserts = {key: n for key, n in recounted.items() if current.get(key) != n}
    deletes = [key for key in current if key not in recounted]
    return upserts, deletes


Changes = tuple[Counts, list[DayKey]]


def complete_from() -> date | None:
    """The first day whose raw signals are all still there (None: nothing was ever pruned).

    A prune records its cutoff (a UTC midnight) before it removes anything; the
    highest one recorded is where complete days begin.
    """
    cutoff = db.session.execute(select(func.max(SignalPrune.cutoff))).scalar()
    return None if cutoff is None else cutoff.date()


def _differences(since: date, until: date | None) -> Select[Any]:
    """PostgreSQL: the tenants' days in [since, until] whose recount differs from the stored row.

    One statement: the recount of loop_signals (as ``recount``) full-joined with the
    stored rows (as ``stored``), keeping only the rows that differ — a new count, or
    no count at all (a stored day whose signals are gone). Only those cross the wire:
    an unchanged month is two index reads and a hash join in the database, not two
    result sets of every day to compare in Python. Both sides read one snapshot.
    """
    fresh = _recount_statement(since, until).subquery("fresh")
    kept = _stored_statement(since, until).subquery("kept")
    same_row = and_(
        fresh.c.org_id == kept.c.org_id,
        fresh.c.kind == kept.c.kind,
        fresh.c.feature == kept.c.feature,
        fresh.c.day == kept.c.day,
    )
    return (
        select(
            func.coalesce(fresh.c.org_id, kept.c.org_id),
            func.coalesce(fresh.c.kind, kept.c.kind),
            func.coalesce(fresh.c.feature, kept.c.feature),
            func.coalesce(fresh.c.day, kept.c.day),
            fresh.c.n,
        )
        .select_from(fresh.join(kept, same_row, full=True))
        .where(or_(fresh.c.n.is_(None), kept.c.count.is_(None), fresh.c.n != kept.c.count))
    )


def _differences_compared(
    org_ids: Sequence[int], since: date, until: date | None
) -> list[tuple[int, str, str, date, int | None]]:
    """SQLite: the rows ``_differences`` gives, from ``recount`` and ``stored`` compared here.

    SQLite joins by nested loops: the full join of two derived tables would compare
    every recounted day with every stored one (minutes for a chunk's month), where
    the two index reads and a comparison in Python take a fraction of a second.
    """
    recounted = recount(org_ids, since, until)
    current = stored(org_ids, since, until)
    rows: list[tuple[int, str, str, date, int | None]] = []
    for org_id in org_ids:
        upserts, deletes = changes(current[org_id], recounted[org_id])
        rows.extend((org_id, kind, feature, day, n) for (kind, feature, day), n in upserts.items())
        rows.extend((org_id, kind, feature, day, None) for kind, feature, day in deletes)
    return rows


def pending(since: Mapping[int, date], until: date | None = None) -> dict[int, Changes]:
    """Per tenant, what recounting from its own ``since`` day would change.

    Rows to upsert and rows to delete (see ``changes``), nothing written: one
    statement for all the tenants that share a ``since`` day (a first run's whole
    window, or the days since their previous run), which returns only the days that
    differ (SQLite: two reads compared in Python, see ``_differences_compared``).
    Days before ``complete_from()`` are never recounted: their signals were pruned,
    and a recount would erase their counts.
    """
    out: dict[int, Changes] = {org_id: ({}, []) for org_id in since}
    if not since:
        return out
    floor = complete_from() or date.min
    groups: dict[date, list[int]] = {}
    for org_id, day in since.items():
        groups.setdefault(max(day, floor), []).append(org_id)
    found: list[Any] = []
    for start, org_ids in sorted(groups.items()):
        if _dialect() == "sqlite":
            found.extend(_differences_compared(org_ids, start, until))
        else:
            found.extend(db.session.execute(_differences(start, until), {"orgs": org_ids}))
    # Read again after the recount: a prune that began meanwhile recorded its cutoff
    # before removing a row, so a recount that saw rows missing sees that cutoff here.
    floor = max(floor, complete_from() or date.min)
    for org_id, kind, feature, day_value, n in found:
        key = (str(kind), str(feature), _as_date(day_value))
        if key[2] < floor:
            continue
        upserts, deletes = out[int(org_id)]
        if n is None:
            deletes.append(key)
        else:
            upserts[key] = int(n)
    return out


def _on_conflict_count(insert: Any) -> Any:
    """A day counted again: ON CONFLICT DO UPDATE of its count."""
    return insert.on_conflict_do_update(
        index_elements=["org_id", "kind", "feature", "day"],
        set_={"count": insert.excluded["count"]},
    )


def apply(org_id: int, upserts: Mapping[DayKey, int], deletes: Sequence[DayKey]) -> int:
    """Write one tenant's changes in the caller's transaction; returns rows touched.

    Rows that did not change are not written at all: a recount of an unchanged
    month costs two reads, not a rewrite of every row.
    """
    return apply_many({org_id: (upserts, deletes)})


def apply_many(
    changes_by_org: Mapping[int, tuple[Mapping[DayKey, int], Sequence[DayKey]]],
) -> int:
    """``apply`` for many tenants in the caller's transaction: one upsert for all of them."""
    t = SignalDailyCount
    rows: list[dict[str, Any]] = []
    for org_id, (upserts, deletes) in changes_by_org.items():
        for start in range(0, len(deletes), 500):
            chunk = deletes[start : start + 500]
            db.session.execute(
                delete(t)
                .where(t.org_id == org_id, tuple_(t.kind, t.feature, t.day).in_(chunk))
                .execution_options(synchronize_session=False)
            )
        rows.extend(
            {"org_id": org_id, "kind": kind, "feature": feature, "day": day, "count": n}
            for (kind, feature, day), n in upserts.items()
        )
    insert_rows(SignalDailyCount.__table__, rows, _on_conflict_count)
    return len(rows) + sum(len(deletes) for _, deletes in changes_by_org.values())


def refresh(org_id: int, since: date, until: date | None = None) -> int:
    """Recount days [since, until] (inclusive) for one tenant. Returns rows written.

    Inside the caller's transaction, so readers never see a half-recounted day.
    The upsert (not a plain insert) lets the tune job and the periodic refresh
    recount the same tenant at the same time without a key clash.
    """
    return apply(org_id, *pending({org_id: since}, until)[org_id])


def refresh_recent(now: datetime, days: int = RECENT_DAYS, batch: int = 100) -> int:
    """Recount the last ``days`` UTC days for every tenant, ``batch`` tenants per transaction.

    Keeps the dashboard's charts and volumes current between weekly tune runs:
    each batch is two index range reads, and only changed rows are written.
    """
    since = (now - timedelta(days=days - 1)).date()
    started = clock.monotonic()
    org_ids = list(db.session.execute(select(Organization.id).order_by(Organization.id)).scalars())
    rows = 0
    for start in range(0, len(org_ids), batch):
        chunk = org_ids[start : start + batch]
        for org_id, change in pending(dict.fromkeys(chunk, since)).items():
            rows += apply(org_id, *change)
        db.session.commit()
    log.info(
        "event=rollup_refreshed tenants=%d since=%s rows=%d ms=%d",
        len(org_ids),
        since.isoformat(),
        rows,
        (clock.monotonic() - started) * 1000,
    )
    return rows
