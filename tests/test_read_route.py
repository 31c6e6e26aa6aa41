"""The mark-read WSGI route in front of Flask answers, writes, counts and logs as Flask's route.

Every case runs twice on the same rows and clock: once with the route on
(``MARK_READ_FAST_ROUTE``), once with it off (Flask's own route answers). Status,
body and headers, the rows written, the metrics counted and the log records must
be identical; and the plain reads must have been answered by the route alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.middleware.proxy_fix import ProxyFix

from dashboard import create_app, metrics
from dashboard.api import read_route, routes
from loops import read_fastpath, tokens
from loops.database import db
from loops.models import ApiToken, LoopSignal, Notification

pytestmark = pytest.mark.postgres_only

START = datetime(2027, 1, 4, 9, 0, tzinfo=UTC)
READ_ROUTE = "/api/v1/notifications/<raw_id>/read"
# What both variants must count alike (bucket and sum samples hold durations, which differ).
COUNTED = (
    "engagement_loops_http_requests_total",
    "engagement_loops_http_request_duration_seconds_count",
    "engagement_loops_signals_total",
)


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    # One trusted proxy, as behind a TLS-terminating one: its X-Forwarded-Proto counts.
    return app_config | {"TRUSTED_PROXY_COUNT": 1}


@dataclass(frozen=True)
class Case:
    name: str
    path: str = "{mine}/read"  # under /api/v1/notifications/, ids and secrets by name
    auth: str | None = "Bearer {reader}"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # for the test client's open()
    before: tuple[str, ...] = ()  # what the reader did to {mine} first: "read", "unread"
    loops: bool = True
    fault: bool = False  # the database driver raises an unexpected error
    cookie: str | None = None  # a session cookie sent along
    routed: bool = False  # answered by the route alone, Flask's app never called


CASES = [
    Case("first read", routed=True),
    Case("repeat read", before=("read",), routed=True),
    Case("read after mark-unread", before=("read", "unread")),
    Case("loops off", loops=False, routed=True),
    Case("no membership", path="{lonely}/read", auth="Bearer {loner}", routed=True),
    Case("their own, second org", path="{theirs}/read", auth="Bearer {other}", routed=True),
    Case("lower-case scheme, padded token", auth="bearer   {reader}  ", routed=True),
    Case("leading zeros in the id", path="000{mine}/read", routed=True),
    Case("https", options={"base_url": "https://localhost"}, routed=True),
    Case("https at the trusted proxy", headers={"X-Forwarded-Proto": "https"}, routed=True),
    Case("Content-Length: 0", headers={"Content-Length": "0"}, routed=True),
    Case("another user's notification", path="{theirs}/read"),
    Case("not an id", path="abc/read"),
    Case("unknown id", path="987654/read"),
    Case("id out of range", path=f"{2**63}/read"),
    Case("id zero", path="0/read"),
    Case("no token", auth=None),
    Case("not a bearer token", auth="Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
    Case("empty bearer token", auth="Bearer   "),
    Case("unknown token", auth="Bearer elp_nope"),
    Case("revoked token", auth="Bearer {revoked}"),
    Case("unknown token, bad id", auth="Bearer elp_nope", path="abc/read"),
    Case("a JSON body", options={"json": {"read": True}}, routed=True),
    Case("an empty JSON object, as fetch wrappers send", options={"json": {}}, routed=True),
    Case("a text body", options={"data": b"read", "content_type": "text/plain"}, routed=True),
    Case("a body without a content type", options={"data": b"{}"}, routed=True),
    Case("a form body", options={"data": {"read": "yes"}}),
    Case(
        "a form body with NUL",
        options={"data": b"read=%00", "content_type": "application/x-www-form-urlencoded"},
    ),
    Case(
        "a multipart body",
        options={
            "data": b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--x--\r\n',
            "content_type": "multipart/form-data; boundary=x",
        },
    ),
    Case("a body over MAX_CONTENT_LENGTH", options={"data": b"x" * (1024 * 1024 + 1)}),
    Case("a query string", options={"query_string": "source=app"}),
    Case("NUL in the query string", options={"query_string": "source=%00"}),
    Case("a session cookie", cookie="not-a-signed-session"),
    Case("GET", method="GET"),
    Case("PUT", method="PUT"),
    Case("trailing slash", path="{mine}/read/"),
    Case("another path", path="{mine}/unread"),
    Case("driver error", fault=True),
]


class Clock:
    """The API's "now", moved by the test: both variants see the same instants."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The clock both mark-read routes (Flask's and the WSGI one) read "now" from."""
    clock = Clock()
    monkeypatch.setattr(routes, "utcnow", clock)
    monkeypatch.setattr(read_route, "utcnow", clock)
    return clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return pinned_clock(monkeypatch)


def the_route(app: Flask) -> read_route.ReadRoute:
    wsgi: Any = app.wsgi_app
    if isinstance(wsgi, ProxyFix):
        wsgi = wsgi.app
    assert isinstance(wsgi, read_route.ReadRoute)
    return wsgi


@pytest.fixture
def flask_calls(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths of the requests the route handed to Flask's app."""
    route = the_route(app)
    inner = route.flask_wsgi
    calls: list[str] = []

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        calls.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    monkeypatch.setattr(route, "flask_wsgi", counting)
    return calls


def counted(client: FlaskClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            if sample.name in COUNTED:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def build_world(make: Any) -> dict[str, Any]:
    """Readers and notifications for mark-read's cases: ids and secrets by name."""
    older, newer = make.org("older"), make.org("newer")
    reader = make.user("reader@example.com", password=None)
    make.member(reader, newer, joined_at=START - timedelta(days=10))
    make.member(reader, older, joined_at=START - timedelta(days=400))  # the primary org
    other = make.user("other@example.com", password=None)
    make.member(other, newer, joined_at=START - timedelta(days=3))
    loner = make.user("loner@example.com", password=None)  # no membership
    mine, quiet = (make.notification(reader, f, created_at=START) for f in ("mention", "digest"))
    theirs = make.notification(other, "mention", created_at=START)
    lonely = make.notification(loner, "mention", created_at=START)
    revoked_row, revoked = tokens.create_token(reader, name="old")
    tokens.revoke(revoked_row.id, now=START)
    return {
        "older": older.id,
        "newer": newer.id,
        "mine": mine.id,
        "quiet": quiet.id,
        "theirs": theirs.id,
        "lonely": lonely.id,
        "revoked": revoked,
        **{
            key: make.token(u)
            for key, u in (("reader", reader), ("other", other), ("loner", loner))
        },
    }


@dataclass
class Outcome:
    status: str
    body: bytes
    headers: list[tuple[str, str]]
    records: list[tuple[str, str, str]]
    counted: dict[tuple[str, frozenset[tuple[str, str]]], float]
    rows: dict[str, list[Any]]
    flask_calls: int


@pytest.fixture
def replay(
    app: Flask,
    client: FlaskClient,
    make: Any,
    clock: Clock,
    flask_calls: list[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[Case, bool], Outcome]:
    def run(case: Case, routed: bool) -> Outcome:
        clock.now = START
        world = build_world(make)
        app.config["MARK_READ_FAST_ROUTE"] = False
        api = {"Authorization": f"Bearer {world['reader']}"}
        for step in case.before:
            clock.now += timedelta(minutes=1)
            method = "POST" if step == "read" else "DELETE"
            reply = client.open(
                f"/api/v1/notifications/{world['mine']}/read", method=method, headers=api
            )
            assert reply.status_code == 200
        app.config["MARK_READ_FAST_ROUTE"] = routed
        app.config["LOOPS_ENABLED"] = "true" if case.loops else "false"
        headers = dict(case.headers)
        if case.auth is not None:
            headers["Authorization"] = case.auth.format(**world)
        before = counted(client)
        flask_calls.clear()
        caplog.clear()
        clock.now += timedelta(minutes=1)  # past the token's last-used resolution
        if case.cookie is not None:
            client.set_cookie("session", case.cookie)
        with monkeypatch.context() as patch:
            if case.fault:
                patch.setattr(read_fastpath, "_run", _explode)
            with caplog.at_level(logging.DEBUG):
                response = client.open(
                    "/api/v1/notifications/" + case.path.format(**world),
                    method=case.method,
                    headers=headers,
                    **case.options,
                )
                body = response.get_data()
        client.delete_cookie("session")
        records = [
            (r.name, r.levelname, r.getMessage())
            for r in caplog.records
            if r.name.split(".")[0] in ("dashboard", "loops")
        ]
        calls = len(flask_calls)
        after = counted(client)
        app.config["LOOPS_ENABLED"] = "true"
        delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
        return Outcome(
            response.status,
            body,
            [(k, v) for k, v in response.headers.items() if k != "Date"],
            records,
            delta,
            database_rows(),
            calls,
        )

    return run


def _explode(*_args: Any) -> Any:
    raise RuntimeError("the driver broke")


def database_rows() -> dict[str, list[Any]]:
    db.session.rollback()

    def rows(*columns: Any) -> list[Any]:
        return [tuple(r) for r in db.session.execute(sa.select(*columns).order_by(columns[0]))]

    signals = LoopSignal.__table__.c
    return {
        "signals": rows(*signals),
        "reads": rows(Notification.id, Notification.read_at, Notification.first_read_at),
        "tokens": rows(ApiToken.id, ApiToken.last_used_at),
    }


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_route_answers_as_flask_does(
    case: Case, replay: Callable[[Case, bool], Outcome], empty_database: Callable[[], None]
) -> None:
    fast = replay(case, True)
    empty_database()
    plain = replay(case, False)

    assert (fast.status, fast.body) == (plain.status, plain.body)
    assert fast.headers == plain.headers
    assert fast.rows == plain.rows
    assert fast.counted == plain.counted
    assert fast.records == plain.records
    # The request was counted once (besides the /metrics scrapes), in both.
    answered = {
        dict(labels)["route"]: value
        for (name, labels), value in fast.counted.items()
        if name == COUNTED[0] and dict(labels)["route"] != "/metrics"
    }
    assert sum(answered.values()) == 1
    if case.routed:
        assert answered == {READ_ROUTE: 1}
    assert plain.flask_calls == 1
    assert fast.flask_calls == (0 if case.routed else 1)


def test_plain_first_reads_record_one_engage_counted_as_the_webs(
    replay: Callable[[Case, bool], Outcome],
) -> None:
    """What the comparison agrees on is the contract."""
    outcome = replay(CASES[0], True)
    assert outcome.status == "200 OK" and outcome.flask_calls == 0
    assert [s[2] for s in outcome.rows["signals"]] == ["ENGAGE"]
    engage = ("engagement_loops_signals_total", frozenset({("kind", "ENGAGE"), ("source", "web")}))
    assert outcome.counted[engage] == 1.0
    assert ("Strict-Transport-Security", "max-age=31536000") not in outcome.headers


@pytest.fixture
def unreachable(app: Flask) -> Iterator[Flask]:
    gone = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "t",
            "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
            "REDIS_URL": app.config["REDIS_URL"],
        }
    )
    yield gone
    with gone.app_context():
        db.engine.dispose()


def test_the_database_down_is_503_with_flasks_log_line_and_count(
    unreachable: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    unavailable = metrics.HTTP_REQUESTS
    answers = []
    for routed in (True, False):
        unreachable.config["MARK_READ_FAST_ROUTE"] = routed
        client = unreachable.test_client()
        caplog.clear()
        before = unavailable.labels("POST", READ_ROUTE, "503")._value.get()
        with caplog.at_level(logging.WARNING, logger="dashboard"):
            reply = client.post(
                "/api/v1/notifications/1/read", headers={"Authorization": "Bearer elp_not_checked"}
            )
        records = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
        count = unavailable.labels("POST", READ_ROUTE, "503")._value.get() - before
        answers.append(
            (reply.status, reply.get_data(), list(reply.headers.items()), records, count)
        )
    assert answers[0] == answers[1]
    status, body, _headers, records, count = answers[0]
    assert count == 1
    assert status == "503 SERVICE UNAVAILABLE"
    assert b'"code":"unavailable"' in body
    assert [(name, level) for name, level, _ in records] == [("dashboard.errors", "WARNING")]
    assert "event=database_unavailable" in records[0][2]
