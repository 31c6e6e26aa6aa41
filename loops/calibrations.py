"""Reading calibrations: the read-site contract of the seed's getCalibration."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from loops.database import db
from loops.models import Calibration, Organization
from loops.timeutil import iso


def get_organization(slug: str) -> Organization | None:
    return db.session.execute(
        select(Organization).where(Organization.slug == slug)
    ).scalar_one_or_none()


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
