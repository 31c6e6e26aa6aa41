"""Configuration from the environment and the refusal to start without SECRET_KEY."""

from __future__ import annotations

import pytest

from dashboard import config, create_app
from dashboard.config import ConfigError
from loops.settings import loops_enabled


@pytest.mark.parametrize(
    ("raw", "enabled"), [("true", True), ("True", False), ("1", False), ("", False), (None, False)]
)
def test_only_exact_true_enables_loops(raw, enabled):
    assert loops_enabled(raw) is enabled


def test_defaults(tmp_path):
    settings = config.from_environment({}, str(tmp_path))
    assert settings["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/engagement.db"
    assert settings["REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert settings["TUNE_ENGAGEMENT_CRON"] == "30 5 * * 1"
    assert settings["TUNE_LOOKBACK_DAYS"] == 30
    assert loops_enabled(settings["LOOPS_ENABLED"]) is False


@pytest.mark.parametrize(
    "url", ["postgres://u@h/db", "postgresql://u@h/db", "postgresql+psycopg://u@h/db"]
)
def test_postgres_urls_use_psycopg3(url):
    assert config.normalise_database_url(url) == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize("raw", ["abc", "0", "-5"])
def test_bad_lookback_names_the_variable(tmp_path, raw):
    with pytest.raises(ConfigError, match="TUNE_LOOKBACK_DAYS"):
        config.from_environment({"TUNE_LOOKBACK_DAYS": raw}, str(tmp_path))


def test_production_refuses_to_start_without_secret_key(monkeypatch, tmp_path):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})


def test_debug_and_testing_run_without_secret_key(monkeypatch, tmp_path):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})
    assert app.config["SECRET_KEY"]
