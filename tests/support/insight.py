"""Helpers for the insight tests: history rows written as a tune run would write them."""

from __future__ import annotations

from datetime import datetime

from loops.database import db
from loops.models import CalibrationHistory, Organization
from loops.stats import wilson_interval


def add_history(
    org: Organization, key: str, value: float, when: datetime, **kw: object
) -> CalibrationHistory:
    """One history row; a ratio given ``engaged`` and ``sample_size`` gets its Wilson interval."""
    n = int(kw.pop("sample_size", 64))  # type: ignore[call-overload]
    engaged = kw.pop("engaged", None)
    if engaged is not None and "interval_low" not in kw:
        kw["interval_low"], kw["interval_high"] = wilson_interval(int(engaged), n)  # type: ignore[call-overload]
    row = CalibrationHistory(
        org_id=org.id,
        key=key,
        value=value,
        sample_size=n,
        window_days=kw.pop("window_days", 30),
        engaged=engaged,
        computed_at=when,
        **kw,
    )
    db.session.add(row)
    db.session.commit()
    return row
