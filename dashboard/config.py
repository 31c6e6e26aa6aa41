"""Settings read from the environment (SPEC §3), resolved once inside create_app."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_TUNE_CRON = "30 5 * * 1"
DEFAULT_LOOKBACK_DAYS = 30


class ConfigError(RuntimeError):
    """The environment does not describe a runnable app; the message names the variable."""


def sqlite_default_url(instance_path: str) -> str:
    return "sqlite:///" + str(Path(instance_path) / "engagement.db")


def normalise_database_url(url: str) -> str:
    """Accept the common ``postgres://`` / ``postgresql://`` spellings and use psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def from_environment(env: Mapping[str, str], instance_path: str) -> dict[str, Any]:
    """Translate environment variables into Flask config keys."""
    database_url = normalise_database_url(
        env.get("DATABASE_URL") or sqlite_default_url(instance_path)
    )
    return {
        "SECRET_KEY": env.get("SECRET_KEY") or None,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": env.get("REDIS_URL") or DEFAULT_REDIS_URL,
        # Read as a raw string: loops_enabled() is evaluated per request/job so a
        # test or a restarted process honours the current value.
        "LOOPS_ENABLED": env.get("LOOPS_ENABLED", "false"),
        "TUNE_ENGAGEMENT_CRON": env.get("TUNE_ENGAGEMENT_CRON") or DEFAULT_TUNE_CRON,
        "TUNE_LOOKBACK_DAYS": _int(env, "TUNE_LOOKBACK_DAYS", DEFAULT_LOOKBACK_DAYS),
        "TUNE_JOB_TIMEOUT": _int(env, "TUNE_JOB_TIMEOUT", 1800),
        "RQ_QUEUE": env.get("RQ_QUEUE") or "engagement",
        "DB_STATEMENT_TIMEOUT_MS": _int(env, "DB_STATEMENT_TIMEOUT_MS", 30_000),
        "DB_CONNECT_TIMEOUT_S": _int(env, "DB_CONNECT_TIMEOUT_S", 5),
        "MAX_CONTENT_LENGTH": _int(env, "MAX_CONTENT_LENGTH", 1024 * 1024),
    }


def validate(config: Mapping[str, Any]) -> None:
    """Refuse to start in production without the secrets it needs."""
    relaxed = config.get("TESTING") or config.get("DEBUG")
    if not config.get("SECRET_KEY") and not relaxed:
        raise ConfigError(
            "SECRET_KEY is not set: set the SECRET_KEY environment variable "
            "(or FLASK_DEBUG=1 for local development)"
        )


def current_env() -> Mapping[str, str]:
    return os.environ
