"""`users list|set-role|set-password` and `tokens list|create`: the CLI manages what it creates."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from loops.database import db
from loops.models import ApiToken, Role, User
from tests.support.dashboard import TEST_PASSWORD, login


def invoke(runner, *args: str, input: str | None = None):
    return runner.invoke(args=list(args), input=input)


def assert_one_line_error(result, text: str) -> None:
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert text in lines[0]


def rows_of(output: str) -> dict[str, str]:
    """Table lines keyed by their first column (the id)."""
    return {line.split()[0]: line for line in output.splitlines()[1:-1]}


def test_users_list_shows_roles_and_tenants_primary_first(runner, make):
    admin = make.user("boss@example.com", Role.ADMIN)
    ana = make.user("ana@example.com")
    acme, globex = make.org("acme"), make.org("globex")
    make.member(ana, globex, joined_at=datetime(2026, 3, 1, tzinfo=UTC))
    make.member(ana, acme, joined_at=datetime(2025, 1, 1, tzinfo=UTC))

    result = invoke(runner, "users", "list")
    assert result.exit_code == 0, result.output
    rows = rows_of(result.output)
    assert "boss@example.com" in rows[str(admin.id)] and "admin" in rows[str(admin.id)]
    assert rows[str(ana.id)].endswith("acme, globex")  # the oldest membership first
    assert result.output.splitlines()[-1] == "2 user(s)"

    only_admins = invoke(runner, "users", "list", "--role", "admin")
    assert list(rows_of(only_admins.output)) == [str(admin.id)]


def test_set_role_takes_effect_on_the_next_request(runner, client, make):
    make.user("pm@example.com", Role.VIEWER)
    assert login(client, "pm@example.com").status_code == 302
    result = invoke(runner, "users", "set-role", "PM@example.com", "member")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "pm@example.com is now member"
    assert db.session.execute(select(User.role)).scalar_one() == "member"
    # A member cannot use the dashboard, signed in before or not.
    assert client.get("/").status_code in (302, 403)
    assert_one_line_error(invoke(runner, "users", "set-role", "pm@example.com", "root"), "role")
    assert_one_line_error(
        invoke(runner, "users", "set-role", "who@example.com", "admin"), "no user"
    )


def test_set_password_prompts_and_signs_out_other_sessions(runner, app, client, make):
    make.user("pm@example.com", Role.VIEWER)
    assert login(client, "pm@example.com").status_code == 302
    assert client.get("/").status_code == 200

    new = "a-new-password-42"
    result = invoke(runner, "users", "set-password", "pm@example.com", input=f"{new}\n{new}\n")
    assert result.exit_code == 0, result.output
    assert new not in result.output
    assert client.get("/").status_code == 302  # the old session ended
    assert login(app.test_client(), "pm@example.com", TEST_PASSWORD).status_code == 401
    assert login(app.test_client(), "pm@example.com", new).status_code == 302

    assert_one_line_error(
        invoke(runner, "users", "set-password", "pm@example.com", "--password", "short"),
        "at least",
    )
    assert_one_line_error(
        invoke(runner, "users", "set-password", "who@example.com", "--password", new), "no user"
    )


def test_tokens_create_prints_the_id_with_the_token(runner, make):
    make.user("ana@example.com")
    result = invoke(runner, "tokens", "create", "ana@example.com", "--name", "ios")
    assert result.exit_code == 0, result.output
    row = db.session.execute(select(ApiToken)).scalar_one()
    assert result.stdout.strip().startswith("elp_")  # stdout: the token, alone
    assert f"token id {row.id} (ios)" in result.stderr


def test_tokens_list_shows_use_and_revocation_never_the_token(runner, client, make):
    make.user("ana@example.com")
    make.user("ben@example.com")
    used = invoke(runner, "tokens", "create", "ana@example.com", "--name", "ios").stdout.strip()
    invoke(runner, "tokens", "create", "ana@example.com", "--name", "old")
    invoke(runner, "tokens", "create", "ben@example.com", "--name", "cli")
    ids = {name: i for i, name in db.session.execute(select(ApiToken.id, ApiToken.name))}
    invoke(runner, "tokens", "revoke", str(ids["old"]))
    headers = {"Authorization": f"Bearer {used}"}
    assert client.get("/api/v1/notifications", headers=headers).status_code == 200

    result = invoke(runner, "tokens", "list")
    assert result.exit_code == 0, result.output
    rows = rows_of(result.output)
    assert set(rows) == {str(i) for i in ids.values()}
    ios, old, cli = rows[str(ids["ios"])], rows[str(ids["old"])], rows[str(ids["cli"])]
    assert "ana@example.com" in ios and "ben@example.com" in cli
    assert ios.split()[-1] == "-"  # not revoked
    assert ios.count(":") == 2  # created and last used: both times
    assert old.split()[-1] != "-"  # revoked: when
    assert cli.count(":") == 1  # never used, not revoked: created only
    for token in db.session.execute(select(ApiToken)).scalars():
        assert token.token_hash not in result.output
    assert used not in result.output

    mine = invoke(runner, "tokens", "list", "ben@example.com")
    assert list(rows_of(mine.output)) == [str(ids["cli"])]
    assert_one_line_error(invoke(runner, "tokens", "list", "who@example.com"), "no user")
