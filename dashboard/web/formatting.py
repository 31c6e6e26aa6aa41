"""How numbers, times and run states read on the dashboard: pure formatting helpers."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from loops.models import RunState
from loops.timeutil import as_utc

# One place mapping run states to what people read (STYLE: states mapped to labels once).
STATE_LABELS: dict[str, str] = {
    RunState.QUEUED.value: "queued",
    RunState.RUNNING.value: "running",
    RunState.SUCCEEDED.value: "succeeded",
    RunState.FAILED.value: "failed",
    RunState.SKIPPED.value: "skipped",
}


def state_label(state: str | None) -> str:
    return STATE_LABELS.get(state or "", state or "never run")


def format_value(kind: str, value: float | None) -> str:
    """A rate as signals/day, a ratio as a percentage."""
    if value is None:
        return "—"
    if kind == "rate":
        return f"{value:,.2f}/day"
    if kind == "ratio":
        return f"{value * 100:.1f}%"
    return f"{value:,.4g}"


def format_range(kind: str, low: float, high: float) -> str:
    """An interval in the value's unit, its two ends joined by an en dash (as ratio ranges are)."""
    if kind == "ratio":
        return f"{low * 100:.1f}%\u2013{high * 100:.1f}%"
    if kind == "rate":
        return f"{low:,.2f}\u2013{high:,.2f}/day"
    return f"{low:,.4g}\u2013{high:,.4g}"


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """ "1 user", "41 users", "1,204 deliveries" (thousands separated)."""
    word = noun if count == 1 else (plural_noun or f"{noun}s")
    return f"{count:,} {word}"


def csv_cell(value: object) -> str:
    """A CSV cell that a spreadsheet will never run as a formula."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text):
        return "'" + text
    return text


def csv_text(columns: Sequence[str], rows: Iterable[Iterable[object]]) -> str:
    """A CSV download: the header, then each row's cells made safe by csv_cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([csv_cell(v) for v in row] for row in rows)
    return out.getvalue()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def unit_of(kind: str) -> str:
    return {"rate": "signals/day", "ratio": "ratio"}.get(kind, "")


def change_pct(value: float | None, previous: float | None) -> float | None:
    """Relative change in %, None when there is nothing (or zero) to compare with."""
    if value is None or previous is None or previous == 0:
        return None
    return (value - previous) / abs(previous) * 100.0


def format_change(pct: float | None) -> str:
    if pct is None:
        return ""
    if abs(pct) < 0.05:
        return "±0%"
    return f"{pct:+.0f}%" if abs(pct) >= 10 else f"{pct:+.1f}%"


def ago(moment: datetime | None, now: datetime) -> str:
    """ "just now", "5 minutes ago", "3 days ago" …; future times read "in …"."""
    if moment is None:
        return "never"
    delta = as_utc(now) - as_utc(moment)
    future = delta.total_seconds() < 0
    seconds = abs(int(delta.total_seconds()))
    if seconds < 45:
        return "just now" if not future else "in a moment"
    for size, unit in ((86_400 * 7, "week"), (86_400, "day"), (3_600, "hour"), (60, "minute")):
        if seconds >= size or unit == "minute":
            count = max(1, round(seconds / size)) if unit != "week" else seconds // size
            if unit == "week" and count < 2:
                continue
            text = f"{count} {unit}{'s' if count != 1 else ''}"
            return f"in {text}" if future else f"{text} ago"
    return "just now"  # pragma: no cover


def duration(start: datetime | None, end: datetime | None) -> str:
    """ "183 ms", "4.2 s", "3 min 5 s"; empty when the run has not finished."""
    if start is None or end is None:
        return ""
    return format_timedelta(as_utc(end) - as_utc(start))


def format_timedelta(delta: timedelta) -> str:
    seconds = max(delta.total_seconds(), 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def utc_text(moment: datetime | None) -> str:
    """ "2026-11-30 05:30 UTC"."""
    if moment is None:
        return ""
    return as_utc(moment).strftime("%Y-%m-%d %H:%M UTC")


def weekday_text(moment: datetime | None) -> str:
    """ "Mon 30 Nov, 05:30 UTC"."""
    if moment is None:
        return ""
    return as_utc(moment).strftime("%a %-d %b, %H:%M UTC")


_DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_DAY_ABBREVIATIONS = {name[:3].lower(): i for i, name in enumerate(_DAY_NAMES)}


def _weekday(field: str) -> str | None:
    """A cron day-of-week (0-7, 0 and 7 both Sunday, or mon…sun) as its name."""
    text = field.strip().lower()
    if text.isdigit() and int(text) <= 7:
        return _DAY_NAMES[int(text) % 7]
    index = _DAY_ABBREVIATIONS.get(text)
    return None if index is None else _DAY_NAMES[index]


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def cron_text(cron: str) -> str:
    """When a cron string (read as UTC) fires, in words: "every Monday at 05:30 UTC".

    The common shapes (a fixed time, daily or on listed weekdays) read as words;
    anything else is shown as configured.
    """
    fields = cron.split()
    if len(fields) == 5:
        minute, hour, day, month, weekdays = fields
        fixed = minute.isdigit() and hour.isdigit() and int(minute) < 60 and int(hour) < 24
        if fixed and (day, month) == ("*", "*"):
            at = f"{int(hour):02d}:{int(minute):02d} UTC"
            if weekdays == "*":
                return f"every day at {at}"
            names = [_weekday(part) for part in weekdays.split(",")]
            if all(names):
                return f"every {_and(list(dict.fromkeys(n for n in names if n)))} at {at}"
    return f"on the cron schedule {' '.join(fields)} (UTC)"
