"""Calibration history: every run's values kept (with its delivery decisions), and migration
0008 seeding the history from the current and previous values already stored."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade
from sqlalchemy import select

from dashboard import create_app
from dashboard.config import normalise_database_url
from jobs.runs import run_in_process
from loops.database import db
from loops.models import Calibration, CalibrationHistory, RunTrigger
from tests.support.jobs import NOW

DAY = timedelta(days=1)


def tune(org_ids: list[int], now: datetime) -> dict[int, int]:
    results, _ = run_in_process(org_ids, trigger=RunTrigger.CLI, requested_by="test", now=now)
    return {r.org_id: r.run_id for r in results}


def history(org_id: int) -> list[CalibrationHistory]:
    db.session.rollback()
    return list(
        db.session.execute(
            select(CalibrationHistory)
            .where(CalibrationHistory.org_id == org_id)
            .order_by(CalibrationHistory.computed_at, CalibrationHistory.key)
        ).scalars()
    )


def test_each_run_appends_one_row_per_value_written(make, signals) -> None:
    org, other = make.org("acme"), make.org("globex")
    signals.engage_many(org, "mention", NOW - 2 * DAY, 30)
    for i in range(10):
        t = NOW - 3 * DAY
        signals.delivery(org, "mention", t, read_at=t + timedelta(hours=1) if i < 4 else None)
    signals.engage_many(other, "mention", NOW - 2 * DAY, 5)
    first = tune([org.id, other.id], NOW)
    signals.engage_many(org, "mention", NOW + 6 * DAY, 60)
    second = tune([org.id], NOW + 7 * DAY)

    rows = history(org.id)
    assert [(r.key, r.run_id, r.computed_at) for r in rows] == [
        ("engagement-rate:mention", first[org.id], NOW),
        ("engagement-ratio:mention", first[org.id], NOW),
        ("engagement-rate:mention", second[org.id], NOW + 7 * DAY),
        ("engagement-ratio:mention", second[org.id], NOW + 7 * DAY),
    ]
    rate1, ratio1, rate2, ratio2 = rows
    # 30 ENGAGE plus the 4 first reads of the deliveries; then 60 more.
    assert (rate1.value, rate1.sample_size, rate1.window_days) == (1.1333, 34, 30)
    assert (rate2.value, rate2.sample_size) == (3.1333, 94)
    assert rate1.interval_low is None and rate1.mode is None
    # Ratio rows carry what the calibration carries, and the run's delivery decision.
    assert (ratio1.value, ratio1.sample_size, ratio1.engaged) == (0.4, 10, 4)
    assert (ratio1.interval_low, ratio1.interval_high) == (0.1682, 0.6873)
    assert ratio1.estimate is not None
    assert ratio1.mode == "immediate" and ratio1.mode_changed is True
    assert ratio1.mode_reason and "straddles" in ratio1.mode_reason
    assert ratio2.mode == "immediate" and ratio2.mode_changed is False
    # The current row and the latest history row agree.
    db.session.rollback()
    current = db.session.execute(
        select(Calibration).where(
            Calibration.org_id == org.id, Calibration.key == "engagement-rate:mention"
        )
    ).scalar_one()
    assert (current.value, current.run_id) == (rate2.value, rate2.run_id)
    assert [r.key for r in history(other.id)] == ["engagement-rate:mention"]


def test_a_failed_run_leaves_no_history(app, make, signals) -> None:
    app.config["TUNE_TEST_FAIL_TENANTS"] = "acme"
    org = make.org("acme")
    signals.engage_many(org, "mention", NOW - DAY, 3)
    tune([org.id], NOW)
    assert history(org.id) == []


# --- migration 0008 ------------------------------------------------------------------


@pytest.fixture
def scratch_url(tmp_path: Path) -> Iterator[str]:
    """An empty database of this test's own (SQLite file, or a PostgreSQL database)."""
    server = os.environ.get("DATABASE_URL", "")
    if not server.startswith(("postgres", "postgresql")):
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
        return
    base = sa.make_url(normalise_database_url(server))
    name = f"el_test_hist_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_migration_seeds_history_from_current_and_previous_values(
    scratch_url: str, test_redis_url: str
) -> None:
    app = create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": scratch_url, "REDIS_URL": test_redis_url}
    )
    then = datetime(2026, 11, 16, 5, 30, tzinfo=UTC)
    now = then + 7 * DAY
    with app.app_context():
        upgrade(revision="0007")
        with db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO organizations (id, slug, name, created_at) "
                    "VALUES (1, 'acme', 'Acme', :t)"
                ),
                {"t": then},
            )
            columns = (
                "org_id key value sample_size window_days computed_at run_id previous_value "
                "previous_sample_size previous_computed_at previous_run_id engaged "
                "interval_low interval_high estimate"
            )
            cal = sa.table("loop_calibrations", *(sa.column(c) for c in columns.split()))
            base = {"org_id": 1, "window_days": 30, "computed_at": now, "run_id": 12}
            none = dict.fromkeys(("engaged", "interval_low", "interval_high", "estimate"))
            old = {"previous_value": None, "previous_sample_size": None}
            old |= {"previous_computed_at": None, "previous_run_id": None}
            conn.execute(
                cal.insert(),
                [
                    # A rate that replaced an older value.
                    base
                    | none
                    | {
                        "key": "engagement-rate:mention",
                        "value": 2.0,
                        "sample_size": 60,
                        "previous_value": 1.5,
                        "previous_sample_size": 45,
                        "previous_computed_at": then,
                        "previous_run_id": 5,
                    },
                    # A ratio written once, with its interval.
                    base
                    | old
                    | {
                        "key": "engagement-ratio:mention",
                        "value": 0.4,
                        "sample_size": 10,
                        "engaged": 4,
                        "interval_low": 0.1682,
                        "interval_high": 0.6873,
                        "estimate": 0.45,
                    },
                ],
            )
        upgrade(revision="0008")
        with db.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT key, value, sample_size, window_days, run_id, engaged, "
                    "interval_low, interval_high, estimate FROM loop_calibration_history "
                    "ORDER BY id"
                )
            ).all()
            times = conn.execute(
                sa.text("SELECT computed_at FROM loop_calibration_history ORDER BY id")
            ).scalars()
            seen = [t if isinstance(t, datetime) else datetime.fromisoformat(t) for t in times]
        # Oldest first: the previous value, then the current ones.
        assert [tuple(r) for r in rows] == [
            ("engagement-rate:mention", 1.5, 45, 30, 5, None, None, None, None),
            ("engagement-rate:mention", 2.0, 60, 30, 12, None, None, None, None),
            ("engagement-ratio:mention", 0.4, 10, 30, 12, 4, 0.1682, 0.6873, 0.45),
        ]
        assert [t.replace(tzinfo=UTC) if t.tzinfo is None else t for t in seen] == [
            then,
            now,
            now,
        ]
        downgrade(revision="0007")
        with db.engine.connect() as conn:
            assert not sa.inspect(conn).has_table("loop_calibration_history")
            assert conn.execute(sa.text("SELECT count(*) FROM loop_calibrations")).scalar() == 2
        db.engine.dispose()


def test_demo_seed_leaves_weeks_of_history_dated_as_the_weekly_job_would(runner) -> None:
    from loops.models import Organization, TuneRun

    result = runner.invoke(args=["demo", "seed"])
    assert result.exit_code == 0, result.output
    acme = db.session.execute(select(Organization).where(Organization.slug == "acme")).scalar_one()
    runs = list(
        db.session.execute(
            select(TuneRun).where(TuneRun.org_id == acme.id).order_by(TuneRun.id)
        ).scalars()
    )
    # 60 days of signals, a 30-day window: four past weeks and now.
    assert len(runs) == 5 and all(r.state == "succeeded" for r in runs)
    gaps = [(b.enqueued_at - a.enqueued_at).total_seconds() for a, b in itertools.pairwise(runs)]
    assert all(abs(gap - 7 * 86_400) < 60 for gap in gaps)
    assert all(r.started_at >= r.enqueued_at for r in runs)
    points = {
        (row.run_id, row.computed_at)
        for row in history(acme.id)
        if row.key == "engagement-ratio:mention"
    }
    assert len(points) == 5
    assert {run_id for run_id, _ in points} == {r.id for r in runs}
