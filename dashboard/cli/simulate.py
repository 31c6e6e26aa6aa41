"""`demo simulate`: play the loop forward week by week on a tenant of its own.

Notifications are created through the real policy (held or delivered), the digest job
releases what falls due, simulated people read under a simple behaviour model, and the
weekly tune decides again, so a newcomer can watch the loop close: the mode flips, the
ratio and its interval move, and the lift between the holdout and the treated appears.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from jobs.runs import run_in_process
from loops import delivery, notifications
from loops.accounts import find_org
from loops.database import db
from loops.delivery import PolicySettings
from loops.digest import deliver_due
from loops.models import (
    Calibration,
    DeliveryPolicy,
    Notification,
    Organization,
    OrgMembership,
    RunTrigger,
    User,
)
from loops.policy_rules import DeliveryMode, in_holdout
from loops.timeutil import utcnow

SLUG = "loopback"
NAME = "Loopback Labs (simulated)"
MEMBERS = 100
PER_DAY = 3  # notifications per member per day
ACTOR = "simulation"

# (feature, share of notifications, chance it is read when it arrives on its own)
FEATURES = [
    ("mention", 0.4, 0.72),
    ("report.ready", 0.35, 0.11),
    ("release.notes", 0.25, 0.16),
]
# The behaviour model's one assumption: a low-interest notification that arrives in a
# daily roundup is read more often than the same one arriving alone as a ping.
DIGEST_READ_FACTOR = 1.9


def read_chance(feature: str, in_digest: bool) -> float:
    """The chance a simulated person reads a notification: the model, in one place."""
    base = next(p for f, _, p in FEATURES if f == feature)
    return min(0.95, base * DIGEST_READ_FACTOR) if in_digest else base


@dataclass(frozen=True)
class WeekRow:
    week: int
    enforced: bool
    modes: dict[str, str]
    ratios: dict[str, tuple[float, float, float, int]]
    lift: dict[str, tuple[float | None, float | None]]


def _setup(now: datetime, rng: random.Random) -> tuple[Organization, list[int]]:
    if find_org(SLUG) is not None:
        raise ValueError(f"tenant {SLUG} already exists: the simulation runs once per database")
    org = Organization(slug=SLUG, name=NAME, created_at=now)
    db.session.add(org)
    db.session.flush()
    users = [User(email=f"sim.{i}@{SLUG}.example.com", role="member") for i in range(MEMBERS)]
    db.session.add_all(users)
    db.session.flush()
    for user in users:
        db.session.add(
            OrgMembership(user_id=user.id, org_id=org.id, joined_at=now - timedelta(days=1))
        )
    db.session.commit()
    return org, [u.id for u in users]


def _day(
    org: Organization,
    user_ids: list[int],
    day: datetime,
    rng: random.Random,
    settings: PolicySettings,
) -> None:
    """One simulated day: notifications arrive, the digest goes out, people read."""
    names = [f for f, _, _ in FEATURES]
    weights = [w for _, w, _ in FEATURES]
    users = {
        u.id: u for u in db.session.execute(select(User).where(User.id.in_(user_ids))).scalars()
    }
    reads: list[tuple[datetime, int, int]] = []
    for user_id in user_ids:
        for _ in range(PER_DAY):
            at = day + timedelta(seconds=rng.randint(0, 86_399))
            feature = rng.choices(names, weights)[0]
            created = notifications.create(
                users[user_id],
                feature=feature,
                title=f"{feature} for you",
                now=at,
                loops_enabled=True,
                policy=settings,
            )
            if not created.delivery.held and rng.random() < read_chance(feature, False):
                reads.append(
                    (
                        at + timedelta(minutes=rng.expovariate(1 / 90)),
                        user_id,
                        created.notification.id,
                    )
                )
    digest_time = day + timedelta(hours=settings.digest_hour_utc)
    deliver_due(digest_time, loops_enabled=True)
    released = db.session.execute(
        select(Notification.id, Notification.user_id, Notification.feature).where(
            Notification.delivered_at == digest_time, Notification.digest_id.is_not(None)
        )
    ).all()
    for nid, user_id, feature in released:
        if rng.random() < read_chance(feature, True):
            reads.append((digest_time + timedelta(minutes=rng.expovariate(1 / 120)), user_id, nid))
    for at, user_id, nid in sorted(reads):
        notifications.mark_read(user_id, nid, now=at, loops_enabled=True)


def _week_row(org: Organization, week: int, now: datetime, settings: PolicySettings) -> WeekRow:
    db.session.expire_all()
    policies = {
        p.feature: p.mode
        for p in db.session.execute(
            select(DeliveryPolicy).where(DeliveryPolicy.org_id == org.id)
        ).scalars()
    }
    ratios = {}
    for cal in db.session.execute(
        select(Calibration).where(
            Calibration.org_id == org.id, Calibration.key.like("engagement-ratio:%")
        )
    ).scalars():
        feature = cal.key.partition(":")[2]
        ratios[feature] = (
            cal.value,
            cal.interval_low or 0.0,
            cal.interval_high or 1.0,
            cal.sample_size,
        )
    lifts = {
        lift.feature: (lift.treated.ratio, lift.holdout.ratio)
        for lift in delivery.lift(
            org, delivery.digest_features(org.id), settings.holdout_percent, now
        )
    }
    return WeekRow(week, bool(org.policy_enforced), policies, ratios, lifts)


def simulate(
    weeks: int,
    settings: PolicySettings,
    *,
    now: datetime | None = None,
    seed: int = 7,
    echo: Callable[[str], Any] = print,
    progress: Callable[[int, int], None] | None = None,
) -> list[WeekRow]:
    """Play ``weeks`` weeks ending at ``now``: shadow first, enforced once a digest is decided."""
    now = now or utcnow()
    rng = random.Random(seed)
    start = (now - timedelta(weeks=weeks)).replace(hour=0, minute=0, second=0, microsecond=0)
    org, user_ids = _setup(start, rng)
    held_out = sum(in_holdout(org.id, u, settings.holdout_percent) for u in user_ids)
    echo(f"  {NAME}: {len(user_ids)} people, {held_out} in the holdout")
    rows = []
    for week in range(1, weeks + 1):
        for d in range(7):
            _day(org, user_ids, start + timedelta(days=7 * (week - 1) + d), rng, settings)
            if progress is not None:
                progress((week - 1) * 7 + d + 1, weeks * 7)
        week_end = start + timedelta(weeks=week)
        run_in_process([org.id], trigger=RunTrigger.CLI, requested_by=ACTOR, now=week_end)
        db.session.refresh(org)
        rows.append(_week_row(org, week, week_end, settings))
        if not org.policy_enforced and any(
            m == DeliveryMode.DIGEST.value for m in rows[-1].modes.values()
        ):
            # A digest was decided: the product manager switches the tenant on.
            delivery.set_enforced(org, True, ACTOR, week_end)
            db.session.commit()
    return rows


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(rows: list[WeekRow]) -> list[str]:
    """The weekly table: per week and feature its mode, ratio [interval] n, and lift."""
    header = (
        f"{'week':>4}  {'tenant':<8}  {'feature':<13}  {'mode':<9}  "
        f"{'ratio [95% interval]':<20}  {'n':>5}  {'treated':>7}  {'holdout':>7}"
    )
    lines = [header]
    for row in rows:
        state = "enforced" if row.enforced else "shadow"
        for f, _, _ in FEATURES:
            if f not in row.ratios:
                continue
            value, low, high, n = row.ratios[f]
            treated, holdout = row.lift.get(f, (None, None))
            lines.append(
                f"{row.week:>4}  {state:<8}  {f:<13}  {row.modes.get(f, '-'):<9}  "
                f"{f'{value:.2f} [{low:.2f}, {high:.2f}]':<20}  {n:>5}  "
                f"{_ratio(treated):>7}  {_ratio(holdout):>7}"
            )
    return lines
