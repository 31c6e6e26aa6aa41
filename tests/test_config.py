"""Settings: read once at start, typed, validated; one line and exit 1 for a bad value."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dashboard import config, create_app
from dashboard.config import ConfigError
from jobs import settings as job_settings
from loops.database import db, engine_options
from loops.settings import Settings, loops_enabled

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"

# One bad value for every setting that can be wrong, and what the one line says.
BAD_VALUES = {
    "DATABASE_URL": ("not a url", "must be an SQLAlchemy URL"),
    "REDIS_URL": ("http://127.0.0.1:6379", "must start with redis://"),
    "TUNE_ENGAGEMENT_CRON": ("every monday", "must be a cron string"),
    "TUNE_LOOKBACK_DAYS": ("0", "must be at least 1, got '0'"),
    "TUNE_JOB_TIMEOUT": ("1h", "must be a whole number, got '1h'"),
    "TUNE_BATCH_SIZE": ("0", "must be at least 1"),
    "TUNE_BATCH_SIGNALS": ("1e6", "must be a whole number"),
    "TUNE_HEARTBEAT_S": ("ten", "must be a number, got 'ten'"),
    "TUNE_STALE_AFTER_S": ("0", "must be greater than 0"),
    "TUNE_SWEEP_INTERVAL_S": ("nan", "must be a finite number"),
    "ROLLUP_REFRESH_INTERVAL_S": ("5m", "must be a whole number"),
    "TUNE_TEST_DELAY_S": ("-1", "must be at least 0"),
    "DIGEST_TEST_DELAY_S": ("soon", "must be a number, got 'soon'"),
    "POLICY_DIGEST_BELOW": ("1", "must be less than 1"),
    "POLICY_HOLDOUT_PERCENT": ("101", "must be at most 100, got '101'"),
    "DIGEST_HOUR_UTC": ("24", "must be at most 23, got '24'"),
    "SIGNAL_RETENTION_DAYS": ("-1", "must be at least 0"),
    "DB_POOL_SIZE": ("lots", "must be a whole number, got 'lots'"),
    "DB_MAX_OVERFLOW": ("-1", "must be at least 0"),
    "DB_STATEMENT_TIMEOUT_MS": ("30s", "must be a whole number"),
    "DB_CONNECT_TIMEOUT_S": ("0", "must be at least 1"),
    "HEALTHZ_DB_TIMEOUT_S": ("3s", "must be a number"),
    "MAX_CONTENT_LENGTH": ("1MB", "must be a whole number"),
    "SESSION_COOKIE_SECURE": ("maybe", "must be one of true/false/1/0/yes/no/on/off"),
    "MARK_READ_FAST_ROUTE": ("sometimes", "must be one of true/false/1/0/yes/no/on/off"),
    "TRUSTED_PROXY_COUNT": ("one", "must be a whole number, got 'one'"),
    "LOG_LEVEL": ("loud", "must be one of 'DEBUG', 'INFO'"),
    "LOG_FORMAT": ("xml", "must be one of 'text' or 'json', got 'xml'"),
}
# Free text: no value of these can be wrong (LOOPS_ENABLED: anything but "true" is off).
NEVER_WRONG = {"SECRET_KEY", "LOOPS_ENABLED", "RQ_QUEUE", "TUNE_TEST_FAIL_TENANTS", "METRICS_TOKEN"}


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a subprocess: no developer .env, a scratch SQLite file."""
    env = {
        "PATH": os.environ["PATH"],
        "FLASK_SKIP_DOTENV": "1",
        "SECRET_KEY": "k",
        "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
    }
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The process failed the way the app promises: exit 1, one line on stderr, no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting from the test runner's environment."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_every_setting_has_a_bad_value_test() -> None:
    assert set(BAD_VALUES) | NEVER_WRONG == set(Settings.model_fields)


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_value_stops_flask_commands_with_one_line(tmp_path: Path, name: str) -> None:
    value, message = BAD_VALUES[name]
    result = run(
        [str(BIN / "flask"), "--app", "wsgi", "routes"], base_env(tmp_path, **{name: value})
    )
    line = one_error_line(result)
    assert line.startswith(f"error: {name} {message}"), line


def test_a_bad_value_stops_gunicorn_with_one_line(tmp_path: Path) -> None:
    env = base_env(tmp_path, TUNE_HEARTBEAT_S="ten", WEB_CONCURRENCY="1")
    result = run([str(BIN / "gunicorn"), "-b", "127.0.0.1:0", "wsgi:app"], env)
    assert one_error_line(result) == "error: TUNE_HEARTBEAT_S must be a number, got 'ten'"


def test_good_settings_let_flask_commands_run(tmp_path: Path) -> None:
    result = run([str(BIN / "flask"), "--app", "wsgi", "routes"], base_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "/api/v1/notifications" in result.stdout


def test_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})
    assert isinstance(app.extensions["settings"], Settings)
    expected = {
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "TUNE_ENGAGEMENT_CRON": "30 5 * * 1",
        "TUNE_LOOKBACK_DAYS": 30,
        "POLICY_DIGEST_BELOW": 0.2,
        "POLICY_HOLDOUT_PERCENT": 10,
        "DIGEST_HOUR_UTC": 9,
        "SIGNAL_RETENTION_DAYS": 400,
        "METRICS_TOKEN": None,
        "TRUSTED_PROXY_COUNT": 0,
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "INFO",
        "TUNE_HEARTBEAT_S": 10.0,
        "DB_POOL_SIZE": 10,
        "DB_MAX_OVERFLOW": 20,
        "SESSION_COOKIE_SECURE": False,
    }
    assert {key: app.config[key] for key in expected} == expected
    assert loops_enabled(app.config["LOOPS_ENABLED"]) is False
    assert config.flask_config(Settings(), str(tmp_path))["SQLALCHEMY_DATABASE_URI"] == (
        f"sqlite:///{tmp_path}/engagement.db"
    )


def test_values_reach_app_config_typed(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "POLICY_DIGEST_BELOW": "0.35",
        "POLICY_HOLDOUT_PERCENT": "0",
        "DIGEST_HOUR_UTC": "23",
        "SIGNAL_RETENTION_DAYS": "0",
        "METRICS_TOKEN": "scrape-me",
        "TRUSTED_PROXY_COUNT": "2",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "debug",
        "TUNE_HEARTBEAT_S": "0.5",
        "TUNE_BATCH_SIZE": "7",
        "TUNE_BATCH_SIGNALS": "1000000",
    }.items():
        clean_env.setenv(name, value)
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})
    got = {
        key: app.config[key]
        for key in (
            "POLICY_DIGEST_BELOW",
            "POLICY_HOLDOUT_PERCENT",
            "DIGEST_HOUR_UTC",
            "SIGNAL_RETENTION_DAYS",
            "METRICS_TOKEN",
            "TRUSTED_PROXY_COUNT",
            "LOG_FORMAT",
            "LOG_LEVEL",
        )
    }
    assert got == {
        "POLICY_DIGEST_BELOW": 0.35,
        "POLICY_HOLDOUT_PERCENT": 0,
        "DIGEST_HOUR_UTC": 23,
        "SIGNAL_RETENTION_DAYS": 0,
        "METRICS_TOKEN": "scrape-me",
        "TRUSTED_PROXY_COUNT": 2,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
    }
    with app.app_context():
        # The jobs read what start-up read; nothing is parsed at job time.
        assert job_settings.heartbeat_s() == 0.5
        assert job_settings.batch_size() == 7
        assert job_settings.batch_signals() == 1_000_000


def test_create_app_config_overrides_the_environment_and_is_validated_too(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("TUNE_LOOKBACK_DAYS", "14")
    base = {"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"}
    app = create_app({**base, "TUNE_LOOKBACK_DAYS": 7, "TUNE_TEST_DELAY_S": "0.25"})
    assert app.config["TUNE_LOOKBACK_DAYS"] == 7
    assert app.config["TUNE_TEST_DELAY_S"] == 0.25
    assert app.extensions["settings"].TUNE_LOOKBACK_DAYS == 7
    with pytest.raises(ConfigError, match=r"^DIGEST_HOUR_UTC must be at most 23, got 30$"):
        create_app({**base, "DIGEST_HOUR_UTC": 30})


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        *[(raw, True) for raw in ("true", "TRUE", "1", "yes", "Yes", "on", "ON")],
        *[(raw, False) for raw in ("false", "False", "0", "no", "NO", "off", "Off")],
    ],
)
def test_booleans_are_read_one_way(clean_env: pytest.MonkeyPatch, raw: str, value: bool) -> None:
    clean_env.setenv("SESSION_COOKIE_SECURE", raw)
    assert Settings.load().SESSION_COOKIE_SECURE is value


@pytest.mark.parametrize("raw", ["t", "y", "2", "enabled", "nope"])
def test_other_booleans_are_refused(clean_env: pytest.MonkeyPatch, raw: str) -> None:
    clean_env.setenv("SESSION_COOKIE_SECURE", raw)
    with pytest.raises(ConfigError, match=r"^SESSION_COOKIE_SECURE must be one of"):
        Settings.load()


@pytest.mark.parametrize(("raw", "enabled"), [("true", True), ("True", False), ("1", False)])
def test_loops_enabled_keeps_its_rule_and_is_never_an_error(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, raw: str, enabled: bool
) -> None:
    clean_env.setenv("LOOPS_ENABLED", raw)
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})
    assert loops_enabled(app.config["LOOPS_ENABLED"]) is enabled


def test_only_exact_true_enables_loops() -> None:
    assert [loops_enabled(v) for v in ("true", "True", "1", "", None)] == [True] + [False] * 4


@pytest.mark.parametrize(
    "url", ["postgres://u@h/db", "postgresql://u@h/db", "postgresql+psycopg://u@h/db"]
)
def test_postgres_urls_use_psycopg3(url: str) -> None:
    assert config.normalise_database_url(url) == "postgresql+psycopg://u@h/db"
    assert Settings.load({"DATABASE_URL": url}).DATABASE_URL == "postgresql+psycopg://u@h/db"


def test_session_cookie_secure_on_marks_the_cookies_secure(
    clean_env: pytest.MonkeyPatch, app_config: dict[str, Any]
) -> None:
    clean_env.setenv("SESSION_COOKIE_SECURE", "on")
    app = create_app(app_config)
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["REMEMBER_COOKIE_SECURE"] is True
    with app.app_context():
        page = app.test_client().get("/login")  # plain http: the flag alone says Secure
        cookies = page.headers.getlist("Set-Cookie")
        assert cookies and all("; Secure" in cookie for cookie in cookies), cookies
        db.engine.dispose()


def test_db_pool_settings_reach_the_engine_options(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DB_POOL_SIZE", "3")
    clean_env.setenv("DB_MAX_OVERFLOW", "4")
    clean_env.setenv("DB_STATEMENT_TIMEOUT_MS", "1500")
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    options = engine_options("postgresql+psycopg://u@h/db", app.config)
    assert (options["pool_size"], options["max_overflow"]) == (3, 4)
    assert "statement_timeout=1500" in options["connect_args"]["options"]


@pytest.mark.postgres_only
def test_db_pool_size_reaches_both_postgres_pools(
    clean_env: pytest.MonkeyPatch, app_config: dict[str, Any]
) -> None:
    from loops import read_fastpath

    clean_env.setenv("DB_POOL_SIZE", "3")
    clean_env.setenv("DB_MAX_OVERFLOW", "4")
    app = create_app(app_config)
    with app.app_context():
        fast = read_fastpath._engine()
        for engine in (db.engine, fast):
            assert engine.pool.size() == 3  # type: ignore[attr-defined]
            assert engine.pool._max_overflow == 4  # type: ignore[attr-defined]
        fast.dispose()
        db.engine.dispose()


# --- .env -------------------------------------------------------------------


@pytest.fixture
def in_dotenv_dir(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The working directory is a scratch folder whose .env counts (FLASK_SKIP_DOTENV unset)."""
    clean_env.delenv("FLASK_SKIP_DOTENV", raising=False)
    clean_env.chdir(tmp_path)
    return tmp_path


def test_create_app_reads_dotenv_and_the_environment_wins(
    in_dotenv_dir: Path, clean_env: pytest.MonkeyPatch
) -> None:
    (in_dotenv_dir / ".env").write_text(
        "# local\nSECRET_KEY=from-dotenv\nDIGEST_HOUR_UTC=5\nTUNE_LOOKBACK_DAYS=7\nFLASK_APP=wsgi\n"
    )
    clean_env.setenv("TUNE_LOOKBACK_DAYS", "14")
    # No TESTING, no debug: production rules, as under gunicorn.
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{in_dotenv_dir}/x.db"})
    assert app.config["SECRET_KEY"] == "from-dotenv"
    assert app.config["DIGEST_HOUR_UTC"] == 5
    assert app.config["TUNE_LOOKBACK_DAYS"] == 14


def test_a_bad_value_in_dotenv_is_refused_too(in_dotenv_dir: Path) -> None:
    (in_dotenv_dir / ".env").write_text("SECRET_KEY=k\nPOLICY_HOLDOUT_PERCENT=ten\n")
    with pytest.raises(ConfigError, match=r"^POLICY_HOLDOUT_PERCENT must be a whole number"):
        config.check_environment()


def test_flask_skip_dotenv_skips_it(in_dotenv_dir: Path, clean_env: pytest.MonkeyPatch) -> None:
    (in_dotenv_dir / ".env").write_text("SECRET_KEY=from-dotenv\n")
    assert config.check_environment().SECRET_KEY == "from-dotenv"
    clean_env.setenv("FLASK_SKIP_DOTENV", "1")
    with pytest.raises(ConfigError, match="SECRET_KEY is not set"):
        config.check_environment()


def test_a_flask_command_in_a_folder_with_dotenv_runs_without_any_setting(
    tmp_path: Path,
) -> None:
    """What a newcomer types in a second shell after `make run` wrote .env."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    command = [str(BIN / "flask"), "routes"]  # no --app: FLASK_APP comes from .env
    assert "SECRET_KEY is not set" in one_error_line(run(command, env, cwd=tmp_path))
    (tmp_path / ".env").write_text(
        f"FLASK_APP=wsgi\nSECRET_KEY=generated\nDATABASE_URL=sqlite:///{tmp_path}/x.db\n"
    )
    result = run(command, env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "/api/v1/notifications" in result.stdout
