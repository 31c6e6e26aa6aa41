"""Calibrations: their keys and reading them (the read contract of the seed's getCalibration)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from loops.database import db
from loops.models import Calibration
from loops.stats import wilson_interval
from loops.timeutil import iso

# A calibration's key is its family's prefix and the feature: engagement-rate:mention.
RATE_PREFIX = "engagement-rate:"
RATIO_PREFIX = "engagement-ratio:"
_FAMILIES = {RATE_PREFIX: "rate", RATIO_PREFIX: "ratio"}


def split_key(key: str) -> tuple[str, str]:
    """``engagement-rate:mention`` → ("rate", "mention"); unknown keys → ("other", key)."""
    for prefix, family in _FAMILIES.items():
        if key.startswith(prefix):
            return family, key[len(prefix) :]
    return "other", key


def get_calibration(org_id: int, key: str) -> Calibration | None:
    return db.session.execute(
        select(Calibration).where(Calibration.org_id == org_id, Calibration.key == key)
    ).scalar_one_or_none()


def read_payload(org_id: int, key: str) -> dict[str, Any]:
    """Cold start (no row yet) reads as ``value: null`` so consumers fall back to defaults."""
    row = get_calibration(org_id, key)
    if row is None:
        payload: dict[str, Any] = {
            "key": key,
            "value": None,
            "sample_size": 0,
            "computed_at": None,
        }
    else:
        payload = {
            "key": key,
            "value": row.value,
            "sample_size": row.sample_size,
            "window_days": row.window_days,
            "computed_at": iso(row.computed_at),
        }
    if key.startswith(RATIO_PREFIX):
        payload |= ratio_uncertainty(row)
    return payload


def ratio_uncertainty(row: Calibration | None) -> dict[str, Any]:
    """A ratio's numerator, 95% Wilson interval and shrunk estimate (cold start: none yet)."""
    if row is None or row.sample_size == 0:
        return {"engaged": 0, "interval": [0.0, 1.0], "estimate": None}
    engaged = row.engaged if row.engaged is not None else round(row.value * row.sample_size)
    if row.interval_low is not None and row.interval_high is not None:
        interval = [row.interval_low, row.interval_high]
    else:
        # Written before intervals were stored: the same formula, from the same counts.
        interval = list(wilson_interval(engaged, row.sample_size))
    return {"engaged": engaged, "interval": interval, "estimate": row.estimate}
