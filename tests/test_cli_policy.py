"""`policy show|pin|unpin|enforce` and `digest run` from the command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from loops.database import db
from loops.models import DeliveryPolicy, Notification, Organization, PolicyChange

DUE = datetime(2026, 11, 20, 9, tzinfo=UTC)


def run(runner, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(args=list(args))


def one_line_error(result, text: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and text in lines[0], result.output
    assert "Traceback" not in result.output


def test_pin_unpin_enforce_and_show(runner, make) -> None:
    make.org("acme")
    assert run(runner, "policy", "show", "acme").output.splitlines()[:1] == [
        "acme: shadow (decided, not applied)"
    ]
    assert "no decisions yet" in run(runner, "policy", "show", "acme").output

    pinned = run(runner, "policy", "pin", "acme", "report.ready", "digest")
    assert pinned.exit_code == 0 and pinned.output == "acme: report.ready pinned to digest\n"
    enforced = run(runner, "policy", "enforce", "acme", "on")
    assert enforced.output == "acme: enforced\n"
    assert run(runner, "policy", "enforce", "acme", "on").output == "acme: enforced (unchanged)\n"

    shown = run(runner, "policy", "show", "acme")
    assert shown.exit_code == 0
    assert shown.output.startswith("acme: enforced\n  since ")
    assert "holdout 10% of users, digests at 09:00 UTC, digest below 0.20" in shown.output
    assert "report.ready  digest     yes     pinned to digest by cli" in shown.output
    assert "lift report.ready: treated - [0.0, 1.0] n=0 vs holdout - [0.0, 1.0] n=0" in (
        shown.output
    )

    assert run(runner, "policy", "unpin", "acme", "report.ready").exit_code == 0
    row = db.session.execute(select(DeliveryPolicy)).scalar_one()
    assert row.pinned_by is None and row.mode == "digest"
    actions = db.session.execute(select(PolicyChange.action).order_by(PolicyChange.id))
    assert list(actions.scalars()) == ["pin", "enforce", "unpin"]
    assert run(runner, "policy", "enforce", "acme", "off").output == "acme: in shadow\n"
    assert db.session.get(Organization, row.org_id).policy_enforced is False  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("policy", "show", "nope"), "no tenant with slug nope"),
        (("policy", "pin", "nope", "mention", "digest"), "no tenant with slug nope"),
        (("policy", "pin", "acme", "Bad Feature", "digest"), "not a feature name"),
        (("policy", "pin", "acme", "digest", "digest"), "always delivered immediately"),
        (("policy", "unpin", "acme", "mention"), "mention is not pinned for acme"),
        (("policy", "enforce", "nope", "on"), "no tenant with slug nope"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(runner, make, args, message) -> None:  # type: ignore[no-untyped-def]
    make.org("acme")
    one_line_error(run(runner, *args), message)


def test_a_bad_mode_is_refused_by_its_choices(runner, make) -> None:
    make.org("acme")
    result = run(runner, "policy", "pin", "acme", "mention", "weekly")
    assert result.exit_code == 2 and "weekly" in result.output
    result = run(runner, "policy", "enforce", "acme", "maybe")
    assert result.exit_code == 2


def test_digest_run_delivers_what_is_due_and_prints_counts(runner, make) -> None:
    user = make.user()
    for title in ("A", "B"):
        db.session.add(
            Notification(
                user_id=user.id,
                feature="report.ready",
                title=title,
                created_at=DUE - timedelta(hours=5),
                deliver_at=DUE,
            )
        )
    db.session.commit()
    result = run(runner, "digest", "run")
    assert result.exit_code == 0
    assert result.output == "delivered 1 digest with 2 items\n"  # quiet when piped: no bar
    assert run(runner, "digest", "run").output == "delivered 0 digests with 0 items\n"
