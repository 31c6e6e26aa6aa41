"""Settings in Flask: read once in create_app (environment over `.env`), put in app.config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dotenv
from flask.helpers import get_debug_flag, get_load_dotenv

from loops.settings import ConfigError, Settings, normalise_database_url

__all__ = [
    "ConfigError",
    "Settings",
    "check_environment",
    "dotenv_files",
    "flask_config",
    "normalise_database_url",
    "read_settings",
    "require_secret_key",
    "sqlite_default_url",
]

# Settings whose app.config key is a library's own name rather than the variable's.
_CONFIG_KEYS = {"DATABASE_URL": "SQLALCHEMY_DATABASE_URI"}


def sqlite_default_url(instance_path: str) -> str:
    return "sqlite:///" + str(Path(instance_path) / "engagement.db")


def dotenv_files() -> tuple[Path, ...]:
    """The files the ``flask`` command loads, found as it finds them; ``.env`` wins.

    ``FLASK_SKIP_DOTENV=1`` skips them, as it does for the ``flask`` command. Under
    that command the values are already in the environment; under gunicorn this is
    what reads them.
    """
    if not get_load_dotenv():
        return ()
    found = (dotenv.find_dotenv(name, usecwd=True) for name in (".flaskenv", ".env"))
    return tuple(Path(path) for path in found if path)


def read_settings(config: Mapping[str, Any] | None = None) -> Settings:
    """The environment over the dotenv files; entries of ``config`` (app.config keys) win."""
    by_key = {_CONFIG_KEYS.get(name, name): name for name in Settings.model_fields}
    overrides = {by_key[key]: value for key, value in (config or {}).items() if key in by_key}
    return Settings.load(overrides, dotenv_files())


def require_secret_key(settings: Settings, relaxed: bool) -> None:
    """Refuse to start in production without a secret to sign sessions with.

    ``relaxed``: testing, or Flask's debug mode (``FLASK_DEBUG``, read by Flask itself).
    """
    if not settings.SECRET_KEY and not relaxed:
        raise ConfigError(
            "SECRET_KEY is not set: set the SECRET_KEY environment variable (or put it "
            "in .env), or FLASK_DEBUG=1 for local development"
        )


def flask_config(settings: Settings, instance_path: str) -> dict[str, Any]:
    """app.config entries: each setting under its variable's name, typed."""
    values = settings.model_dump()
    url = values.pop("DATABASE_URL") or sqlite_default_url(instance_path)
    values[_CONFIG_KEYS["DATABASE_URL"]] = url
    return values


def check_environment() -> Settings:
    """The checks create_app makes, for a process that starts the app later (gunicorn)."""
    settings = read_settings()
    require_secret_key(settings, relaxed=get_debug_flag())
    return settings
