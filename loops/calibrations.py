"""Calibrations: their keys and reading them (the read contract of the seed's getCalibration)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from loops.database import db
from loops.models import Calibration
from loops.timeutil import iso

# A calibration's key is its family's prefix and the feature: engagement-rate:mention.
RATE_PREFIX = "engagement-rate:"
RATIO_PREFIX = "engagement-ratio:"
_FAMILIES = {RATE_PREFIX: "rate", RATIO_PREFIX: "ratio"}


def rate_key(feature: str) -> str:
    """ENGAGE signals per day of the feature's notifications."""
    return f"{RATE_PREFIX}{feature}"


def ratio_key(feature: str) -> str:
    """The fraction of the feature's delivered notifications that were first-read."""
    return f"{RATIO_PREFIX}{feature}"


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
        return {"key": key, "value": None, "sample_size": 0, "computed_at": None}
    return {
        "key": key,
        "value": row.value,
        "sample_size": row.sample_size,
        "window_days": row.window_days,
        "computed_at": iso(row.computed_at),
    }
