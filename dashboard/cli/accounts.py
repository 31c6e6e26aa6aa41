"""`users`, `orgs` and `tokens` commands. Bad input: one line, exit 1."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from dashboard.extensions import db
from loops import accounts
from loops import tokens as api_tokens
from loops.accounts import AccountError
from loops.timeutil import parse_iso8601

users_cli = AppGroup("users", help="Manage users.")
orgs_cli = AppGroup("orgs", help="Manage tenants (organizations).")
tokens_cli = AppGroup("tokens", help="Manage API tokens.")


def _fail(exc: Exception) -> click.ClickException:
    db.session.rollback()
    return click.ClickException(str(exc))


@users_cli.command("create")
@click.argument("email")
@click.option(
    "--role", type=click.Choice(["admin", "viewer", "member"]), default="member", show_default=True
)
@click.option("--password", help="Dashboard password (prompted for viewers and admins if omitted).")
def users_create(email: str, role: str, password: str | None) -> None:
    """Create a user."""
    if password is None and role != "member":
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = accounts.create_user(email, role, password)
    except AccountError as exc:
        raise _fail(exc) from None
    click.echo(f"created user {user.email} (id {user.id}, role {user.role})")


@orgs_cli.command("create")
@click.argument("slug")
@click.option("--name", required=True, help="Display name.")
def orgs_create(slug: str, name: str) -> None:
    """Create a tenant."""
    try:
        org = accounts.create_org(slug, name)
    except AccountError as exc:
        raise _fail(exc) from None
    click.echo(f"created tenant {org.slug} (id {org.id})")


@orgs_cli.command("add-member")
@click.argument("slug")
@click.argument("email")
@click.option("--joined-at", help="ISO 8601 time the membership began (default: now).")
def orgs_add_member(slug: str, email: str, joined_at: str | None) -> None:
    """Add a user to a tenant. The oldest membership is the user's primary tenant."""
    try:
        when = parse_iso8601(joined_at) if joined_at else None
    except ValueError:
        raise click.ClickException(f"--joined-at is not an ISO 8601 time: {joined_at!r}") from None
    try:
        membership = accounts.add_member(slug, email, when)
    except AccountError as exc:
        raise _fail(exc) from None
    click.echo(
        f"added {email.strip().lower()} to {slug} (joined {membership.joined_at.isoformat()})"
    )


@tokens_cli.command("create")
@click.argument("email")
@click.option("--name", default="default", show_default=True, help="A label for the token.")
def tokens_create(email: str, name: str) -> None:
    """Create an API token and print it (it is shown only once)."""
    try:
        user = accounts.find_user(email)
    except AccountError as exc:
        raise _fail(exc) from None
    if user is None:
        raise click.ClickException(f"no user with email {email.strip().lower()}")
    _, secret = api_tokens.create_token(user, name)
    db.session.commit()
    click.echo(secret)


@tokens_cli.command("revoke")
@click.argument("token_id", type=int)
def tokens_revoke(token_id: int) -> None:
    """Revoke a token by id; it is refused from the next request on."""
    if not api_tokens.revoke(token_id):
        raise click.ClickException(f"no active token with id {token_id}")
    click.echo(f"revoked token {token_id}")


def init_app(app: Flask) -> None:
    for group in (users_cli, orgs_cli, tokens_cli):
        app.cli.add_command(group)
