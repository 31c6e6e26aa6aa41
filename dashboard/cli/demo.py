"""`demo seed`: believable tenants, people and 60 days of engagement with a weekly rhythm."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import insert, select
from werkzeug.security import generate_password_hash

from dashboard.cli.progress import Progress
from dashboard.cli.progress import progress as cli_progress
from dashboard.extensions import db
from loops import rollup
from loops.accounts import find_org
from loops.delivery import PolicySettings
from loops.models import (
    LoopSignal,
    Notification,
    Organization,
    OrgMembership,
    Role,
    SignalKind,
    User,
)
from loops.timeutil import utcnow

DEMO_DAYS = 60
ADMIN_LOGIN = ("admin@example.com", "demo-admin-pass")
VIEWER_LOGIN = ("viewer@example.com", "demo-viewer-pass")

# (slug, name, members, notifications per weekday)
TENANTS = [
    ("acme", "Acme Analytics", 40, 90),
    ("globex", "Globex Logistics", 28, 55),
    ("initech", "Initech Payroll", 18, 30),
    ("umbrella", "Umbrella Health", 14, 22),
    ("hooli", "Hooli Workspace", 9, 12),
    ("vandelay", "Vandelay Imports", 5, 5),
]

# (feature, share of notifications, chance a recipient reads it)
FEATURES = [
    ("mention", 0.22, 0.78),
    ("comment.reply", 0.20, 0.64),
    ("task.assigned", 0.18, 0.71),
    ("report.ready", 0.14, 0.42),
    ("billing.alert", 0.06, 0.55),
    # Weekly summary mails: hardly anyone opens them (confidently below the digest
    # threshold, so a fresh `make run` shows a digest decision).
    ("digest.weekly", 0.20, 0.07),
]

# Monday..Sunday: people read at work.
WEEKDAY_FACTOR = [1.0, 1.05, 1.0, 0.95, 0.85, 0.3, 0.22]

FIRST_NAMES = [
    "ana",
    "ben",
    "chen",
    "dara",
    "eli",
    "fatima",
    "gus",
    "hana",
    "ivan",
    "jo",
    "kai",
    "lena",
    "mo",
    "nia",
    "omar",
    "pia",
    "quinn",
    "raj",
    "sara",
    "tom",
]


@dataclass(frozen=True)
class SeedSummary:
    tenants: int
    users: int
    notifications: int
    signals: int

    def __str__(self) -> str:
        return (
            f"demo data: {self.tenants} tenants, {self.users} users, "
            f"{self.notifications} notifications, {self.signals} signals"
        )


def already_seeded() -> bool:
    return find_org(TENANTS[0][0]) is not None


def _login_user(email: str, password: str, role: Role) -> User:
    user = User(email=email, role=role.value, password_hash=generate_password_hash(password))
    db.session.add(user)
    return user


def seed(
    echo: Callable[[str], Any] = print,
    now: datetime | None = None,
    scale: float = 1.0,
    progress: Progress | None = None,
) -> SeedSummary | str:
    """Create the demo data set once; a second call changes nothing."""
    if already_seeded():
        return "demo data already present; nothing to do"
    now = now or utcnow()
    rng = random.Random(20261126)
    start = history_start(now)

    for email, password, role in (
        (*ADMIN_LOGIN, Role.ADMIN),
        (*VIEWER_LOGIN, Role.VIEWER),
    ):
        if db.session.execute(select(User).where(User.email == email)).first() is None:
            _login_user(email, password, role)

    orgs: list[tuple[Organization, int, int]] = []
    for slug, name, members, per_day in TENANTS:
        org = Organization(slug=slug, name=name, created_at=start - timedelta(days=200))
        db.session.add(org)
        orgs.append((org, members, per_day))
    db.session.flush()

    recipients: dict[int, list[int]] = {}
    user_count = 0
    all_users: list[tuple[User, Organization]] = []
    for org, members, _ in orgs:
        for i in range(members):
            first = FIRST_NAMES[i % len(FIRST_NAMES)]
            user = User(email=f"{first}.{i}@{org.slug}.example.com", role=Role.MEMBER.value)
            db.session.add(user)
            all_users.append((user, org))
    db.session.flush()
    for user, org in all_users:
        joined = start - timedelta(days=rng.randint(30, 400))
        db.session.add(OrgMembership(user_id=user.id, org_id=org.id, joined_at=joined))
        recipients.setdefault(org.id, []).append(user.id)
        user_count += 1
    # Some people belong to a second tenant too, joined later: their primary
    # tenant (the oldest membership) still gets their signals.
    for user, org in rng.sample(all_users, k=len(all_users) // 6):
        other = rng.choice([o for o, _, _ in orgs if o.id != org.id])
        db.session.add(
            OrgMembership(
                user_id=user.id, org_id=other.id, joined_at=now - timedelta(days=rng.randint(1, 20))
            )
        )
    db.session.flush()

    members_of = {org.id: recipients[org.id] for org, _, _ in orgs}
    volumes = [(org.id, org.slug, per_day) for org, _, per_day in orgs]
    notification_rows, org_of = plan_notifications(volumes, members_of, now, rng, scale)

    signals = 0
    for begin in range(0, len(notification_rows), 2000):
        chunk = notification_rows[begin : begin + 2000]
        ids = (
            db.session.execute(
                insert(Notification).returning(Notification.id, sort_by_parameter_order=True), chunk
            )
            .scalars()
            .all()
        )
        signal_rows: list[dict[str, Any]] = []
        for nid, row, org_id in zip(ids, chunk, org_of[begin : begin + 2000], strict=True):
            base = {
                "org_id": org_id,
                "feature": row["feature"],
                "user_id": row["user_id"],
                "subject_id": nid,
            }
            signal_rows.append(
                base | {"kind": SignalKind.DELIVER.value, "created_at": row["created_at"]}
            )
            if row["read_at"] is not None:
                signal_rows.append(
                    base | {"kind": SignalKind.ENGAGE.value, "created_at": row["read_at"]}
                )
        db.session.execute(insert(LoopSignal), signal_rows)
        signals += len(signal_rows)
        if progress is not None:
            progress.advance_to(begin + len(chunk), len(notification_rows))
        else:
            echo(f"  notifications {begin + len(chunk)}/{len(notification_rows)}")

    for org, _, _ in orgs:
        rollup.refresh(org.id, (start - timedelta(days=1)).date())
    db.session.commit()
    _tune_all(echo, now)
    return SeedSummary(len(orgs), user_count + 2, len(notification_rows), signals)


def history_start(now: datetime) -> datetime:
    """Midnight UTC DEMO_DAYS calendar days before today: each simulated day is a calendar day."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DEMO_DAYS)


def plan_notifications(
    tenants: list[tuple[int, str, int]],
    members_of: dict[int, list[int]],
    now: datetime,
    rng: random.Random,
    scale: float = 1.0,
) -> tuple[list[dict[str, Any]], list[int]]:
    """The demo's notifications (and each one's tenant id), none at or after `now`.

    `tenants` holds (org id, slug, notifications per weekday). Days are UTC calendar days,
    so the weekly rhythm follows real weekdays whatever the date and hour of `now`.
    """
    start = history_start(now)
    feature_names = [f for f, _, _ in FEATURES]
    feature_weights = [w for _, w, _ in FEATURES]
    read_chance = {f: p for f, _, p in FEATURES}
    rows: list[dict[str, Any]] = []
    org_of: list[int] = []
    for org_id, slug, per_day in tenants:
        for day in range(DEMO_DAYS):
            day_start = start + timedelta(days=day)
            volume = per_day * WEEKDAY_FACTOR[day_start.weekday()] * scale
            # A slow upward drift for the big tenant: something to notice.
            volume *= 1.0 + (0.004 * day if slug == "acme" else 0.0)
            for _ in range(max(0, int(rng.gauss(volume, volume * 0.15)))):
                created = day_start + timedelta(seconds=rng.randint(0, 86_399))
                if created >= now:
                    continue
                feature = rng.choices(feature_names, feature_weights)[0]
                read_at = None
                if rng.random() < read_chance[feature]:
                    candidate = created + timedelta(minutes=rng.expovariate(1 / 240))
                    if candidate < now:
                        read_at = candidate
                rows.append(
                    {
                        "user_id": rng.choice(members_of[org_id]),
                        "feature": feature,
                        "title": _title(feature, rng),
                        "created_at": created,
                        "read_at": read_at,
                        "first_read_at": read_at,
                        "delivered_at": created,
                    }
                )
                org_of.append(org_id)
    return rows, org_of


def _tune_all(echo: Callable[[str], Any], now: datetime) -> None:
    """Tune every tenant in-process, so a fresh `make run` shows calibrations and run history:
    first as the weekly job would have in each past week the signals cover (so each
    calibration has a history to chart), then now."""
    from jobs import settings as job_settings
    from jobs.runs import run_in_process
    from loops.models import RunTrigger, TuneRun

    for weeks_ago in range((DEMO_DAYS - job_settings.lookback_days()) // 7, 0, -1):
        at = now - timedelta(weeks=weeks_ago)
        past, _ = run_in_process(None, trigger=RunTrigger.SCHEDULE, requested_by=None, now=at)
        # Dated when they would have run, not when the seed ran them.
        for run in db.session.execute(
            select(TuneRun).where(TuneRun.id.in_([r.run_id for r in past]))
        ).scalars():
            shift = (run.enqueued_at or at) - at
            run.enqueued_at, run.started_at = at, (run.started_at or at) - shift
            run.finished_at = run.finished_at - shift if run.finished_at else None
            run.heartbeat_at = run.finished_at
        db.session.commit()
    results, _ = run_in_process(None, trigger=RunTrigger.CLI, requested_by="demo seed", now=now)
    states = sorted({r.state for r in results})
    echo(f"  tuned {len(results)} tenants ({', '.join(states) or 'none'})")


def _title(feature: str, rng: random.Random) -> str:
    person = rng.choice(FIRST_NAMES).capitalize()
    return {
        "mention": f"{person} mentioned you in a comment",
        "comment.reply": f"{person} replied to your comment",
        "task.assigned": f"{person} assigned you a task",
        "report.ready": "Your scheduled report is ready",
        "billing.alert": "Your invoice is due in 3 days",
        "digest.weekly": "Your weekly digest",
    }[feature]


demo_cli = AppGroup("demo", help="Demo data.")


@demo_cli.command("seed")
@click.option(
    "--simulate-weeks",
    type=click.IntRange(0, 26),
    default=0,
    show_default=True,
    help="Then play the loop forward this many weeks on a simulated tenant (demo simulate).",
)
def demo_seed(simulate_weeks: int) -> None:
    """Create demo tenants, users, notifications and 60 days of signals (once)."""
    # The bar (on a terminal) replaces the step-by-step lines; piped, only the summary.
    with cli_progress("seeding demo data") as bar:
        summary = seed(echo=lambda _line: None, progress=bar)
    click.echo(summary)
    if simulate_weeks:
        _simulate(simulate_weeks)


@demo_cli.command("simulate")
@click.option("--weeks", type=click.IntRange(1, 26), default=6, show_default=True)
def demo_simulate(weeks: int) -> None:
    """Play the loop forward week by week on a tenant of its own and print what it decided."""
    _simulate(weeks)


def _simulate(weeks: int) -> None:
    from dashboard.cli import simulate

    settings = PolicySettings.from_config(current_app.config)
    with cli_progress(f"simulating {weeks} weeks") as bar:
        try:
            rows = simulate.simulate(
                weeks,
                settings,
                echo=lambda _line: None,
                progress=lambda done, total: bar.advance_to(done, total),
            )
        except ValueError as exc:
            db.session.rollback()
            raise click.ClickException(str(exc)) from None
    for line in simulate.table(rows):
        click.echo(line)


def init_app(app: Flask) -> None:
    app.cli.add_command(demo_cli)
