"""The periodic recount of recent days runs once per interval across workers."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from jobs.rollup_refresh import DUE_KEY, refresh_if_due
from loops.database import db
from loops.models import LoopSignal, SignalDailyCount


def test_refreshes_once_per_interval(make, redis_conn):
    org = make.org()
    now = datetime.now(UTC)
    db.session.add(LoopSignal(org_id=org.id, kind="ENGAGE", feature="mention", created_at=now))
    db.session.commit()

    assert refresh_if_due(redis_conn, now, interval_s=60) is True
    rows = db.session.execute(select(SignalDailyCount)).scalars().all()
    assert [(r.org_id, r.day, r.count) for r in rows] == [(org.id, now.date(), 1)]

    # A second worker within the interval does nothing.
    db.session.add(LoopSignal(org_id=org.id, kind="ENGAGE", feature="mention", created_at=now))
    db.session.commit()
    assert refresh_if_due(redis_conn, now, interval_s=60) is False
    assert db.session.execute(select(SignalDailyCount.count)).scalar_one() == 1

    # Once the interval has passed (key expired), the next one recounts.
    redis_conn.delete(DUE_KEY)
    assert refresh_if_due(redis_conn, now, interval_s=60) is True
    db.session.expire_all()
    assert db.session.execute(select(SignalDailyCount.count)).scalar_one() == 2


def test_the_worker_sweep_loop_refreshes_daily_counts(app, make, redis_conn):
    from jobs.worker import Sweeper

    org = make.org()
    db.session.add(
        LoopSignal(org_id=org.id, kind="DELIVER", feature="digest", created_at=datetime.now(UTC))
    )
    db.session.commit()
    sweeper = Sweeper(app, interval_s=60)
    assert sweeper.refresh_rollups() is True
    assert sweeper.refresh_rollups() is False  # once per interval
    db.session.expire_all()
    assert db.session.execute(select(SignalDailyCount.kind)).scalar_one() == "DELIVER"
