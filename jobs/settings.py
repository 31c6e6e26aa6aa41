"""Tune-job settings: the app's config first, then the environment, then a default."""

from __future__ import annotations

import os

from flask import current_app

from jobs import constants, rollup_refresh


def _number(name: str, default: float) -> float:
    raw = current_app.config.get(name)
    if raw is None or raw == "":
        raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return float(raw)


def heartbeat_s() -> float:
    return _number("TUNE_HEARTBEAT_S", constants.DEFAULT_HEARTBEAT_S)


def stale_after_s() -> float:
    """How old a run's heartbeat may get before the run counts as abandoned."""
    return _number("TUNE_STALE_AFTER_S", constants.DEFAULT_STALE_AFTER_S)


def sweep_interval_s() -> float:
    return _number("TUNE_SWEEP_INTERVAL_S", constants.DEFAULT_SWEEP_INTERVAL_S)


def batch_size() -> int:
    return max(1, int(_number("TUNE_BATCH_SIZE", constants.DEFAULT_BATCH_SIZE)))


def lookback_days() -> int:
    return int(current_app.config.get("TUNE_LOOKBACK_DAYS", 30))


def job_timeout_s() -> int:
    return int(current_app.config.get("TUNE_JOB_TIMEOUT", 1800))


def queue_name() -> str:
    return str(current_app.config.get("RQ_QUEUE", "engagement"))


def cron() -> str:
    return str(current_app.config.get("TUNE_ENGAGEMENT_CRON", "30 5 * * 1"))


def test_delay_s() -> float:
    """TEST-ONLY: seconds each tenant's tuning sleeps half-way through its writes."""
    return _number("TUNE_TEST_DELAY_S", 0.0)


def test_fail_tenants() -> frozenset[str]:
    """TEST-ONLY: tenant slugs whose tuning raises (comma-separated)."""
    raw = current_app.config.get("TUNE_TEST_FAIL_TENANTS") or os.environ.get(
        "TUNE_TEST_FAIL_TENANTS", ""
    )
    return frozenset(s.strip() for s in str(raw).split(",") if s.strip())


def rollup_refresh_interval_s() -> int:
    return int(_number("ROLLUP_REFRESH_INTERVAL_S", rollup_refresh.DEFAULT_INTERVAL_S))
