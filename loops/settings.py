"""The app's settings: one typed object, read and validated once at start from the environment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import crontab
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError


class ConfigError(RuntimeError):
    """The environment does not describe a runnable app; the message names the variable."""


def loops_enabled(value: str | None) -> bool:
    """True only for the exact string ``true``; ``True``, ``1`` or unset all mean off."""
    return value == "true"


# Abandoned-run detection. A running job writes heartbeat_at every TUNE_HEARTBEAT_S;
# a run whose heartbeat is older than TUNE_STALE_AFTER_S is swept to failed by the next
# sweep (every worker every TUNE_SWEEP_INTERVAL_S, the scheduler every loop, every
# status poll). After a SIGKILL the last heartbeat is at most the heartbeat interval
# old, it turns stale the stale-after time after it was written, and a sweep follows
# within the sweep interval: with the defaults the run is failed at most 60 + 15 = 75 s
# after the kill.
DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_STALE_AFTER_S = 60.0
DEFAULT_SWEEP_INTERVAL_S = 15.0
# "Run now — all tenants" fans out one RQ job per this many tenants (status stays
# per tenant). Fewer, larger jobs cut per-job queue overhead at 1,000 tenants.
DEFAULT_BATCH_SIZE = 50
# ... and no job holds more than about this many signals of the window (a larger tenant
# is a job alone), jobs enqueued heaviest first, so one job of the largest tenants does
# not set the run's wall time (jobs/job_plan.py).
DEFAULT_BATCH_SIGNALS = 250_000
DEFAULT_ROLLUP_REFRESH_INTERVAL_S = 300
# The delivery policy: digest below this engagement ratio, hold out this share of
# users, deliver digests at this hour (UTC).
DEFAULT_POLICY_DIGEST_BELOW = 0.2
DEFAULT_POLICY_HOLDOUT_PERCENT = 10
DEFAULT_DIGEST_HOUR_UTC = 9

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def parse_bool(value: object) -> bool:
    """The one reading of a boolean setting: true/false, 1/0, yes/no, on/off, any case."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise PydanticCustomError("boolean", "must be one of true/false/1/0/yes/no/on/off")


def normalise_database_url(url: str) -> str:
    """Accept the common ``postgres://`` / ``postgresql://`` spellings and use psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _database_url(url: str | None) -> str | None:
    if url is None:
        return None
    url = normalise_database_url(url)
    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        raise PydanticCustomError(
            "database_url", "must be an SQLAlchemy URL such as postgresql+psycopg://user@host/db"
        ) from None
    return url


def _redis_url(url: str) -> str:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise PydanticCustomError("redis_url", "must start with redis://, rediss:// or unix://")
    return url


def _cron(cron: str) -> str:
    # The same parser rq-scheduler and jobs.schedule use, so what passes here runs there.
    try:
        tab = crontab.CronTab(cron)
    except ValueError:
        raise PydanticCustomError(
            "cron", "must be a cron string (minute hour day-of-month month day-of-week)"
        ) from None
    if tab.next(default_utc=True) is None:
        raise PydanticCustomError("cron", "never fires")
    return cron


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


Bool = Annotated[bool, BeforeValidator(parse_bool)]
PositiveSeconds = Annotated[float, Field(gt=0)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Settings(BaseSettings):
    """Every setting the app, its jobs and its commands read, under its environment name."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        # A .env file holds other tools' variables too (FLASK_APP, PORT…).
        extra="ignore",
        # VAR= (set but empty) means "use the default", as an unset variable does.
        env_ignore_empty=True,
        allow_inf_nan=False,
        frozen=True,
    )

    DATABASE_URL: Annotated[str | None, AfterValidator(_database_url)] = None
    REDIS_URL: Annotated[str, AfterValidator(_redis_url)] = "redis://127.0.0.1:6379/0"
    SECRET_KEY: str | None = None
    # A raw string on purpose: only the exact string "true" enables (loops_enabled()),
    # anything else disables and is never an error.
    LOOPS_ENABLED: str = "false"

    TUNE_ENGAGEMENT_CRON: Annotated[str, AfterValidator(_cron)] = "30 5 * * 1"
    TUNE_LOOKBACK_DAYS: int = Field(default=30, ge=1)
    TUNE_JOB_TIMEOUT: int = Field(default=1800, ge=1)
    RQ_QUEUE: str = Field(default="engagement", min_length=1)
    TUNE_BATCH_SIZE: int = Field(default=DEFAULT_BATCH_SIZE, ge=1)
    TUNE_BATCH_SIGNALS: int = Field(default=DEFAULT_BATCH_SIGNALS, ge=1)
    TUNE_HEARTBEAT_S: PositiveSeconds = DEFAULT_HEARTBEAT_S
    TUNE_STALE_AFTER_S: PositiveSeconds = DEFAULT_STALE_AFTER_S
    TUNE_SWEEP_INTERVAL_S: PositiveSeconds = DEFAULT_SWEEP_INTERVAL_S
    ROLLUP_REFRESH_INTERVAL_S: int = Field(default=DEFAULT_ROLLUP_REFRESH_INTERVAL_S, ge=1)
    # TEST-ONLY: each tenant's tuning sleeps this long half-way through its writes, and
    # the tuning of these tenants (comma-separated slugs) raises.
    TUNE_TEST_DELAY_S: float = Field(default=0.0, ge=0)
    TUNE_TEST_FAIL_TENANTS: str = ""
    # TEST-ONLY: each digest sleeps this long with its items claimed but not committed.
    DIGEST_TEST_DELAY_S: float = Field(default=0.0, ge=0)

    POLICY_DIGEST_BELOW: float = Field(default=DEFAULT_POLICY_DIGEST_BELOW, gt=0, lt=1)
    POLICY_HOLDOUT_PERCENT: int = Field(default=DEFAULT_POLICY_HOLDOUT_PERCENT, ge=0, le=100)
    DIGEST_HOUR_UTC: int = Field(default=DEFAULT_DIGEST_HOUR_UTC, ge=0, le=23)
    SIGNAL_RETENTION_DAYS: int = Field(default=400, ge=0)  # 0 keeps signals forever

    DB_POOL_SIZE: int = Field(default=10, ge=1)
    DB_MAX_OVERFLOW: int = Field(default=20, ge=0)
    DB_STATEMENT_TIMEOUT_MS: int = Field(default=30_000, ge=0)  # 0: no limit
    DB_CONNECT_TIMEOUT_S: int = Field(default=5, ge=1)
    HEALTHZ_DB_TIMEOUT_S: PositiveSeconds = 3.0

    MAX_CONTENT_LENGTH: int = Field(default=1024 * 1024, ge=1)
    # PostgreSQL: plain mark-read requests answered by a WSGI route in front of Flask.
    MARK_READ_FAST_ROUTE: Bool = True
    SESSION_COOKIE_SECURE: Bool = False
    METRICS_TOKEN: str | None = None
    TRUSTED_PROXY_COUNT: int = Field(default=0, ge=0)
    LOG_LEVEL: Annotated[LogLevel, BeforeValidator(_upper)] = "INFO"
    LOG_FORMAT: Literal["text", "json"] = "text"

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, env_files: Sequence[Path] = ()
    ) -> Settings:
        """Read the environment over ``env_files`` (later files win), ``overrides`` over both.

        Raises ConfigError with one line naming each bad variable.
        """
        arguments: dict[str, Any] = {**(overrides or {}), "_env_file": tuple(env_files) or None}
        try:
            return cls(**arguments)
        except ValidationError as exc:
            raise ConfigError(describe(exc)) from None


_MESSAGES = {
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "literal_error": "must be one of {expected}",
    "string_too_short": "must not be empty",
    "string_type": "must be a string",
}


# URLs may carry a password: an error about them never repeats the value.
_UNECHOED = frozenset({"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "METRICS_TOKEN"})


def describe(exc: ValidationError) -> str:
    """One line for all of a validation's errors: ``NAME must be …, got 'value'``."""
    parts = []
    for error in exc.errors(include_url=False):
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        template = _MESSAGES.get(error["type"])
        what = template.format(**error.get("ctx", {})) if template else error["msg"]
        got = "" if name in _UNECHOED else f", got {error['input']!r}"
        parts.append(f"{name} {what}{got}")
    return "; ".join(parts)
