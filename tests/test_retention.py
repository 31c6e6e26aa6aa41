"""Signal retention on both databases: boundaries, idempotence, daily counts, exactly-once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text, update

from loops import partitions, retention, rollup
from loops.database import db
from loops.models import LoopSignal, Organization, SignalDailyCount, SignalKind, SignalPrune
from loops.retention import cutoff_for, prune
from loops.signals import emit_for_subject
from tests.conftest import is_postgres

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RETENTION = 60
CUTOFF = datetime(2026, 9, 24, tzinfo=UTC)  # the UTC midnight on or before NOW - 60 days


def only_default_partition() -> None:
    """PostgreSQL: a layout with no month partitions yet, whatever earlier tests created."""
    if not partitions.is_postgres():
        return
    for p in partitions.partitions():
        if not p.is_default:
            db.session.execute(text(f"DROP TABLE {p.name}"))
    db.session.commit()


@pytest.fixture
def bare(app: Flask) -> Iterator[None]:
    only_default_partition()
    yield
    db.session.rollback()


def add(org: Organization, at: datetime, kind: SignalKind = SignalKind.DELIVER, **kw: Any) -> int:
    """One signal at ``at``; its subject is unique unless given."""
    add.subject += 1  # type: ignore[attr-defined]
    row = LoopSignal(
        org_id=org.id,
        kind=kind.value,
        feature=kw.get("feature", "mention"),
        user_id=kw.get("user_id", 1),
        subject_id=kw.get("subject_id", add.subject),  # type: ignore[attr-defined]
        created_at=at,
    )
    db.session.add(row)
    db.session.commit()
    return row.id


add.subject = 5_000_000  # type: ignore[attr-defined]


def signal_times() -> dict[int, datetime]:
    db.session.rollback()
    rows = db.session.execute(select(LoopSignal.id, LoopSignal.created_at)).all()
    db.session.rollback()
    return {int(i): at for i, at in rows}


def months(first: datetime, last: datetime) -> list[datetime]:
    out, month = [], partitions.month_start(first)
    while month <= last:
        out.append(month)
        month = partitions.add_months(month, 1)
    return out


def test_the_cutoff_is_the_midnight_before_the_retention() -> None:
    assert cutoff_for(NOW, RETENTION) == CUTOFF
    assert cutoff_for(datetime(2026, 11, 23, 0, 0, tzinfo=UTC), 1) == datetime(
        2026, 11, 22, tzinfo=UTC
    )
    # Whatever zone "now" comes in, the day is the UTC one.
    tokyo = datetime(2026, 11, 23, 8, 0, tzinfo=UTC).astimezone()
    assert cutoff_for(tokyo, 1) == datetime(2026, 11, 22, tzinfo=UTC)


def test_a_prune_keeps_everything_younger_than_the_retention_and_nothing_much_older(
    app, make, bare
) -> None:
    org = make.org()
    if is_postgres(app):
        # Signals were written into their months' partitions as they happened.
        for month in months(datetime(2026, 5, 1, tzinfo=UTC), NOW):
            partitions.create_month(month)
    times = [
        datetime(2026, 5, 3, tzinfo=UTC),
        datetime(2026, 7, 31, 23, 59, tzinfo=UTC),
        NOW - timedelta(days=RETENTION + 31, seconds=1),
        CUTOFF - timedelta(days=5),
        CUTOFF - timedelta(microseconds=1),
        CUTOFF,
        NOW - timedelta(days=RETENTION),
        NOW - timedelta(days=RETENTION - 1),
        NOW - timedelta(hours=1),
    ]
    for at in times:
        add(org, at)
    before = signal_times()

    outcome = prune(NOW, RETENTION)

    after = signal_times()
    young = {i for i, at in before.items() if at >= NOW - timedelta(days=RETENTION)}
    assert young <= set(after), "a signal younger than the retention was pruned"
    assert all(at >= NOW - timedelta(days=RETENTION + 31) for at in after.values())
    assert outcome.removed == len(before) - len(after)
    assert outcome.cutoff == CUTOFF
    if is_postgres(app):
        # Whole months went: May to August; September straddles the cutoff and stays.
        assert outcome.dropped == tuple(f"loop_signals_p2026_{m:02d}" for m in (5, 6, 7, 8))
        assert sorted(after.values())[0] == CUTOFF - timedelta(days=5)
        assert outcome.removed == 3
    else:
        assert min(after.values()) == CUTOFF
        assert outcome.removed == 5
    assert str(outcome).startswith(
        f"pruned {outcome.removed} signals older than 2026-09-24 (retention 60 days)"
    )


def test_a_second_prune_changes_nothing(app, make, bare) -> None:
    org = make.org()
    for days in (200, 120, 95, 61, 30, 1):
        add(org, NOW - timedelta(days=days))
    first = prune(NOW, RETENTION)
    kept = signal_times()
    again = prune(NOW, RETENTION)
    assert signal_times() == kept
    assert (again.removed, again.dropped, again.created) == (0, (), ())
    assert first.removed >= 2


def test_retention_off_prunes_nothing(app, make, bare) -> None:
    org = make.org()
    add(org, datetime(2020, 1, 1, tzinfo=UTC))
    outcome = prune(NOW, 0)
    assert outcome.removed == 0 and outcome.cutoff is None
    assert len(signal_times()) == 1
    assert str(outcome).startswith("retention off: nothing pruned")
    assert db.session.execute(select(func.count()).select_from(SignalPrune)).scalar() == 0


def test_a_dry_run_counts_and_changes_nothing(app, make, bare) -> None:
    org = make.org()
    for days in (300, 100, 10):
        add(org, NOW - timedelta(days=days))
    outcome = prune(NOW, RETENTION, dry_run=True)
    assert outcome.removed == 2
    assert str(outcome).startswith("would prune 2 signals older than 2026-09-24")
    assert len(signal_times()) == 3
    assert db.session.execute(select(func.count()).select_from(SignalPrune)).scalar() == 0
    if is_postgres(app):
        assert [p.name for p in partitions.partitions()] == ["loop_signals_default"]


def test_old_rows_are_deleted_in_batches(app, make, bare, monkeypatch) -> None:
    import loops.retention as retention

    monkeypatch.setattr(retention, "DELETE_BATCH", 7)
    org = make.org()
    old = NOW - timedelta(days=RETENTION + 100)
    db.session.execute(
        LoopSignal.__table__.insert(),
        [
            {
                "org_id": org.id,
                "kind": "DELIVER",
                "feature": "f",
                "user_id": 1,
                "subject_id": 9_000_000 + i,
                "created_at": old + timedelta(minutes=i),
            }
            for i in range(50)
        ],
    )
    db.session.commit()
    seen: list[tuple[int, int]] = []
    outcome = prune(NOW, RETENTION, progress=lambda done, total: seen.append((done, total)))
    assert outcome.removed == 50 and signal_times() == {}
    # Progress climbs to the total, one step per batch (the default partition's rows
    # are deleted in batches on PostgreSQL too: no month partition holds them).
    assert seen[-1] == (50, 50)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert len(seen) >= 50 // 7


def daily(org: Organization) -> dict[tuple[str, date], int]:
    db.session.rollback()
    rows = db.session.execute(
        select(SignalDailyCount.kind, SignalDailyCount.day, SignalDailyCount.count).where(
            SignalDailyCount.org_id == org.id
        )
    ).all()
    db.session.rollback()
    return {(k, d): n for k, d, n in rows}


def test_the_daily_counts_outlive_the_signals(app, make, bare) -> None:
    org = make.org()
    rolled_up_day = datetime(2026, 6, 10, 9, tzinfo=UTC)
    missed_day = datetime(2026, 7, 20, 9, tzinfo=UTC)  # the rollup never ran for it
    recent_day = NOW - timedelta(days=2)
    for at, n in ((rolled_up_day, 3), (missed_day, 2), (recent_day, 4)):
        for i in range(n):
            add(org, at + timedelta(minutes=i), SignalKind.ENGAGE)
    rollup.refresh(org.id, rolled_up_day.date(), rolled_up_day.date())
    rollup.refresh(org.id, recent_day.date())
    db.session.commit()

    prune(NOW, RETENTION)

    expected = {
        ("ENGAGE", rolled_up_day.date()): 3,
        ("ENGAGE", missed_day.date()): 2,
        ("ENGAGE", recent_day.date()): 4,
    }
    assert daily(org) == expected
    assert min(signal_times().values()) >= CUTOFF - timedelta(days=31)
    # Every later recount, however far back it is asked to go, leaves the pruned days be.
    rollup.refresh(org.id, date(2026, 1, 1))
    db.session.commit()
    rollup.refresh_recent(NOW, days=400)
    assert daily(org) == expected
    # A prune with a longer retention afterwards does not bring the pruned days back
    # into play either: the cutoff already recorded still holds.
    prune(NOW, RETENTION * 3)
    rollup.refresh(org.id, date(2026, 1, 1))
    db.session.commit()
    assert daily(org) == expected


def test_closing_the_books_recounts_only_tenants_counted_short(app, make, bare) -> None:
    """One pass finds who needs it: a tenant the rollup kept current is not recounted."""
    kept, missed, wrong_feature = make.org("kept"), make.org("missed"), make.org("moved")
    day = datetime(2026, 6, 10, 9, tzinfo=UTC)
    for org in (kept, missed, wrong_feature):
        for i in range(3):
            add(org, day + timedelta(minutes=i), SignalKind.ENGAGE)
    rollup.refresh(kept.id, day.date(), day.date())
    rollup.refresh(wrong_feature.id, day.date(), day.date())
    db.session.execute(
        update(SignalDailyCount)
        .where(SignalDailyCount.org_id == wrong_feature.id)
        .values(feature="other")
    )
    db.session.commit()

    first, last = date(2026, 6, 1), date(2026, 6, 30)
    assert retention._short_tenants(first, last) == sorted([missed.id, wrong_feature.id])
    retention._close_books(first, last)
    db.session.commit()
    assert retention._short_tenants(first, last) == []
    assert daily(missed) == {("ENGAGE", day.date()): 3}


def test_exactly_once_holds_across_months_and_partitions(app, make, bare) -> None:
    user = make.user()
    org = make.org()
    make.member(user, org)
    if is_postgres(app):
        partitions.create_month(datetime(2026, 10, 1, tzinfo=UTC))
    subject = make.notification(user).id
    october = datetime(2026, 10, 5, tzinfo=UTC)
    for kind in (SignalKind.ENGAGE, SignalKind.DELIVER):
        assert emit_for_subject(
            kind, user_id=user.id, subject_id=subject, feature="mention", at=october
        )
        db.session.commit()
        # A month later (another partition), and far off (the default partition).
        for at in (october + timedelta(days=40), datetime(2031, 1, 1, tzinfo=UTC)):
            assert not emit_for_subject(
                kind, user_id=user.id, subject_id=subject, feature="mention", at=at
            )
            db.session.commit()
    rows = db.session.execute(select(LoopSignal.kind, func.count()).group_by(LoopSignal.kind)).all()
    assert dict(rows) == {"ENGAGE": 1, "DELIVER": 1}


def test_a_claim_outlives_a_move_out_of_the_default_partition_and_a_prune(app, make, bare) -> None:
    """The kept signals keep their claims: a signal that moved into its month's new
    partition, and one kept past the cutoff in a partition that straddles it."""
    user = make.user()
    org = make.org()
    make.member(user, org)
    moved = make.notification(user).id
    straddling = make.notification(user).id
    if is_postgres(app):
        partitions.create_month(datetime(2026, 9, 1, tzinfo=UTC))
    at_moved = NOW - timedelta(days=20)  # November: no partition yet on PostgreSQL
    at_straddling = CUTOFF - timedelta(days=3)  # 21 September: older than the cutoff
    for subject, at in ((moved, at_moved), (straddling, at_straddling)):
        assert emit_for_subject(
            SignalKind.ENGAGE, user_id=user.id, subject_id=subject, feature="f", at=at
        )
    db.session.commit()

    outcome = prune(NOW, RETENTION)

    kept = [moved]
    if is_postgres(app):
        assert "loop_signals_p2026_11" in outcome.created
        # September straddles the cutoff and stays whole (SQLite deletes the row: it
        # is older than the cutoff).
        kept.append(straddling)
    for subject in kept:
        assert not emit_for_subject(
            SignalKind.ENGAGE, user_id=user.id, subject_id=subject, feature="f", at=NOW
        )
    db.session.commit()
    engaged = db.session.execute(
        select(LoopSignal.subject_id).where(LoopSignal.kind == "ENGAGE")
    ).scalars()
    assert sorted(engaged) == sorted(kept)


def test_sixteen_writers_racing_for_one_notification_write_one_engage(app, make, bare) -> None:
    """Straight at the database, no notification row lock to queue on: each writer
    stamps its ENGAGE in a different month, so on PostgreSQL each would land in a
    different partition; the guard lets exactly one through."""
    user = make.user()
    org = make.org()
    make.member(user, org)
    subject = make.notification(user).id
    if is_postgres(app):
        for month in months(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)):
            partitions.create_month(month)
    user_id = user.id  # read here: the ORM object belongs to this thread's session
    writers = 16
    barrier = threading.Barrier(writers)
    results: list[bool] = []
    errors: list[BaseException] = []

    def write(i: int) -> None:
        with app.app_context():
            try:
                barrier.wait()
                at = datetime(2026, 1 + i % 12, 1 + i, tzinfo=UTC)
                results.append(
                    emit_for_subject(
                        SignalKind.ENGAGE, user_id=user_id, subject_id=subject, feature="f", at=at
                    )
                )
                db.session.commit()
            except BaseException as exc:  # reported below, with the thread's own error
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(results) == [False] * (writers - 1) + [True]
    db.session.rollback()
    assert (
        db.session.execute(select(func.count()).where(LoopSignal.subject_id == subject)).scalar()
        == 1
    )


def test_a_deleted_signal_gives_its_claim_back(app, make, bare) -> None:
    """The guard mirrors the rows that exist (PostgreSQL), as the unique index does (SQLite)."""
    user = make.user()
    org = make.org()
    make.member(user, org)
    subject = make.notification(user).id
    assert emit_for_subject(
        SignalKind.ENGAGE, user_id=user.id, subject_id=subject, feature="f", at=NOW
    )
    db.session.commit()
    db.session.execute(text("DELETE FROM loop_signals WHERE subject_id = :s"), {"s": subject})
    db.session.commit()
    later = NOW + timedelta(days=45)
    assert emit_for_subject(
        SignalKind.ENGAGE, user_id=user.id, subject_id=subject, feature="f", at=later
    )
    assert not emit_for_subject(
        SignalKind.ENGAGE, user_id=user.id, subject_id=subject, feature="f", at=NOW
    )
    db.session.commit()
    assert list(signal_times().values()) == [later]


@pytest.mark.postgres_only
def test_a_prune_forgets_the_claims_of_the_signals_it_removed_and_only_those(
    app, make, bare
) -> None:
    user = make.user()
    make.member(user, make.org())
    august, september, november = (make.notification(user).id for _ in range(3))
    for month in (8, 9):
        partitions.create_month(datetime(2026, month, 1, tzinfo=UTC))
    for subject, at in (
        (august, datetime(2026, 8, 10, tzinfo=UTC)),  # its month is dropped
        (september, CUTOFF - timedelta(days=3)),  # its month straddles the cutoff: kept
        (november, NOW - timedelta(days=1)),
    ):
        for kind in (SignalKind.DELIVER, SignalKind.ENGAGE):
            assert emit_for_subject(kind, user_id=user.id, subject_id=subject, feature="f", at=at)
    db.session.commit()

    outcome = prune(NOW, RETENTION)

    assert "loop_signals_p2026_08" in outcome.dropped
    claims = db.session.execute(
        text("SELECT subject_id, count(*) FROM loop_signal_once GROUP BY subject_id")
    ).all()
    assert dict(claims) == {september: 2, november: 2}
