"""`users`, `orgs` and `tokens` commands. Bad input: one line, exit 1."""

from __future__ import annotations

from datetime import datetime

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


ROLES = click.Choice(["admin", "viewer", "member"])


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M")


@users_cli.command("list")
@click.option("--role", type=ROLES, help="Only users with this role.")
def users_list(role: str | None) -> None:
    """List users: id, email, role, created, tenants (primary first)."""
    rows = accounts.list_users(role)
    click.echo(f"{'id':>6}  {'email':<36} {'role':<7} {'created':<16}  tenants")
    for user, slugs in rows:
        click.echo(
            f"{user.id:>6}  {user.email:<36} {user.role:<7} {_when(user.created_at):<16}  "
            f"{', '.join(slugs) or '-'}"
        )
    click.echo(f"{len(rows)} user(s)")


@users_cli.command("set-role")
@click.argument("email")
@click.argument("role", metavar="admin|viewer|member")
def users_set_role(email: str, role: str) -> None:
    """Change a user's role (applies from their next request)."""
    try:
        user = accounts.set_role(email, role)
    except AccountError as exc:
        raise _fail(exc) from None
    click.echo(f"{user.email} is now {user.role}")


@users_cli.command("set-password")
@click.argument("email")
@click.option("--password", help="The new password (prompted for if omitted).")
def users_set_password(email: str, password: str | None) -> None:
    """Set a user's dashboard password; their existing sessions end."""
    try:
        accounts.existing_user(email)
    except AccountError as exc:
        raise _fail(exc) from None
    if password is None:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    try:
        user = accounts.set_password(email, password)
    except AccountError as exc:
        raise _fail(exc) from None
    click.echo(f"password set for {user.email}; their other sessions are signed out")


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
    row, secret = api_tokens.create_token(user, name)
    db.session.commit()
    # The token alone on stdout (so `$(flask … tokens create …)` captures just it); its
    # id, for `tokens list` and `tokens revoke`, beside it on stderr.
    click.echo(f"token id {row.id} ({row.name}) for {user.email}, shown once:", err=True)
    click.echo(secret)


@tokens_cli.command("list")
@click.argument("email", required=False)
def tokens_list(email: str | None) -> None:
    """List API tokens (all, or EMAIL's): id, user, name, created, last used, revoked."""
    user_id = None
    if email is not None:
        try:
            user_id = accounts.existing_user(email).id
        except AccountError as exc:
            raise _fail(exc) from None
    rows = api_tokens.list_tokens(user_id)
    click.echo(f"{'id':>6}  {'user':<32} {'name':<16} {'created':<16}  {'last used':<16}  revoked")
    for token, owner in rows:
        click.echo(
            f"{token.id:>6}  {owner:<32} {token.name:<16} {_when(token.created_at):<16}  "
            f"{_when(token.last_used_at):<16}  {_when(token.revoked_at)}"
        )
    click.echo(f"{len(rows)} token(s)")


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
