"""The tenant page read model: calibrations that explain themselves, daily charts, run history."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from dashboard.extensions import db
from dashboard.web import formatting
from dashboard.web import trends as trends_model
from dashboard.web.charts import DELIVER_COLOR, ENGAGE_COLOR, LineChart, line_chart
from dashboard.web.overview import window
from dashboard.web.trends import Trends
from loops.calibrations import split_key
from loops.models import (
    Calibration,
    Organization,
    RunState,
    SignalDailyCount,
    SignalKind,
    TuneRun,
)
from loops.significance import Change, calibration_change, rate_interval, ratio_interval
from loops.timeutil import as_utc, iso

# A rate or ratio resting on fewer signals than this is flagged "low sample".
LOW_SAMPLE_THRESHOLD = 30
CHART_RANGES = (30, 60, 90)
HISTORY_LIMIT = 20


@dataclass(frozen=True)
class CalibrationView:
    row: Calibration
    kind: str
    feature: str
    display: str
    previous_display: str
    change: float | None
    change_text: str
    age: str
    stale: bool
    low_sample: bool
    significance: Change | None = None
    interval: tuple[float, float] | None = None

    @property
    def unit(self) -> str:
        return formatting.unit_of(self.kind)

    @property
    def interval_text(self) -> str:
        return "" if self.interval is None else formatting.format_range(self.kind, *self.interval)


@dataclass(frozen=True)
class TenantPage:
    org: Organization
    calibrations: list[CalibrationView]
    last_success: TuneRun | None
    history: list[TuneRun]
    charts: list[LineChart]
    days: int
    since: date
    today: date
    trends: Trends | None = None
    shared: bool = False

    @property
    def active_run(self) -> TuneRun | None:
        return next((r for r in self.history if RunState(r.state).active), None)

    @property
    def last_run(self) -> TuneRun | None:
        return self.history[0] if self.history else None


def parse_range(raw: str | None) -> int:
    try:
        days = int(raw or CHART_RANGES[0])
    except ValueError:
        return CHART_RANGES[0]
    return days if days in CHART_RANGES else CHART_RANGES[0]


def last_success(org_id: int) -> TuneRun | None:
    return db.session.execute(
        select(TuneRun)
        .where(TuneRun.org_id == org_id, TuneRun.state == RunState.SUCCEEDED.value)
        .order_by(TuneRun.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def is_stale(cal: Calibration, success: TuneRun | None) -> bool:
    """Older than the tenant's last successful run: that run had no signals for its feature."""
    if success is None:
        return False
    if cal.run_id is not None:
        return cal.run_id < success.id
    started = success.started_at or success.enqueued_at
    return as_utc(cal.computed_at) < as_utc(started)


def calibration_significance(cal: Calibration, kind: str) -> Change | None:
    """Whether this value differs from the one it replaced by more than noise."""
    return calibration_change(
        kind,
        value=cal.value,
        sample_size=cal.sample_size,
        window_days=cal.window_days,
        previous=cal.previous_value,
        engaged=cal.engaged,
        interval_low=cal.interval_low,
        interval_high=cal.interval_high,
    )


def calibration_interval(cal: Calibration, kind: str) -> tuple[float, float] | None:
    """A ratio's Wilson interval or a rate's Poisson interval (per day)."""
    if kind == "ratio" and cal.sample_size > 0:
        return ratio_interval(
            cal.engaged, cal.sample_size, cal.value, cal.interval_low, cal.interval_high
        )
    if kind == "rate":
        return rate_interval(cal.sample_size, cal.window_days)
    return None


def calibration_views(
    rows: Iterable[Calibration], success: TuneRun | None, now: datetime
) -> list[CalibrationView]:
    views = []
    for cal in rows:
        kind, feature = split_key(cal.key)
        change = formatting.change_pct(cal.value, cal.previous_value)
        views.append(
            CalibrationView(
                row=cal,
                kind=kind,
                feature=feature,
                display=formatting.format_value(kind, cal.value),
                previous_display=(
                    formatting.format_value(kind, cal.previous_value)
                    if cal.previous_value is not None
                    else ""
                ),
                change=change,
                change_text=formatting.format_change(change),
                age=formatting.ago(cal.computed_at, now),
                stale=is_stale(cal, success),
                low_sample=cal.sample_size < LOW_SAMPLE_THRESHOLD,
                significance=calibration_significance(cal, kind),
                interval=calibration_interval(cal, kind),
            )
        )
    # Features together (rate then ratio), so a row reads "mention: 2.1/day, 64%".
    views.sort(key=lambda v: (v.feature, v.kind))
    return views


def load_calibrations(org_id: int) -> list[Calibration]:
    return list(
        db.session.execute(
            select(Calibration).where(Calibration.org_id == org_id).order_by(Calibration.key)
        )
        .scalars()
        .all()
    )


def history(org_id: int, limit: int = HISTORY_LIMIT) -> list[TuneRun]:
    return list(
        db.session.execute(
            select(TuneRun).where(TuneRun.org_id == org_id).order_by(TuneRun.id.desc()).limit(limit)
        )
        .scalars()
        .all()
    )


def run_marks(org_id: int, since: date) -> list[tuple[date, str, str]]:
    """The tenant's finished runs since ``since``: (day, label, state) for the time axis."""
    runs = db.session.execute(
        select(TuneRun.id, TuneRun.state, TuneRun.started_at, TuneRun.enqueued_at)
        .where(
            TuneRun.org_id == org_id,
            TuneRun.state.in_([RunState.SUCCEEDED.value, RunState.FAILED.value]),
            TuneRun.enqueued_at >= datetime.combine(since, datetime.min.time(), tzinfo=UTC),
        )
        .order_by(TuneRun.id)
    ).all()
    marks = []
    for run_id, state, started, enqueued in runs:
        at = as_utc(started or enqueued)
        marks.append((at.date(), f"run #{run_id} {state}, {formatting.weekday_text(at)}", state))
    return marks


def daily_counts(org_id: int, since: date) -> dict[str, dict[str, dict[date, int]]]:
    """feature → kind → day → count, from the daily rollup (never raw signals)."""
    counts: dict[str, dict[str, dict[date, int]]] = {}
    for kind, feature, day, count in db.session.execute(
        select(
            SignalDailyCount.kind,
            SignalDailyCount.feature,
            SignalDailyCount.day,
            SignalDailyCount.count,
        ).where(SignalDailyCount.org_id == org_id, SignalDailyCount.day >= since)
    ):
        counts.setdefault(feature, {}).setdefault(kind, {})[day] = int(count)
    return counts


def feature_charts(
    org_id: int, now: datetime, days: int, shared: bool = False
) -> tuple[list[LineChart], date, date]:
    """One small chart per feature: ENGAGE (solid) and DELIVER (dashed), one point a day,
    tune runs marked on the time axis; with ``shared`` all on one y scale."""
    since, today = window(now, days)
    counts = daily_counts(org_id, since)
    day_list = [since + timedelta(days=i) for i in range(days)]
    engage, deliver = SignalKind.ENGAGE.value, SignalKind.DELIVER.value
    peak = max(
        (n for by_kind in counts.values() for by_day in by_kind.values() for n in by_day.values()),
        default=0,
    )
    marks = run_marks(org_id, since) if counts else []
    charts = []
    for feature in sorted(counts, key=lambda f: -sum(counts[f].get(engage, {}).values())):
        by_kind = counts[feature]
        charts.append(
            line_chart(
                feature,
                day_list,
                {
                    engage: [by_kind.get(engage, {}).get(d, 0) for d in day_list],
                    deliver: [by_kind.get(deliver, {}).get(d, 0) for d in day_list],
                },
                colors={engage: ENGAGE_COLOR, deliver: DELIVER_COLOR},
                dashed=(deliver,),
                y_max=peak if shared else None,
                runs=marks,
            )
        )
    return charts, since, today


DAILY_CSV_COLUMNS = ("day", "feature", "ENGAGE", "DELIVER")


def daily_csv(org_id: int, now: datetime, days: int, feature: str | None = None) -> str:
    """The daily series behind the charts, one row per feature and day (zeros included)."""
    since, _today = window(now, days)
    counts = daily_counts(org_id, since)
    engage, deliver = SignalKind.ENGAGE.value, SignalKind.DELIVER.value
    return formatting.csv_text(
        DAILY_CSV_COLUMNS,
        (
            (
                (since + timedelta(days=i)).isoformat(),
                name,
                counts[name].get(engage, {}).get(since + timedelta(days=i), 0),
                counts[name].get(deliver, {}).get(since + timedelta(days=i), 0),
            )
            for name in sorted(counts)
            if feature is None or name == feature
            for i in range(days)
        ),
    )


def load(
    org: Organization,
    now: datetime,
    days: int,
    weeks: int = trends_model.DEFAULT_WEEKS,
    shared: bool = False,
    trend: str | None = None,
) -> TenantPage:
    """The whole page; its history charts ``trend`` (a feature), or the first feature."""
    success = last_success(org.id)
    charts, since, today = feature_charts(org.id, now, days, shared)
    calibrations = load_calibrations(org.id)
    features = trends_model.trend_features((cal.key, cal.value) for cal in calibrations)
    return TenantPage(
        org=org,
        calibrations=calibration_views(calibrations, success, now),
        last_success=success,
        history=history(org.id),
        charts=charts,
        days=days,
        since=since,
        today=today,
        trends=trends_model.load(org.id, now, weeks, features, trend, shared),
        shared=shared,
    )


@dataclass(frozen=True)
class PreviewRow:
    key: str
    kind: str
    feature: str
    current: str
    proposed: str
    change_text: str
    change: float | None
    sample_size: int
    distinct_users: int


def preview_rows(changes: Iterable[Any]) -> list[PreviewRow]:
    """Dry-run changes (jobs.tune_engagement.CalibrationChange) as the page shows them."""
    rows = []
    for c in changes:
        kind, feature = split_key(c.key)
        pct = formatting.change_pct(c.new_value, c.old_value)
        rows.append(
            PreviewRow(
                key=c.key,
                kind=kind,
                feature=feature,
                current=formatting.format_value(kind, c.old_value)
                if c.old_value is not None
                else "",
                proposed=formatting.format_value(kind, c.new_value),
                change_text=formatting.format_change(pct),
                change=pct,
                sample_size=c.sample_size,
                distinct_users=c.distinct_users,
            )
        )
    rows.sort(key=lambda r: (r.feature, r.kind))
    return rows


CSV_COLUMNS = (
    "key",
    "feature",
    "kind",
    "value",
    "unit",
    "sample_size",
    "distinct_users",
    "window_days",
    "computed_at",
    "previous_value",
    "previous_computed_at",
    "run_id",
    "engaged",
    "interval_low",
    "interval_high",
    "estimate",
    "change",
)


def calibrations_csv(rows: Iterable[Calibration]) -> str:
    return formatting.csv_text(CSV_COLUMNS, (_calibration_row(cal) for cal in rows))


def _calibration_row(cal: Calibration) -> tuple[object, ...]:
    kind, feature = split_key(cal.key)
    interval = calibration_interval(cal, kind)
    significance = calibration_significance(cal, kind)
    return (
        cal.key,
        feature,
        kind,
        repr(cal.value),
        formatting.unit_of(kind),
        cal.sample_size,
        cal.distinct_users,
        cal.window_days,
        iso(cal.computed_at),
        None if cal.previous_value is None else repr(cal.previous_value),
        iso(cal.previous_computed_at),
        cal.run_id,
        cal.engaged,
        interval[0] if interval else None,
        interval[1] if interval else None,
        cal.estimate,
        significance.value if significance else None,
    )
