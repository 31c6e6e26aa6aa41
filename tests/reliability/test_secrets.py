"""Secrets: SECRET_KEY required in production; no token or password ever reaches a log."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest
from flask import Flask

from dashboard import create_app
from dashboard.config import ConfigError
from loops.models import Role
from tests.support.dashboard import TEST_PASSWORD
from tests.support.procs import ROOT


def test_create_app_refuses_production_without_secret_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"})


NO_SECRET_KEY = (
    "error: SECRET_KEY is not set: set the SECRET_KEY environment variable (or put it in "
    ".env), or FLASK_DEBUG=1 for local development"
)


def _env_without_secret(tmp_path: Any) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        "WEB_CONCURRENCY": "1",
        # A developer's .env may well hold a SECRET_KEY.
        "FLASK_SKIP_DOTENV": "1",
    }


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_gunicorn_refuses_to_boot_without_secret_key(tmp_path: Any) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "-b",
            "127.0.0.1:0",
            "wsgi:app",
        ],
        cwd=ROOT,
        env=_env_without_secret(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert _one_line(result) == NO_SECRET_KEY


@pytest.mark.parametrize(
    "args", [["routes"], ["tokens", "create", "ana@example.com"], ["db", "upgrade"]]
)
def test_flask_commands_refuse_to_start_without_secret_key(tmp_path: Any, args: list[str]) -> None:
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "flask"), "--app", "wsgi", *args],
        cwd=ROOT,
        env=_env_without_secret(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert _one_line(result) == NO_SECRET_KEY


def test_log_records_are_redacted_whatever_the_logger(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    token = "elp_" + "A1b2C3d4" * 5
    caplog.set_level(logging.INFO)
    logging.getLogger("some.library").info("headers={'Authorization': 'Bearer %s'}", token)
    logging.getLogger("gunicorn.access").info('"GET /x?access_token=%s HTTP/1.1" 200', token)
    app.logger.warning("login failed email=a@b.c password=%s", "hunter2-secret")
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        logging.getLogger("x").exception("boom")
    text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert token not in text
    assert "hunter2-secret" not in text
    assert "[REDACTED]" in text


@pytest.mark.slow
def test_no_token_or_password_in_server_logs(
    app: Flask, make: Any, gunicorn: Any, database_url: str
) -> None:
    reader = make.user(role=Role.VIEWER)
    token = make.token(reader)
    server = gunicorn(
        {"DATABASE_URL": database_url, "GUNICORN_ACCESSLOG": "-", "LOG_LEVEL": "DEBUG"},
        workers=1,
        threads=4,
    )
    bogus = "elp_" + "Zz9" * 12
    with httpx.Client(base_url=server.url, timeout=30) as client:
        auth = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/v1/notifications", headers=auth).status_code == 200
        assert client.get("/api/v1/notifications", headers={"Authorization": bogus}).is_error
        # Clients that put the token where it does not belong: the access log has it.
        client.get(f"/api/v1/notifications?access_token={token}", headers=auth)
        client.get(f"/api/v1/notifications/{token}/read", headers=auth)
        client.post(
            "/api/v1/notifications/read", headers=auth, content=b"{not json " + token.encode()
        )
        client.get(f"/login?password={TEST_PASSWORD}&token={token}")
        page = client.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None
        for password in (TEST_PASSWORD, "wrong-" + TEST_PASSWORD):
            client.post(
                "/login",
                data={"email": reader.email, "password": password, "csrf_token": csrf.group(1)},
            )
    server.stop()
    log = server.log()
    assert "GET /api/v1/notifications" in log  # the access log was on
    for secret in (token, token[4:], bogus[4:], TEST_PASSWORD):
        assert secret not in log, f"{secret[:8]}… leaked into the log"
