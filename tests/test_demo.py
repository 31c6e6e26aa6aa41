"""The demo data's weekly rhythm follows calendar weekdays (UTC), whatever the date and hour."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from dashboard.cli.demo import DEMO_DAYS, history_start, plan_notifications

# Seven consecutive days, each at a different hour, so both the weekday and the time of
# day that "now" falls on move.
SEVEN_DAYS = [
    datetime(2026, 11, 23, 0, 5, tzinfo=UTC) + timedelta(days=d, hours=3 * d + 1) for d in range(7)
]


@pytest.mark.parametrize("now", SEVEN_DAYS, ids=lambda d: d.strftime("%a-%H%M"))
def test_weekly_rhythm_holds_on_every_day_of_the_week(now: datetime) -> None:
    tenants = [(1, "acme", 90), (2, "globex", 55)]
    rows, org_of = plan_notifications(tenants, {1: [10, 11], 2: [20]}, now, random.Random(7))

    assert len(rows) == len(org_of) > 0
    assert all(row["created_at"] < now for row in rows)
    assert min(row["created_at"] for row in rows) >= history_start(now)
    reads = Counter(row["read_at"].date() for row in rows if row["read_at"] is not None)
    full_days = [history_start(now).date() + timedelta(days=d) for d in range(DEMO_DAYS)]
    weekday = [reads[d] for d in full_days if d.weekday() < 5]
    weekend = [reads[d] for d in full_days if d.weekday() >= 5]
    assert sum(weekday) / len(weekday) > 2 * sum(weekend) / len(weekend)


def test_history_covers_whole_calendar_days_before_today() -> None:
    now = datetime(2026, 11, 29, 15, 5, tzinfo=UTC)
    start = history_start(now)
    assert start == datetime(2026, 9, 30, tzinfo=UTC)
    assert (now.date() - start.date()).days == DEMO_DAYS
