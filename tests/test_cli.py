"""Operator commands: happy paths and one-line errors with a non-zero exit."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from loops.database import db
from loops.models import (
    ApiToken,
    LoopSignal,
    Notification,
    Organization,
    OrgMembership,
    SignalDailyCount,
    User,
)
from loops.tokens import hash_token


def invoke(runner, *args: str, input: str | None = None):
    return runner.invoke(args=list(args), input=input)


def assert_one_line_error(result, text: str) -> None:
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert text in lines[0]
    assert "Traceback" not in result.output


def test_users_create_with_password_and_prompt(runner):
    result = invoke(
        runner,
        "users",
        "create",
        "Admin@Example.com",
        "--role",
        "admin",
        "--password",
        "s3cret-pass",
    )
    assert result.exit_code == 0, result.output
    user = db.session.execute(select(User).where(User.email == "admin@example.com")).scalar_one()
    assert user.role == "admin"
    assert user.password_hash and "s3cret-pass" not in user.password_hash

    prompted = invoke(
        runner,
        "users",
        "create",
        "v@example.com",
        "--role",
        "viewer",
        input="viewer-pass\nviewer-pass\n",
    )
    assert prompted.exit_code == 0, prompted.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["users", "create", "a@example.com", "--role", "root", "--password", "x" * 8], "root"),
        (["users", "create", "not-an-email", "--role", "member"], "email"),
        (["users", "create", "a@example.com", "--role", "admin", "--password", "short"], "8"),
    ],
)
def test_users_create_bad_input(runner, args, message):
    result = invoke(runner, *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_duplicate_email_is_one_line_error(runner):
    assert invoke(runner, "users", "create", "dup@example.com").exit_code == 0
    assert_one_line_error(invoke(runner, "users", "create", "DUP@example.com"), "already exists")


def test_orgs_and_members(runner):
    assert invoke(runner, "orgs", "create", "acme", "--name", "Acme Analytics").exit_code == 0
    assert_one_line_error(invoke(runner, "orgs", "create", "acme", "--name", "Again"), "already")
    assert_one_line_error(invoke(runner, "orgs", "create", "Bad Slug!", "--name", "x"), "slug")
    invoke(runner, "users", "create", "ana@example.com")
    result = invoke(
        runner,
        "orgs",
        "add-member",
        "acme",
        "ana@example.com",
        "--joined-at",
        "2025-01-02T03:04:05Z",
    )
    assert result.exit_code == 0, result.output
    membership = db.session.execute(select(OrgMembership)).scalar_one()
    assert membership.joined_at.isoformat() == "2025-01-02T03:04:05+00:00"
    assert_one_line_error(
        invoke(runner, "orgs", "add-member", "acme", "ana@example.com"), "already a member"
    )
    assert_one_line_error(
        invoke(runner, "orgs", "add-member", "nope", "ana@example.com"), "no tenant"
    )
    assert_one_line_error(
        invoke(runner, "orgs", "add-member", "acme", "who@example.com"), "no user"
    )
    assert_one_line_error(
        invoke(runner, "orgs", "add-member", "acme", "ana@example.com", "--joined-at", "yesterday"),
        "ISO 8601",
    )


def test_tokens_create_prints_once_and_stores_only_the_hash(runner, client):
    invoke(runner, "users", "create", "ana@example.com")
    result = invoke(runner, "tokens", "create", "ana@example.com", "--name", "ios")
    assert result.exit_code == 0
    secret = result.stdout.strip()
    row = db.session.execute(select(ApiToken)).scalar_one()
    assert row.name == "ios"
    assert row.token_hash == hash_token(secret)
    assert secret not in row.token_hash
    response = client.get("/api/v1/notifications", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200
    assert_one_line_error(invoke(runner, "tokens", "create", "who@example.com"), "no user")
    revoked = invoke(runner, "tokens", "revoke", str(row.id))
    assert revoked.exit_code == 0
    assert (
        client.get(
            "/api/v1/notifications", headers={"Authorization": f"Bearer {secret}"}
        ).status_code
        == 401
    )
    assert_one_line_error(invoke(runner, "tokens", "revoke", str(row.id)), "no active token")


def test_demo_seed_is_meaningful_and_idempotent(runner):
    first = invoke(runner, "demo", "seed")
    assert first.exit_code == 0, first.output

    def counts() -> tuple[int, ...]:
        return tuple(
            db.session.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (Organization, User, Notification, LoopSignal)
        )

    before = counts()
    orgs, users, notifications, signals = before
    assert orgs >= 5 and users >= 50 and notifications >= 5000
    kinds = dict(
        db.session.execute(select(LoopSignal.kind, func.count()).group_by(LoopSignal.kind)).all()
    )
    assert kinds["DELIVER"] == notifications
    assert 0 < kinds["ENGAGE"] < notifications
    assert signals == kinds["DELIVER"] + kinds["ENGAGE"]
    # Several features and 60 days of history.
    assert (
        db.session.execute(select(func.count(func.distinct(LoopSignal.feature)))).scalar_one() >= 4
    )
    multi = db.session.execute(
        select(OrgMembership.user_id).group_by(OrgMembership.user_id).having(func.count() > 1)
    ).all()
    assert multi, "some users belong to more than one tenant"

    # A weekly rhythm: people read at work.
    engage_days = db.session.execute(
        select(SignalDailyCount.day, func.sum(SignalDailyCount.count))
        .where(SignalDailyCount.kind == "ENGAGE")
        .group_by(SignalDailyCount.day)
    ).all()
    assert len(engage_days) >= 59
    weekday = [n for day, n in engage_days if day.weekday() < 5]
    weekend = [n for day, n in engage_days if day.weekday() >= 5]
    assert sum(weekday) / len(weekday) > 2 * sum(weekend) / len(weekend)

    second = invoke(runner, "demo", "seed")
    assert second.exit_code == 0
    assert "already" in second.output
    assert counts() == before
