"""Digests are exactly once across real processes: two racing, one killed mid-digest."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from loops.database import db
from loops.digest import deliver_due
from loops.models import LoopSignal, Notification
from tests.support.jobs import proc_output
from tests.support.procs import wait_until

DUE = datetime(2026, 11, 20, 9, tzinfo=UTC)
USERS = 12
ITEMS = 3

pytestmark = pytest.mark.slow


def hold_items(make) -> list[int]:  # type: ignore[no-untyped-def]
    org = make.org()
    users = []
    for _ in range(USERS):
        user = make.user()
        make.member(user, org, joined_at=DUE - timedelta(days=30))
        users.append(user.id)
        for i in range(ITEMS):
            db.session.add(
                Notification(
                    user_id=user.id,
                    feature="report.ready",
                    title=f"Report {i}",
                    created_at=DUE - timedelta(hours=5),
                    deliver_at=DUE,
                )
            )
    db.session.commit()
    return users


def assert_each_item_delivered_once(users: list[int]) -> None:
    db.session.rollback()
    items = db.session.execute(
        select(Notification).where(Notification.feature != "digest")
    ).scalars()
    digests = {
        d.id: d
        for d in db.session.execute(
            select(Notification).where(Notification.feature == "digest")
        ).scalars()
    }
    per_digest: dict[int, list[Notification]] = {}
    for item in items:
        assert item.delivered_at is not None and item.digest_id in digests, item.id
        per_digest.setdefault(item.digest_id, []).append(item)
    # One digest per user (all items shared one due time), none empty, each with its own items.
    assert sorted(d.user_id for d in digests.values()) == sorted(users)
    assert sorted(len(v) for v in per_digest.values()) == [ITEMS] * USERS
    for digest_id, its in per_digest.items():
        assert {i.user_id for i in its} == {digests[digest_id].user_id}
        assert {i.delivered_at for i in its} == {digests[digest_id].delivered_at}
    delivered = db.session.execute(
        select(func.count()).select_from(LoopSignal).where(LoopSignal.kind == "DELIVER")
    ).scalar_one()
    assert delivered == USERS * ITEMS + USERS


def test_two_digesters_racing_deliver_each_item_once(app, make, spawn) -> None:
    users = hold_items(make)
    procs = [spawn("digest", "run", DIGEST_TEST_DELAY_S="0.05") for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc_output(proc)
    outputs = [proc_output(p).strip().splitlines()[-1] for p in procs]
    counted = [int(line.split()[1]) for line in outputs]
    assert sum(counted) == USERS, outputs  # together, one digest per user
    assert_each_item_delivered_once(users)


def test_a_digester_killed_mid_digest_loses_and_duplicates_nothing(app, make, spawn) -> None:
    users = hold_items(make)
    victim = spawn("digest", "run", DIGEST_TEST_DELAY_S="60")
    wait_until(lambda: "digest_test_pause" in proc_output(victim), timeout=60)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    db.session.rollback()
    # The killed digest's transaction never committed: everything is still held.
    held = db.session.execute(
        select(func.count()).select_from(Notification).where(Notification.delivered_at.is_(None))
    ).scalar_one()
    assert held == USERS * ITEMS
    survivor = spawn("digest", "run")
    assert survivor.wait(timeout=120) == 0, proc_output(survivor)
    assert f"delivered {USERS} digests with {USERS * ITEMS} items" in proc_output(survivor)
    assert_each_item_delivered_once(users)
    # And a retry afterwards finds nothing left.
    assert deliver_due(DUE + timedelta(days=1), loops_enabled=True).items == 0
