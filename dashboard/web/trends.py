"""A tenant's calibration history read model: each feature's ratio and rate over the last weeks."""

# One indexed range read of loop_calibration_history (org_id, key, computed_at) per page:
# a year of weekly runs is about 16 keys x 52 rows for the largest tenant.

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from dashboard.extensions import db
from dashboard.web import formatting
from dashboard.web.charts import (
    ENGAGE_COLOR,
    RATE_COLOR,
    TrendChart,
    TrendPoint,
    merge_extents,
    time_domain,
    trend_chart,
    trend_extent,
)
from loops.calibrations import split_key
from loops.models import CalibrationHistory
from loops.significance import Change, calibration_change, rate_interval, ratio_interval
from loops.timeutil import as_utc, iso

TREND_RANGES = (12, 26, 52)
DEFAULT_WEEKS = 26
RATIO_LABEL = "engagement ratio"
RATE_LABEL = "ENGAGE / day"


def parse_weeks(raw: str | None) -> int:
    try:
        weeks = int(raw or DEFAULT_WEEKS)
    except ValueError:
        return DEFAULT_WEEKS
    return weeks if weeks in TREND_RANGES else DEFAULT_WEEKS


@dataclass(frozen=True)
class HistoryEntry:
    """One value a run wrote, with its interval and how it changed from the run before."""

    org_id: int
    key: str
    kind: str
    feature: str
    value: float
    sample_size: int
    window_days: int | None
    engaged: int | None
    interval: tuple[float, float] | None
    estimate: float | None
    run_id: int | None
    computed_at: datetime
    previous: float | None
    change: Change | None
    mode: str | None = None
    mode_reason: str | None = None
    mode_changed: bool | None = None

    @property
    def display(self) -> str:
        return formatting.format_value(self.kind, self.value)

    @property
    def previous_display(self) -> str:
        return "" if self.previous is None else formatting.format_value(self.kind, self.previous)

    @property
    def interval_text(self) -> str:
        if self.interval is None:
            return ""
        low, high = self.interval
        return formatting.format_range(self.kind, low, high)

    @property
    def change_text(self) -> str:
        return formatting.format_change(formatting.change_pct(self.value, self.previous))

    @property
    def readout(self) -> str:
        """The hover text of this run's point."""
        day = as_utc(self.computed_at).strftime("%a %-d %b")
        parts = [day, self.display]
        if self.interval is not None:
            parts[-1] += f" [{self.interval_text}]"
        noun = "delivered" if self.kind == "ratio" else "signals"
        parts.append(f"n={self.sample_size:,} {noun}")
        if self.change is not None:
            parts.append(self.change.label)
        return " · ".join(parts)


def entry_interval(row: Any, kind: str) -> tuple[float, float] | None:
    if kind == "ratio" and row.sample_size > 0:
        return ratio_interval(
            row.engaged, row.sample_size, row.value, row.interval_low, row.interval_high
        )
    if kind == "rate":
        return rate_interval(row.sample_size, row.window_days or 0)
    return None


def entries(rows: Iterable[Any]) -> list[HistoryEntry]:
    """History rows (ordered by key, then time; ORM objects or plain rows of the table) as
    entries, each compared with the one before."""
    out: list[HistoryEntry] = []
    previous: Any = None
    for row in rows:
        if previous is not None and previous.key != row.key:
            previous = None
        kind, feature = split_key(row.key)
        before = previous.value if previous is not None else None
        out.append(
            HistoryEntry(
                org_id=row.org_id,
                key=row.key,
                kind=kind,
                feature=feature,
                value=row.value,
                sample_size=row.sample_size,
                window_days=row.window_days,
                engaged=row.engaged,
                interval=entry_interval(row, kind),
                estimate=row.estimate,
                run_id=row.run_id,
                computed_at=row.computed_at,
                previous=before,
                change=calibration_change(
                    kind,
                    value=row.value,
                    sample_size=row.sample_size,
                    window_days=row.window_days,
                    previous=before,
                    engaged=row.engaged,
                    interval_low=row.interval_low,
                    interval_high=row.interval_high,
                ),
                mode=row.mode,
                mode_reason=row.mode_reason,
                mode_changed=row.mode_changed,
            )
        )
        previous = row
    return out


def load_entries(org_id: int, since: datetime) -> list[HistoryEntry]:
    """This tenant's history from ``since`` on, each compared with the value before it.

    Reads a little before ``since`` so the first run in range has its predecessor.
    """
    # Plain rows, not ORM objects: a year of a large tenant is some 800 of them.
    rows = db.session.execute(
        select(*CalibrationHistory.__table__.c)
        .where(
            CalibrationHistory.org_id == org_id,
            CalibrationHistory.computed_at >= since - timedelta(days=14),
        )
        .order_by(CalibrationHistory.key, CalibrationHistory.computed_at, CalibrationHistory.id)
    )
    return [e for e in entries(rows) if as_utc(e.computed_at) >= since]


# A feature's table shows its latest runs; the CSV holds them all.
TABLE_RUNS = 12


@dataclass(frozen=True)
class RunValues:
    """One run's ratio and rate of a feature (either may be missing)."""

    computed_at: datetime
    run_id: int | None
    ratio: HistoryEntry | None
    rate: HistoryEntry | None


@dataclass(frozen=True)
class FeatureTrend:
    feature: str
    ratio: TrendChart | None
    rate: TrendChart | None
    entries: list[HistoryEntry]  # newest first, both kinds

    @property
    def runs(self) -> list[RunValues]:
        """Newest first, one row a run."""
        by_run: dict[tuple[int | None, datetime], dict[str, HistoryEntry]] = {}
        for e in self.entries:
            by_run.setdefault((e.run_id, e.computed_at), {})[e.kind] = e
        rows = [
            RunValues(at, run_id, kinds.get("ratio"), kinds.get("rate"))
            for (run_id, at), kinds in by_run.items()
        ]
        rows.sort(key=lambda r: as_utc(r.computed_at), reverse=True)
        return rows

    @property
    def table_runs(self) -> list[RunValues]:
        return self.runs[:TABLE_RUNS]

    @property
    def latest_ratio(self) -> HistoryEntry | None:
        return next((e for e in self.entries if e.kind == "ratio"), None)

    @property
    def latest_rate(self) -> HistoryEntry | None:
        return next((e for e in self.entries if e.kind == "rate"), None)


@dataclass(frozen=True)
class Trends:
    features: list[FeatureTrend]
    weeks: int
    start: datetime
    end: datetime
    shared: bool

    @property
    def runs(self) -> int:
        return len({(e.run_id, e.computed_at) for f in self.features for e in f.entries})


def _points(items: Sequence[HistoryEntry]) -> list[TrendPoint]:
    return [
        TrendPoint(
            at=as_utc(e.computed_at),
            value=e.value,
            low=e.interval[0] if e.interval else None,
            high=e.interval[1] if e.interval else None,
            change=e.change.value if e.change else None,
            text=e.readout,
        )
        for e in items
    ]


def build(items: Sequence[HistoryEntry], now: datetime, weeks: int, shared: bool) -> Trends:
    """One ratio chart (with its band) and one rate chart per feature, biggest rate first."""
    end = as_utc(now)
    start = end - timedelta(weeks=weeks)
    by_feature: dict[str, dict[str, list[HistoryEntry]]] = {}
    for e in items:
        by_feature.setdefault(e.feature, {}).setdefault(e.kind, []).append(e)
    ratio_points = {f: _points(k.get("ratio", [])) for f, k in by_feature.items()}
    rate_points = {f: _points(k.get("rate", [])) for f, k in by_feature.items()}
    ratio_range = merge_extents([trend_extent(p) for p in ratio_points.values()])
    rate_range = merge_extents([trend_extent(p) for p in rate_points.values()])
    # Every chart of the page on one time axis, fitted to the runs there are.
    x_start, x_end = time_domain([as_utc(e.computed_at) for e in items], start, end)

    def latest_rate(feature: str) -> float:
        points = rate_points[feature]
        return points[-1].value if points else -1.0

    features = []
    for feature in sorted(by_feature, key=lambda f: (-latest_rate(f), f)):
        kinds = by_feature[feature]
        ratio = rate = None
        if ratio_points[feature]:
            ratio = trend_chart(
                feature,
                ratio_points[feature],
                x_start,
                x_end,
                percent=True,
                y_label=RATIO_LABEL,
                color=ENGAGE_COLOR,
                y_range=ratio_range if shared else None,
            )
        if rate_points[feature]:
            rate = trend_chart(
                feature,
                rate_points[feature],
                x_start,
                x_end,
                percent=False,
                y_label=RATE_LABEL,
                color=RATE_COLOR,
                y_range=rate_range if shared else None,
            )
        newest = sorted(
            [*kinds.get("ratio", []), *kinds.get("rate", [])],
            key=lambda e: (as_utc(e.computed_at), e.kind),
            reverse=True,
        )
        features.append(FeatureTrend(feature, ratio, rate, newest))
    return Trends(features, weeks, start, end, shared)


def load(org_id: int, now: datetime, weeks: int, shared: bool = False) -> Trends:
    start = as_utc(now) - timedelta(weeks=weeks)
    return build(load_entries(org_id, start), now, weeks, shared)


HISTORY_CSV_COLUMNS = (
    "computed_at",
    "run_id",
    "key",
    "feature",
    "kind",
    "value",
    "unit",
    "sample_size",
    "engaged",
    "interval_low",
    "interval_high",
    "estimate",
    "previous_value",
    "change",
    "mode",
)


def history_csv(items: Iterable[HistoryEntry]) -> str:
    ordered = sorted(items, key=lambda e: (as_utc(e.computed_at), e.key))
    return formatting.csv_text(HISTORY_CSV_COLUMNS, (_history_row(e) for e in ordered))


def _history_row(e: HistoryEntry) -> tuple[object, ...]:
    low, high = e.interval if e.interval else (None, None)
    return (
        iso(e.computed_at),
        e.run_id,
        e.key,
        e.feature,
        e.kind,
        repr(e.value),
        formatting.unit_of(e.kind),
        e.sample_size,
        e.engaged,
        low,
        high,
        e.estimate,
        None if e.previous is None else repr(e.previous),
        e.change.value if e.change else None,
        e.mode,
    )
