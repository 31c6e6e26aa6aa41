"""Helpers for dashboard tests: sign in through the real form, read CSRF tokens from pages."""

from __future__ import annotations

import re
from datetime import date, datetime

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from loops.database import db
from loops.models import Calibration, Organization, SignalDailyCount, TuneRun, User

# The password the factories give every user they create (tests/conftest.py).
TEST_PASSWORD = "correct-horse-battery"

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = _TOKEN.search(page)
    assert match, f"no csrf_token on {path}"
    return match.group(1)


def login(
    client: FlaskClient, user: User | str, password: str = TEST_PASSWORD, **extra: str
) -> TestResponse:
    email = user if isinstance(user, str) else user.email
    token = csrf_token(client)
    return client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token, **extra}
    )


def htmx_post(client: FlaskClient, path: str, token: str | None, **data: str) -> TestResponse:
    headers = {"HX-Request": "true"}
    if token:
        headers["X-CSRFToken"] = token
    return client.post(path, headers=headers, data=data)


def add_daily(org: Organization, kind: str, feature: str, day: date, count: int) -> None:
    db.session.add(
        SignalDailyCount(org_id=org.id, kind=kind, feature=feature, day=day, count=count)
    )
    db.session.commit()


def add_calibration(
    org: Organization, key: str, value: float, when: datetime, **kw: object
) -> Calibration:
    cal = Calibration(
        org_id=org.id,
        key=key,
        value=value,
        sample_size=kw.pop("sample_size", 64),
        window_days=kw.pop("window_days", 30),
        computed_at=when,
        **kw,
    )
    db.session.add(cal)
    db.session.commit()
    return cal


def add_run(org: Organization, state: str, when: datetime, **kw: object) -> TuneRun:
    run = TuneRun(
        org_id=org.id,
        trigger=kw.pop("trigger", "manual"),
        requested_by=kw.pop("requested_by", "admin@example.com"),
        state=state,
        enqueued_at=when,
        started_at=kw.pop("started_at", when),
        finished_at=kw.pop("finished_at", when if state not in ("queued", "running") else None),
        **kw,
    )
    db.session.add(run)
    db.session.commit()
    return run
