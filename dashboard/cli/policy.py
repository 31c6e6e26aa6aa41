"""`policy show|pin|unpin|enforce` and `digest run`. Bad input: one line, exit 1."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from dashboard.cli.progress import progress
from jobs.digest import run_digests
from loops import delivery
from loops.accounts import find_org
from loops.database import db
from loops.delivery import PolicyError, PolicySettings
from loops.models import Organization
from loops.notifications import FEATURE_PATTERN
from loops.policy_rules import DeliveryMode
from loops.signals import loops_on
from loops.timeutil import iso, utcnow

policy_cli = AppGroup("policy", help="Delivery policies: show, pin, unpin, enforce.")
digest_cli = AppGroup("digest", help="Digests of held notifications.")

ACTOR = "cli"


def _tenant(slug: str) -> Organization:
    org = find_org(slug)
    if org is None:
        raise click.ClickException(f"no tenant with slug {slug}")
    return org


def _feature(feature: str) -> str:
    if not FEATURE_PATTERN.fullmatch(feature):
        raise click.ClickException(f"not a feature name: {feature!r} (1-64 of [a-z0-9_.-])")
    return feature


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@policy_cli.command("show")
@click.argument("slug")
def policy_show(slug: str) -> None:
    """A tenant's delivery: shadow or enforced, each feature's mode and why, and lift."""
    org = _tenant(slug)
    settings = PolicySettings.from_config(current_app.config)
    state = "enforced" if org.policy_enforced else "shadow (decided, not applied)"
    click.echo(f"{org.slug}: {state}")
    if org.policy_enforced_at is not None:
        click.echo(f"  since {iso(org.policy_enforced_at)} by {org.policy_enforced_by}")
    click.echo(
        f"  holdout {settings.holdout_percent}% of users, digests at "
        f"{settings.digest_hour_utc:02d}:00 UTC, digest below {settings.digest_below:.2f}"
    )
    if not loops_on():
        click.echo("  LOOPS_ENABLED is not 'true': nothing is decided or applied")
    policies = delivery.policies_of(org.id)
    if not policies:
        click.echo("  no decisions yet (the next tune run decides)")
        return
    width = max(len(p.feature) for p in policies)
    click.echo(f"  {'feature':<{width}}  mode       pinned  reason")
    for p in policies:
        pinned = "yes" if p.pinned_by else "no"
        click.echo(f"  {p.feature:<{width}}  {p.mode:<9}  {pinned:<6}  {p.reason}")
    lifts = delivery.lift(org, delivery.digest_features(org.id), settings.holdout_percent, utcnow())
    for lift in lifts:
        h, t = lift.holdout, lift.treated
        click.echo(
            f"  lift {lift.feature}: treated {_pct(t.ratio)} {list(t.interval)} n={t.n}"
            f" vs holdout {_pct(h.ratio)} {list(h.interval)} n={h.n}"
        )


@policy_cli.command("pin")
@click.argument("slug")
@click.argument("feature")
@click.argument("mode", type=click.Choice([m.value for m in DeliveryMode]))
def policy_pin(slug: str, feature: str, mode: str) -> None:
    """Hold FEATURE's mode for tenant SLUG, whatever the measurements say."""
    org = _tenant(slug)
    try:
        delivery.pin(org, _feature(feature), DeliveryMode(mode), ACTOR, utcnow())
    except PolicyError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"{slug}: {feature} pinned to {mode}")


@policy_cli.command("unpin")
@click.argument("slug")
@click.argument("feature")
def policy_unpin(slug: str, feature: str) -> None:
    """Hand FEATURE back to the measurements (the next tune run decides)."""
    org = _tenant(slug)
    try:
        delivery.unpin(org, _feature(feature), ACTOR, utcnow())
    except PolicyError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"{slug}: {feature} unpinned")


@policy_cli.command("enforce")
@click.argument("slug")
@click.argument("state", type=click.Choice(["on", "off"]))
def policy_enforce(slug: str, state: str) -> None:
    """Apply the tenant's policy (on) or only show it (off: shadow)."""
    org = _tenant(slug)
    changed = delivery.set_enforced(org, state == "on", ACTOR, utcnow())
    db.session.commit()
    now = "enforced" if state == "on" else "in shadow"
    click.echo(f"{slug}: {now}" + ("" if changed else " (unchanged)"))


@digest_cli.command("run")
def digest_run() -> None:
    """Deliver the held notifications that are due now; print how many digests and items."""
    with progress("Delivering digests") as bar:
        outcome = run_digests(progress=lambda done, total: bar.advance_to(done, total))
    click.echo(str(outcome))


def init_app(app: Flask) -> None:
    app.cli.add_command(policy_cli)
    app.cli.add_command(digest_cli)
