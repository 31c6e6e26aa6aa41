"""PostgreSQL partition upkeep: months created ahead and dropped behind, locks, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import select, text

from loops import partitions
from loops.database import db
from loops.models import LoopSignal, SignalPrune
from loops.partitions import PartitionLockTimeout
from loops.retention import PruneBusy, prune
from loops.timeutil import utcnow
from tests.test_retention import NOW, add, only_default_partition

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def bare(app: Flask) -> Iterator[None]:
    only_default_partition()
    yield
    db.session.rollback()


def names() -> list[str]:
    found = [p.name for p in partitions.partitions()]
    db.session.rollback()
    return found


def where_is(signal_id: int) -> str:
    return str(
        db.session.execute(
            text("SELECT tableoid::regclass::text FROM loop_signals WHERE id = :id"),
            {"id": signal_id},
        ).scalar_one()
    )


def test_months_are_created_ahead_and_dropped_behind(app, make, bare) -> None:
    first = prune(NOW, 60)
    assert first.created == (
        "loop_signals_p2026_11",
        "loop_signals_p2026_12",
        "loop_signals_p2027_01",
        "loop_signals_p2027_02",
    )
    assert str(first) == (
        "pruned 0 signals older than 2026-09-24 (retention 60 days): "
        "0 partitions dropped, 4 created"
    )
    # Three months on: three more months ahead; November has fallen behind the cutoff.
    later = prune(NOW + timedelta(days=92), 60)
    assert later.created == (
        "loop_signals_p2027_03",
        "loop_signals_p2027_04",
        "loop_signals_p2027_05",
    )
    assert later.dropped == ("loop_signals_p2026_11",)
    assert names() == [
        *(f"loop_signals_p{m}" for m in ("2026_12", "2027_01", "2027_02", "2027_03")),
        "loop_signals_p2027_04",
        "loop_signals_p2027_05",
        "loop_signals_default",
    ]


def test_with_retention_off_partitions_are_still_created_ahead(app, make, bare) -> None:
    org = make.org()
    old = add(org, datetime(2019, 3, 1, tzinfo=UTC))
    outcome = prune(NOW, 0)
    assert str(outcome) == "retention off: nothing pruned (created 5 partitions ahead)"
    # Nothing is too old to keep, so the stray 2019 row gets its month too.
    assert where_is(old) == "loop_signals_p2019_03"


def test_rows_in_the_default_partition_move_into_their_new_month(app, make, bare) -> None:
    org = make.org()
    stray = add(org, datetime(2026, 10, 10, tzinfo=UTC))
    expired = add(org, datetime(2026, 8, 10, tzinfo=UTC))
    assert where_is(stray) == "loop_signals_default"
    outcome = prune(NOW, 60)
    assert "loop_signals_p2026_10" in outcome.created
    assert where_is(stray) == "loop_signals_p2026_10"
    assert db.session.get(LoopSignal, expired) is None  # older than the cutoff: deleted
    assert outcome.removed == 1


@pytest.fixture
def other_session(database_url: str) -> Iterator[sa.Connection]:
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        yield conn
    engine.dispose()


def test_a_drop_gives_way_to_a_long_reader_then_gives_up_in_one_line(
    app, make, bare, runner, other_session, monkeypatch
) -> None:
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "100ms")
    monkeypatch.setattr(partitions, "LOCK_PAUSE_S", 0.05)
    org = make.org()
    old = utcnow() - timedelta(days=500)
    partitions.create_month(partitions.month_start(old))
    add(org, old)
    prune(utcnow(), 0)  # the months ahead exist: only the drop is left to do
    # A long report reading loop_signals (an open transaction holding its share lock).
    other_session.execute(text("SELECT count(*) FROM loop_signals"))

    with pytest.raises(PartitionLockTimeout):
        prune(utcnow(), 400)
    result = runner.invoke(args=["signals", "prune"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: drop partition {partitions.partition_name(partitions.month_start(old))}: "
        "loop_signals stayed locked by other sessions (5 tries, 100ms each); try again later"
    ]
    assert db.session.execute(select(LoopSignal.id)).scalars().all() != []

    other_session.rollback()  # the report ends: the next run does the drop
    result = runner.invoke(args=["signals", "prune"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("pruned 1 signal older than ")
    assert ": 1 partition dropped, 0 created" in result.output


def test_a_second_prune_at_once_is_refused(app, runner, other_session) -> None:
    other_session.execute(
        text("SELECT pg_advisory_lock(hashtext('engagement-loops:signals-prune'))")
    )
    with pytest.raises(PruneBusy):
        prune(NOW, 60)
    result = runner.invoke(args=["signals", "prune"])
    assert result.exit_code == 1
    assert result.output == ("Error: another prune is running; try again when it has finished\n")
    assert db.session.execute(select(SignalPrune.id)).first() is None


def test_an_unpartitioned_table_is_refused_in_one_line(app, runner, monkeypatch) -> None:
    # As if migration 0007 had not run: the table the prune looks at is a plain one.
    monkeypatch.setattr(partitions, "PARENT", "notifications")
    result = runner.invoke(args=["signals", "prune"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: loop_signals is not partitioned: run `flask --app wsgi db upgrade` "
        "(migration 0007)\n"
    )


def test_maintenance_lifts_the_api_statement_timeout_for_its_own_transaction_only(app) -> None:
    """Upkeep scans a month of signals: it may run longer than DB_STATEMENT_TIMEOUT_MS,
    which stops a runaway API request. The lift lasts until the transaction ends."""
    configured = db.session.execute(text("SHOW statement_timeout")).scalar_one()
    db.session.execute(text("SET statement_timeout = 100"))  # as if configured so
    db.session.commit()
    try:
        with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
            db.session.execute(text("SELECT pg_sleep(0.3)"))
        db.session.rollback()

        partitions.lift_statement_timeout()
        db.session.execute(text("SELECT pg_sleep(0.3)"))  # not cancelled
        db.session.commit()

        with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
            db.session.execute(text("SELECT pg_sleep(0.3)"))
        db.session.rollback()
    finally:
        db.session.execute(
            text("SELECT set_config('statement_timeout', :v, false)"), {"v": configured}
        )
        db.session.commit()
