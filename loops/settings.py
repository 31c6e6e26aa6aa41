"""The loop's switch: only the exact string ``true`` enables signal emission and tuning."""

from __future__ import annotations


def loops_enabled(value: str | None) -> bool:
    """True only for the exact string ``true``; ``True``, ``1`` or unset all mean off."""
    return value == "true"
