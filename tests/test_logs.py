"""Log lines: key=value text or one JSON object a line, with the same fields, secrets redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard.logs import KeyValueJsonFormatter, formatter, message_fields
from dashboard.security import install_log_redaction
from tests.support.live_server import LiveServer, start_gunicorn

TOKEN = "elp_" + "Zq9Xw8Vu" * 5
TEXT_LINE = re.compile(r"^(?P<time>\S+ \S+) level=(?P<level>\w+) (?P<logger>\S+) (?P<message>.*)$")


def record(message: str, *args: Any, name: str = "jobs.tune", level: int = logging.INFO) -> Any:
    install_log_redaction()  # as every app does: records are redacted when created
    return logging.getLogger(name).makeRecord(name, level, __file__, 1, message, args, None)


def test_message_pairs_become_fields():
    assert message_fields("event=tune_finished tenant=acme run=42 state=succeeded ms=183") == {
        "event": "tune_finished",
        "tenant": "acme",
        "run": "42",
        "state": "succeeded",
        "ms": "183",
    }
    # %r renders strings quoted; the quotes are not part of the value.
    assert message_fields("event=x reason='too many clients' path=\"/a b\"") == {
        "event": "x",
        "reason": "too many clients",
        "path": "/a b",
    }


def test_json_and_text_lines_carry_the_same_fields():
    rec = record("event=tune_finished tenant=%s run=%d ms=%d", "acme", 42, 183)
    text = formatter("text").format(rec)
    line = json.loads(formatter("json").format(rec))

    match = TEXT_LINE.match(text)
    assert match, text
    assert line["level"] == match["level"] == "INFO"
    assert line["logger"] == match["logger"] == "jobs.tune"
    assert line["message"] == match["message"] == "event=tune_finished tenant=acme run=42 ms=183"
    assert line["time"] == match["time"]
    assert {k: line[k] for k in ("event", "tenant", "run", "ms")} == message_fields(
        match["message"]
    )


def test_a_message_cannot_overwrite_the_lines_own_fields():
    line = json.loads(formatter("json").format(record("event=x level=DEBUG logger=fake")))
    assert line["level"] == "INFO"
    assert line["logger"] == "jobs.tune"


def test_json_lines_are_redacted_tracebacks_included():
    rec = record("login failed password=%s headers=Bearer %s", "hunter2-secret", TOKEN)
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        rec.exc_info = sys.exc_info()
    out = KeyValueJsonFormatter().format(rec)
    line = json.loads(out)
    assert TOKEN not in out
    assert "hunter2-secret" not in out
    assert "[REDACTED]" in line["message"]
    assert "ValueError" in line["exc_info"]


# --- real gunicorn processes ------------------------------------------------------


@pytest.fixture
def gunicorn_logging(
    app: Any, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[LiveServer]:
    live = start_gunicorn(
        {
            "DATABASE_URL": database_url,
            # A Redis that is not there: /metrics logs a warning about it.
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "SECRET_KEY": "logs-test",
            "LOG_FORMAT": request.param,
            "GUNICORN_ACCESSLOG": "-",
        },
        tmp_path / "gunicorn.log",
        workers=1,
        threads=2,
    )
    urllib.request.urlopen(f"{live.url}/healthz?access_token={TOKEN}", timeout=10).read()
    urllib.request.urlopen(f"{live.url}/metrics", timeout=10).read()
    live.stop()
    yield live


def _metrics_warning(lines: list[str]) -> str:
    found = [line for line in lines if "event=metrics_source_down" in line]
    assert found, "\n".join(lines)
    return found[0]


@pytest.mark.slow
@pytest.mark.parametrize("gunicorn_logging", ["json"], indirect=True)
def test_gunicorn_with_log_format_json_writes_json_lines(gunicorn_logging):
    lines = [line for line in gunicorn_logging.log().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line, gunicorn's own included
    assert all({"time", "level", "logger", "message"} <= set(p) for p in parsed)
    warning = json.loads(_metrics_warning(lines))
    assert warning["level"] == "WARNING"
    assert warning["logger"] == "dashboard.metrics"
    assert warning["event"] == "metrics_source_down"
    assert warning["source"] == "redis"
    access = [p for p in parsed if p["logger"] == "gunicorn.access"]
    assert any("/healthz" in p["message"] for p in access)
    assert TOKEN not in gunicorn_logging.log()


@pytest.mark.slow
@pytest.mark.parametrize("gunicorn_logging", ["text"], indirect=True)
def test_gunicorn_with_log_format_text_writes_key_value_lines(gunicorn_logging):
    lines = gunicorn_logging.log().splitlines()
    warning = TEXT_LINE.match(_metrics_warning(lines))
    assert warning
    assert warning["level"] == "WARNING"
    assert warning["logger"] == "dashboard.metrics"
    fields = message_fields(warning["message"])
    assert fields["event"] == "metrics_source_down"
    assert fields["source"] == "redis"
    assert TOKEN not in gunicorn_logging.log()
