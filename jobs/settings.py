"""Tune-job settings: the typed values create_app read at start, looked up in the app's config."""

from __future__ import annotations

from flask import current_app

# Each value was read and validated once, at start (loops.settings.Settings); nothing
# here parses, so a bad value can never first fail inside a job.


def heartbeat_s() -> float:
    return current_app.config["TUNE_HEARTBEAT_S"]


def stale_after_s() -> float:
    """How old a run's heartbeat may get before the run counts as abandoned."""
    return current_app.config["TUNE_STALE_AFTER_S"]


def sweep_interval_s() -> float:
    return current_app.config["TUNE_SWEEP_INTERVAL_S"]


def batch_size() -> int:
    return current_app.config["TUNE_BATCH_SIZE"]


def batch_signals() -> int:
    """At most about this many window signals per RQ job (last run's counts)."""
    return current_app.config["TUNE_BATCH_SIGNALS"]


def lookback_days() -> int:
    return current_app.config["TUNE_LOOKBACK_DAYS"]


def job_timeout_s() -> int:
    return current_app.config["TUNE_JOB_TIMEOUT"]


def queue_name() -> str:
    return current_app.config["RQ_QUEUE"]


def cron() -> str:
    return current_app.config["TUNE_ENGAGEMENT_CRON"]


def test_delay_s() -> float:
    """TEST-ONLY: seconds a tune transaction sleeps with its writes made, before committing."""
    return current_app.config["TUNE_TEST_DELAY_S"]


def test_fail_tenants() -> frozenset[str]:
    """TEST-ONLY: tenant slugs whose tuning raises (comma-separated)."""
    raw: str = current_app.config["TUNE_TEST_FAIL_TENANTS"]
    return frozenset(s.strip() for s in raw.split(",") if s.strip())


def rollup_refresh_interval_s() -> int:
    return current_app.config["ROLLUP_REFRESH_INTERVAL_S"]
