"""Mark-read's two paths (PostgreSQL fast path, general path) answer and write the same."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from loops import read_fastpath
from loops.database import db
from loops.models import ApiToken, LoopSignal, Notification
from tests.test_read_route import START, Clock, build_world, pinned_clock

pytestmark = pytest.mark.postgres_only


def replay(app: Flask, client: FlaskClient, make: Any, clock: Clock) -> dict[str, Any]:
    """Build the same rows, run the same requests; what each answered and what was written."""
    clock.now = START
    world = build_world(make)
    first, quiet, theirs, lonely = (world[k] for k in ("mine", "quiet", "theirs", "lonely"))

    answers: list[tuple[str, int, Any]] = []

    def call(step: str, method: str, who: str | None, path: str) -> None:
        clock.now += timedelta(minutes=1)  # past the token's last-used resolution
        headers = {"Authorization": f"Bearer {who}"} if who else {}
        response = client.open(f"/api/v1/notifications/{path}", method=method, headers=headers)
        answers.append((step, response.status_code, response.get_json()))

    me = world["reader"]
    call("first read", "POST", me, f"{first}/read")
    call("repeat", "POST", me, f"{first}/read")
    call("unread", "DELETE", me, f"{first}/read")
    call("after unread", "POST", me, f"{first}/read")
    call("another user's id", "POST", me, f"{theirs}/read")
    call("not an id", "POST", me, "abc/read")
    call("unknown id", "POST", me, "987654/read")
    call("no token", "POST", None, f"{quiet}/read")
    call("unknown token", "POST", "elp_nope", f"{quiet}/read")
    call("revoked token", "POST", world["revoked"], f"{quiet}/read")
    call("unknown token, bad id", "POST", "elp_nope", "abc/read")
    call("no membership", "POST", world["loner"], f"{lonely}/read")
    app.config["LOOPS_ENABLED"] = "false"
    call("loops off", "POST", me, f"{quiet}/read")
    app.config["LOOPS_ENABLED"] = "true"
    call("their own", "POST", world["other"], f"{theirs}/read")

    db.session.rollback()
    signals = db.session.execute(sa.select(LoopSignal.__table__).order_by(LoopSignal.id)).all()
    reads = db.session.execute(
        sa.select(Notification.id, Notification.read_at, Notification.first_read_at).order_by(
            Notification.id
        )
    ).all()
    used = db.session.execute(
        sa.select(ApiToken.id, ApiToken.last_used_at).order_by(ApiToken.id)
    ).all()
    return {
        "answers": answers,
        "signals": signals,
        "reads": reads,
        "tokens_used": used,
        "ids": {"older": world["older"], "newer": world["newer"], "first": first, "theirs": theirs},
    }


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return pinned_clock(monkeypatch)


def test_fast_and_general_paths_answer_and_write_the_same(
    app: Flask,
    client: FlaskClient,
    make: Any,
    clock: Clock,
    empty_database: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert read_fastpath.available()
    fast = replay(app, client, make, clock)
    empty_database()
    # The general path is what runs wherever the fast path is not available (SQLite).
    monkeypatch.setattr(read_fastpath, "available", lambda: False)
    app.config["MARK_READ_FAST_ROUTE"] = False  # the WSGI route in front of Flask too
    general = replay(app, client, make, clock)

    for (step, *fast_answer), (_, *general_answer) in zip(
        fast["answers"], general["answers"], strict=True
    ):
        assert fast_answer == general_answer, step
    assert fast["signals"] == general["signals"]
    assert fast["reads"] == general["reads"]
    assert fast["tokens_used"] == general["tokens_used"]

    # And what they agree on is the contract: one ENGAGE per first read with loops on
    # and a membership, attributed to the oldest membership, at the read's time.
    statuses = {step: status for step, status, _ in fast["answers"]}
    assert [statuses[s] for s in ("another user's id", "not an id", "unknown id")] == [404] * 3
    assert {statuses[s] for s in statuses if "token" in s} == {401}
    first_reads = {
        s: body["first_read"]
        for s, status, body in fast["answers"]
        if status == 200 and "first_read" in body
    }
    assert first_reads == {
        "first read": True,
        "repeat": False,
        "after unread": False,
        "no membership": True,
        "loops off": True,
        "their own": True,
    }
    ids = fast["ids"]
    engage = [(s.kind, s.org_id, s.subject_id, s.created_at) for s in fast["signals"]]
    assert engage == [
        ("ENGAGE", ids["older"], ids["first"], START + timedelta(minutes=1)),
        ("ENGAGE", ids["newer"], ids["theirs"], START + timedelta(minutes=14)),
    ]
