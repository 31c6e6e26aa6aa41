"""UTC time: one clock, and a column type that always hands back aware datetimes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["UTC", "UTCDateTime", "as_utc", "iso", "parse_iso8601", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken to be UTC; aware ones are converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_iso8601(text: str) -> datetime:
    """Parse an ISO 8601 timestamp (``Z`` allowed); naive input is UTC."""
    return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` suffix, as the API returns timestamps."""
    if value is None:
        return None
    return as_utc(value).isoformat().replace("+00:00", "Z")


class UTCDateTime(TypeDecorator[datetime]):
    """timestamptz on PostgreSQL; naive-UTC text on SQLite. Always aware UTC in Python."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = as_utc(value)
        if dialect.name == "sqlite":
            # SQLite compares timestamps as text: store one canonical naive UTC form.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)
