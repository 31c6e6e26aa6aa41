"""A tenant's calibration history read model: one feature's ratio and rate over the last weeks."""

# The page charts one feature at a time (a selector switches between them), so its cost
# does not grow with the number of features: one indexed range read of
# loop_calibration_history (org_id, key, computed_at) for that feature's two keys, a year
# of weekly runs being about 2 x 52 rows. Only "one scale for all" reads every feature's
# values (not their readouts or charts), to fit the shared axes.

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
)
from loops.calibrations import RATE_PREFIX, RATIO_PREFIX, split_key
from loops.models import Calibration, CalibrationHistory
from loops.significance import Change, calibration_change, rate_interval, ratio_interval
from loops.timeutil import as_utc, iso

TREND_RANGES = (12, 26, 52)
DEFAULT_WEEKS = 26
RATIO_LABEL = "engagement ratio"
RATE_LABEL = "ENGAGE / day"
# History read before the range, so its first run is compared with the one before it.
LEAD_IN = timedelta(days=14)


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


def _history_since(org_id: int, since: datetime, keys: Sequence[str] | None) -> Any:
    # Reads a little before ``since`` so the first run in range has its predecessor.
    h = CalibrationHistory
    stmt = select(*h.__table__.c).where(h.org_id == org_id, h.computed_at >= since - LEAD_IN)
    if keys is not None:
        stmt = stmt.where(h.key.in_(keys))
    # Plain rows, not ORM objects: a year of a large tenant is some 800 of them.
    return db.session.execute(stmt.order_by(h.key, h.computed_at, h.id))


def load_entries(
    org_id: int, since: datetime, keys: Sequence[str] | None = None
) -> list[HistoryEntry]:
    """This tenant's history from ``since`` on (only ``keys`` when given), each compared
    with the value before it."""
    rows = _history_since(org_id, since, keys)
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
    """One feature's history: its ratio and rate charts and the values behind them."""

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


# Shared y ranges of every feature's charts: (ratio, rate), each None without values.
Ranges = tuple[tuple[float, float] | None, tuple[float, float] | None]


@dataclass(frozen=True)
class Trends:
    """The history section: the tenant's features (the selector) and the one shown."""

    feature: FeatureTrend | None  # None: the tenant has no rate or ratio calibration
    features: list[str]
    weeks: int
    start: datetime
    end: datetime
    shared: bool
    # Asked for (?trend=) but not one of this tenant's features: the first is shown.
    unknown: str | None = None

    @property
    def selected(self) -> str | None:
        return None if self.feature is None else self.feature.feature

    @property
    def trend_param(self) -> str | None:
        """?trend= of the page's links: the feature shown, unless it is the default one."""
        selected = self.selected
        return selected if self.features and selected != self.features[0] else None

    @property
    def runs(self) -> int:
        if self.feature is None:
            return 0
        return len({(e.run_id, e.computed_at) for e in self.feature.entries})


def trend_features(calibrations: Iterable[tuple[str, float]]) -> list[str]:
    """The features a tenant's calibrations (key, value) measure, by their current rate,
    busiest first (as the daily charts are), then by name: the selector's order, its
    first the feature charted by default."""
    rates: dict[str, float] = {}
    for key, value in calibrations:
        kind, feature = split_key(key)
        if kind == "rate":
            rates[feature] = value
        elif kind == "ratio":
            rates.setdefault(feature, -1.0)
    return sorted(rates, key=lambda f: (-rates[f], f))


def load_features(org_id: int) -> list[str]:
    """Every feature the tenant has a calibration of. Every history row was once a
    calibration and calibrations are never deleted, so no feature with history is missed."""
    c = Calibration
    rows = db.session.execute(select(c.key, c.value).where(c.org_id == org_id))
    return trend_features((key, value) for key, value in rows)


@dataclass(frozen=True)
class Nav:
    """What the history's picker and range links need when the section is not rendered:
    the tenant's features and the one charted."""

    features: list[str]
    selected: str | None


def choose(features: Sequence[str], requested: str | None) -> str | None:
    """The feature to chart: the one asked for when the tenant has it, else the first."""
    if requested in features:
        return requested
    return features[0] if features else None


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


def shared_ranges(rows: Iterable[Any], start: datetime) -> Ranges:
    """The y range every feature's ratio charts share, and the one of the rate charts:
    the values and their intervals from ``start`` on (no readouts, no charts)."""
    extents: dict[str, list[tuple[float, float]]] = {"ratio": [], "rate": []}
    for row in rows:
        kind, _feature = split_key(row.key)
        if kind not in extents or as_utc(row.computed_at) < start:
            continue
        low, high = entry_interval(row, kind) or (row.value, row.value)
        extents[kind].append((min(row.value, low), max(row.value, high)))
    return merge_extents(extents["ratio"]), merge_extents(extents["rate"])


def build(
    feature: str,
    items: Sequence[HistoryEntry],
    start: datetime,
    end: datetime,
    ranges: Ranges | None = None,
) -> FeatureTrend:
    """The feature's ratio chart (with its band) and rate chart; with ``ranges`` on the
    y scales every feature shares."""
    ratios = _points([e for e in items if e.kind == "ratio"])
    rates = _points([e for e in items if e.kind == "rate"])
    # Both charts on one time axis, fitted to the runs there are.
    x_start, x_end = time_domain([as_utc(e.computed_at) for e in items], start, end)
    ratio_range, rate_range = ranges or (None, None)
    ratio = rate = None
    if ratios:
        ratio = trend_chart(
            feature,
            ratios,
            x_start,
            x_end,
            percent=True,
            y_label=RATIO_LABEL,
            color=ENGAGE_COLOR,
            y_range=ratio_range,
        )
    if rates:
        rate = trend_chart(
            feature,
            rates,
            x_start,
            x_end,
            percent=False,
            y_label=RATE_LABEL,
            color=RATE_COLOR,
            y_range=rate_range,
        )
    newest = sorted(items, key=lambda e: (as_utc(e.computed_at), e.kind), reverse=True)
    return FeatureTrend(feature, ratio, rate, newest)


def load(
    org_id: int,
    now: datetime,
    weeks: int,
    features: Sequence[str],
    requested: str | None = None,
    shared: bool = False,
) -> Trends:
    """The history of one feature (``requested``, or the first) over the last ``weeks``."""
    end = as_utc(now)
    start = end - timedelta(weeks=weeks)
    selected = choose(features, requested)
    unknown = requested if requested and requested != selected else None
    if selected is None:
        return Trends(None, list(features), weeks, start, end, shared, unknown)
    keys = (f"{RATIO_PREFIX}{selected}", f"{RATE_PREFIX}{selected}")
    ranges = None
    if shared:
        # One read of every feature: their values fit the shared axes.
        rows = list(_history_since(org_id, start, None))
        ranges = shared_ranges(rows, start)
        items = [
            e for e in entries(r for r in rows if r.key in keys) if as_utc(e.computed_at) >= start
        ]
    else:
        items = load_entries(org_id, start, keys)
    trend = build(selected, items, start, end, ranges)
    return Trends(trend, list(features), weeks, start, end, shared, unknown)


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
