"""Daily signal counts: UTC day buckets, recounting a range, leaving other tenants alone."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import select

from loops import rollup
from loops.database import db
from loops.models import LoopSignal, SignalDailyCount


def signal(org_id: int, at: datetime, kind: str = "ENGAGE", feature: str = "mention") -> None:
    db.session.add(LoopSignal(org_id=org_id, kind=kind, feature=feature, created_at=at))


def counts(org_id: int) -> dict[tuple[str, str, date], int]:
    rows = db.session.execute(
        select(SignalDailyCount).where(SignalDailyCount.org_id == org_id)
    ).scalars()
    return {(r.kind, r.feature, r.day): r.count for r in rows}


def test_counts_per_utc_day_kind_and_feature(make):
    org = make.org()
    signal(org.id, datetime(2026, 3, 1, 0, 0, 0, tzinfo=UTC))
    signal(org.id, datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC))
    signal(org.id, datetime(2026, 3, 2, 0, 0, 0, tzinfo=UTC))
    signal(org.id, datetime(2026, 3, 1, 12, tzinfo=UTC), kind="DELIVER")
    signal(org.id, datetime(2026, 3, 1, 12, tzinfo=UTC), feature="digest.weekly")
    db.session.commit()
    rollup.refresh(org.id, date(2026, 2, 1))
    db.session.commit()
    assert counts(org.id) == {
        ("ENGAGE", "mention", date(2026, 3, 1)): 2,
        ("ENGAGE", "mention", date(2026, 3, 2)): 1,
        ("DELIVER", "mention", date(2026, 3, 1)): 1,
        ("ENGAGE", "digest.weekly", date(2026, 3, 1)): 1,
    }


def test_refresh_recounts_only_its_range_and_its_tenant(make):
    org, other = make.org(), make.org()
    signal(org.id, datetime(2026, 3, 1, 9, tzinfo=UTC))
    signal(other.id, datetime(2026, 3, 1, 9, tzinfo=UTC))
    db.session.commit()
    rollup.refresh(org.id, date(2026, 3, 1))
    rollup.refresh(other.id, date(2026, 3, 1))
    db.session.commit()
    # More signals arrive on both days; recount only 3 March for one tenant.
    signal(org.id, datetime(2026, 3, 1, 10, tzinfo=UTC))
    signal(org.id, datetime(2026, 3, 3, 10, tzinfo=UTC))
    signal(other.id, datetime(2026, 3, 3, 10, tzinfo=UTC))
    db.session.commit()
    rollup.refresh(org.id, date(2026, 3, 3))
    db.session.commit()
    assert counts(org.id) == {
        ("ENGAGE", "mention", date(2026, 3, 1)): 1,  # not recounted
        ("ENGAGE", "mention", date(2026, 3, 3)): 1,
    }
    assert counts(other.id) == {("ENGAGE", "mention", date(2026, 3, 1)): 1}
    # Running it again changes nothing.
    rollup.refresh(org.id, date(2026, 3, 3))
    db.session.commit()
    assert counts(org.id)[("ENGAGE", "mention", date(2026, 3, 3))] == 1


def test_refresh_with_an_upper_bound(make):
    org = make.org()
    for day in (1, 2, 3):
        signal(org.id, datetime(2026, 3, day, 8, tzinfo=UTC))
    db.session.commit()
    rollup.refresh(org.id, date(2026, 3, 1), date(2026, 3, 2))
    db.session.commit()
    assert sorted(day for _, _, day in counts(org.id)) == [date(2026, 3, 1), date(2026, 3, 2)]


def test_refresh_recent_brings_every_tenant_up_to_date(make):
    orgs = [make.org(), make.org()]
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    for org in orgs:
        signal(org.id, datetime(2026, 3, 1, 9, tzinfo=UTC))
        rollup.refresh(org.id, date(2026, 2, 1))
    db.session.commit()
    # Reads arrive after the last recount: yesterday late, today, and one old day.
    for org in orgs:
        signal(org.id, datetime(2026, 3, 9, 23, 59, tzinfo=UTC))
        signal(org.id, datetime(2026, 3, 10, 8, tzinfo=UTC))
        signal(org.id, datetime(2026, 3, 10, 9, tzinfo=UTC), kind="DELIVER")
        signal(org.id, datetime(2026, 3, 5, 9, tzinfo=UTC))  # older than the recent window
    db.session.commit()
    rollup.refresh_recent(now)
    for org in orgs:
        assert counts(org.id) == {
            ("ENGAGE", "mention", date(2026, 3, 1)): 1,
            ("ENGAGE", "mention", date(2026, 3, 9)): 1,
            ("ENGAGE", "mention", date(2026, 3, 10)): 1,
            ("DELIVER", "mention", date(2026, 3, 10)): 1,
        }


def test_changes_upserts_what_differs_and_deletes_what_is_gone():
    d1, d2 = date(2026, 3, 1), date(2026, 3, 2)
    current = {("ENGAGE", "mention", d1): 2, ("ENGAGE", "mention", d2): 5, ("DELIVER", "x", d1): 1}
    recounted = {("ENGAGE", "mention", d1): 2, ("ENGAGE", "mention", d2): 6, ("ENGAGE", "y", d2): 1}
    upserts, deletes = rollup.changes(current, recounted)
    assert upserts == {("ENGAGE", "mention", d2): 6, ("ENGAGE", "y", d2): 1}
    assert deletes == [("DELIVER", "x", d1)]


def test_refresh_deletes_days_whose_signals_are_gone(make):
    org = make.org()
    signal(org.id, datetime(2026, 3, 1, 9, tzinfo=UTC))
    signal(org.id, datetime(2026, 3, 2, 9, tzinfo=UTC), feature="digest.weekly")
    db.session.commit()
    rollup.refresh(org.id, date(2026, 3, 1))
    db.session.commit()
    db.session.execute(LoopSignal.__table__.delete().where(LoopSignal.feature == "digest.weekly"))
    assert rollup.refresh(org.id, date(2026, 3, 1)) == 1
    db.session.commit()
    assert counts(org.id) == {("ENGAGE", "mention", date(2026, 3, 1)): 1}
    assert rollup.refresh(org.id, date(2026, 3, 1)) == 0  # nothing changed: nothing written
