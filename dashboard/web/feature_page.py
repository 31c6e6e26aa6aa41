"""The feature read models: every feature across tenants, and one feature tenant by tenant."""

# A feature's page is a handful of reads whatever the number of tenants: every tenant's
# current ratio and rate of the feature (one row each, for the pooled ratio, the flags
# and the count), one page of tenants joined to their ratio and rate, and the pooled
# ratio week by week from the history's (key, computed_at, engaged, sample_size) index
# alone, summed again only when a run has written history since (pooled_weeks).

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from flask import current_app
from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select
from sqlalchemy.orm import aliased

from dashboard.extensions import db
from dashboard.web import formatting
from dashboard.web.charts import (
    ENGAGE_COLOR,
    TrendChart,
    TrendPoint,
    nice_range,
    time_domain,
    trend_chart,
)
from dashboard.web.overview import PER_PAGE, _like_pattern
from loops.calibrations import RATE_PREFIX, RATIO_PREFIX, split_key
from loops.models import Calibration, CalibrationHistory, Organization
from loops.significance import (
    Change,
    calibration_change,
    interval_change,
    rate_interval,
    ratio_interval,
)
from loops.timeutil import as_utc

# The forest plot: each tenant's interval on one shared track, the pooled ratio a line.
TRACK_WIDTH = 260
TRACK_PAD = 6


class Sort(StrEnum):
    RATIO = "ratio"
    ESTIMATE = "estimate"
    RATE = "rate"
    SAMPLE = "sample"
    NAME = "name"

    @property
    def ascending(self) -> bool:
        return self is Sort.NAME


class Flag(StrEnum):
    ABOVE = "above"
    BELOW = "below"


def parse_sort(raw: str | None) -> Sort:
    try:
        return Sort(raw or Sort.RATIO)
    except ValueError:
        return Sort.RATIO


def parse_flag(raw: str | None) -> Flag | None:
    try:
        return Flag(raw) if raw else None
    except ValueError:
        return None


def ratio_key(feature: str) -> str:
    return f"{RATIO_PREFIX}{feature}"


def rate_key(feature: str) -> str:
    return f"{RATE_PREFIX}{feature}"


def _engaged(engaged: int | None, value: float, n: int) -> int:
    # Rows written before the numerator was stored: recover it from the ratio.
    return int(engaged) if engaged is not None else round(float(value) * int(n))


def pooled(pairs: Sequence[tuple[int, int]]) -> float | None:
    """Σ engaged / Σ delivered over tenants; None when nothing was delivered."""
    total = sum(n for _, n in pairs)
    return sum(e for e, _ in pairs) / total if total else None


def flag_of(interval: tuple[float, float] | None, pool: float | None) -> Flag | None:
    """Above (below) when the tenant's whole 95% interval lies above (below) the pooled ratio."""
    if interval is None or pool is None:
        return None
    low, high = interval
    if low > pool:
        return Flag.ABOVE
    if high < pool:
        return Flag.BELOW
    return None


@dataclass(frozen=True)
class ForestScale:
    """One track shared by every row's range bar (and its axis), fitted to the intervals."""

    low: float
    high: float
    step: float

    @property
    def width(self) -> int:
        return TRACK_WIDTH

    def x(self, value: float) -> float:
        span = TRACK_WIDTH - 2 * TRACK_PAD
        clamped = min(max(value, self.low), self.high)
        return round(TRACK_PAD + (clamped - self.low) / ((self.high - self.low) or 1.0) * span, 1)

    @property
    def ticks(self) -> list[tuple[float, str]]:
        count = round((self.high - self.low) / self.step)
        digits = 0 if abs(self.step * 100 - round(self.step * 100)) < 1e-6 else 1
        return [
            (self.x(self.low + i * self.step), f"{(self.low + i * self.step) * 100:.{digits}f}%")
            for i in range(count + 1)
        ]


def forest_scale(lows: Sequence[float], highs: Sequence[float]) -> ForestScale:
    """From the lowest interval's bottom to the highest one's top, in round steps."""
    if not lows or not highs:
        return ForestScale(0.0, 1.0, 0.25)
    ticks = nice_range(min(lows), max(highs), percent=True)
    return ForestScale(ticks[0], ticks[-1], round(ticks[1] - ticks[0], 10))


@dataclass(frozen=True)
class TenantFeatureRow:
    org_id: int
    slug: str
    name: str
    ratio: float | None
    n: int
    engaged: int | None
    interval: tuple[float, float] | None
    estimate: float | None
    ratio_previous: float | None
    ratio_change: Change | None
    ratio_at: datetime | None
    rate: float | None
    rate_n: int | None
    rate_change: Change | None
    rate_interval: tuple[float, float] | None
    flag: Flag | None
    stale: bool

    @property
    def ratio_text(self) -> str:
        return formatting.format_value("ratio", self.ratio)

    @property
    def interval_text(self) -> str:
        return "" if self.interval is None else formatting.format_range("ratio", *self.interval)

    @property
    def rate_text(self) -> str:
        return formatting.format_value("rate", self.rate) if self.rate is not None else "—"


@dataclass(frozen=True)
class Bar:
    """A row's geometry on the forest track."""

    low_x: float
    width: float
    point_x: float


@dataclass(frozen=True)
class FeaturePage:
    feature: str
    rows: list[TenantFeatureRow]
    total: int
    page: int
    per_page: int
    q: str
    sort: Sort
    flag: Flag | None
    pooled: float | None
    pooled_n: int
    tenants: int  # with a current ratio measured within the window
    above: int
    below: int
    rises: int
    drops: int
    stale: int
    scale: ForestScale
    trend: TrendChart | None
    weeks: int
    window_days: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def pooled_text(self) -> str:
        return formatting.format_value("ratio", self.pooled)

    @property
    def pooled_x(self) -> float | None:
        return None if self.pooled is None else self.scale.x(self.pooled)

    def bar(self, row: TenantFeatureRow) -> Bar | None:
        if row.interval is None or row.ratio is None:
            return None
        low_x, high_x = self.scale.x(row.interval[0]), self.scale.x(row.interval[1])
        return Bar(low_x, max(round(high_x - low_x, 1), 1.5), self.scale.x(row.ratio))


def _fresh_after(now: datetime, window_days: int) -> datetime:
    return as_utc(now) - timedelta(days=window_days)


def _current(feature: str) -> tuple[list[Any], set[int]]:
    """Every tenant's current ratio of ``feature``, and the tenants measuring it at all (a
    ratio or a rate): one read of loop_calibrations for both keys."""
    c = Calibration
    rows = db.session.execute(
        select(
            c.org_id,
            c.key,
            c.value,
            c.sample_size,
            c.engaged,
            c.interval_low,
            c.interval_high,
            c.previous_value,
            c.computed_at,
        ).where(c.key.in_([ratio_key(feature), rate_key(feature)]))
    ).all()
    key = ratio_key(feature)
    return [r for r in rows if r.key == key], {r.org_id for r in rows}


def _interval_of(row: Any) -> tuple[float, float] | None:
    if row.sample_size <= 0:
        return None
    return ratio_interval(
        row.engaged, row.sample_size, row.value, row.interval_low, row.interval_high
    )


def pooled_by_week(feature: str, now: datetime, weeks: int) -> list[tuple[date, int, int, int]]:
    """(last run day of the week, Σ engaged, Σ delivered, rows) per ISO week, oldest first."""
    h = CalibrationHistory
    since = as_utc(now) - timedelta(weeks=weeks)
    day = func.date(h.computed_at)
    rows = db.session.execute(
        select(
            day,
            func.sum(h.engaged),
            func.sum(case((h.engaged.is_not(None), h.sample_size), else_=0)),
            func.count(h.engaged),
        )
        .where(h.key == ratio_key(feature), h.computed_at >= since)
        .group_by(day)
    ).all()
    weekly: dict[tuple[int, int], list[Any]] = {}
    for raw_day, engaged, n, count in rows:
        d = raw_day if isinstance(raw_day, date) else date.fromisoformat(str(raw_day))
        slot = weekly.setdefault(d.isocalendar()[:2], [d, 0, 0, 0])
        slot[0] = max(slot[0], d)
        slot[1] += int(engaged or 0)
        slot[2] += int(n or 0)
        slot[3] += int(count or 0)
    return sorted((d, e, n, k) for d, e, n, k in weekly.values() if n > 0)


# The pooled ratio week by week sums every tenant's runs of the feature (26,000 history
# rows for half a year of 1,000 tenants): the largest read of the page. The history only
# grows, by a run writing it, so each process keeps the weeks it summed and sums again
# as soon as the history's newest row is another one. Rows only leave with a deleted
# tenant: its runs drop out of the pooled ratio within POOLED_TTL.
POOLED_TTL = timedelta(minutes=5)
POOLED_CACHE_SIZE = 64


def pooled_weeks(feature: str, now: datetime, weeks: int) -> list[tuple[date, int, int, int]]:
    """pooled_by_week, kept per process until a run writes history (or POOLED_TTL)."""
    newest = db.session.execute(select(func.max(CalibrationHistory.id))).scalar()
    cache: dict[tuple[str, int], tuple[int | None, datetime, list[tuple[date, int, int, int]]]]
    cache = current_app.extensions.setdefault("pooled_weeks", {})
    kept = cache.get((feature, weeks))
    if kept is not None and kept[0] == newest and timedelta(0) <= now - kept[1] < POOLED_TTL:
        return kept[2]
    value = pooled_by_week(feature, now, weeks)
    if len(cache) >= POOLED_CACHE_SIZE:
        cache.clear()
    cache[(feature, weeks)] = (newest, now, value)
    return value


def pooled_trend(feature: str, now: datetime, weeks: int) -> TrendChart | None:
    points = [
        TrendPoint(
            at=datetime.combine(d, datetime.min.time()).replace(tzinfo=as_utc(now).tzinfo),
            value=e / n,
            text=(
                f"week of {d.strftime('%-d %b')} · pooled {e / n * 100:.1f}% · "
                f"{formatting.plural(k, 'tenant')}, n={n:,}"
            ),
        )
        for d, e, n, k in pooled_weeks(feature, now, weeks)
    ]
    if not points:
        return None
    start, end = time_domain(
        [p.at for p in points], as_utc(now) - timedelta(weeks=weeks), as_utc(now)
    )
    return trend_chart(
        feature,
        points,
        start,
        end,
        percent=True,
        y_label="pooled engagement ratio",
        color=ENGAGE_COLOR,
        width=420,
        height=170,
        x_ticks=5,
    )


def load(
    feature: str,
    *,
    now: datetime,
    window_days: int,
    q: str = "",
    sort: Sort = Sort.RATIO,
    flag: Flag | None = None,
    page: int = 1,
    weeks: int = 26,
    per_page: int = PER_PAGE,
) -> FeaturePage:
    """One page of tenants measured on ``feature``, with the pooled ratio and the flags."""
    q = q.strip()[:100]
    fresh_after = _fresh_after(now, window_days)
    # Every tenant's current ratio: the pooled ratio, the flags, the track's range. One
    # pass over a thousand rows or so, each interval worked out once.
    everyone, measured = _current(feature)
    fresh = [r for r in everyone if as_utc(r.computed_at) > fresh_after]
    pool = pooled([(_engaged(r.engaged, r.value, r.sample_size), r.sample_size) for r in fresh])
    intervals: dict[int, tuple[float, float] | None] = {}
    changes: list[Change | None] = []
    for r in fresh:
        iv = intervals[r.org_id] = _interval_of(r)
        # The change rule (calibration_change) on the interval already at hand.
        changes.append(None if iv is None else interval_change(*iv, r.previous_value))
    flags = {org_id: flag_of(iv, pool) for org_id, iv in intervals.items()}
    known = [iv for iv in intervals.values() if iv is not None]
    scale = forest_scale([iv[0] for iv in known], [iv[1] for iv in known])

    ratio, rate = aliased(Calibration), aliased(Calibration)
    filters: list[ColumnElement[bool]] = [or_(ratio.id.is_not(None), rate.id.is_not(None))]
    if q:
        filters.append(Organization.name.ilike(_like_pattern(q), escape="\\"))
    if flag is not None:
        # The same rule as flag_of, on the stored interval, for fresh rows only.
        side = (
            ratio.interval_low > literal(pool if pool is not None else 2.0)
            if flag is Flag.ABOVE
            else ratio.interval_high < literal(pool if pool is not None else -1.0)
        )
        filters.append(and_(side, ratio.computed_at > fresh_after))
    joined = (
        select(Organization.id)
        .select_from(Organization)
        .outerjoin(ratio, and_(ratio.org_id == Organization.id, ratio.key == ratio_key(feature)))
        .outerjoin(rate, and_(rate.org_id == Organization.id, rate.key == rate_key(feature)))
        .where(*filters)
    )
    if q or flag is not None:
        total = db.session.execute(select(func.count()).select_from(joined.subquery())).scalar_one()
    else:
        total = len(measured)  # every tenant with a ratio or a rate of the feature
    pages = max(1, -(-total // per_page))
    page = min(max(page, 1), pages)
    orders: dict[Sort, list[Any]] = {
        Sort.RATIO: [ratio.value.desc().nulls_last()],
        Sort.ESTIMATE: [ratio.estimate.desc().nulls_last()],
        Sort.RATE: [rate.value.desc().nulls_last()],
        Sort.SAMPLE: [ratio.sample_size.desc().nulls_last()],
        Sort.NAME: [],
    }
    order = orders[sort]
    stmt = (
        joined.with_only_columns(Organization.id, Organization.slug, Organization.name)
        .add_columns(
            ratio.value,
            ratio.sample_size,
            ratio.engaged,
            ratio.interval_low,
            ratio.interval_high,
            ratio.estimate,
            ratio.previous_value,
            ratio.computed_at,
            rate.value,
            rate.sample_size,
            rate.window_days,
            rate.previous_value,
        )
        .order_by(*order, Organization.name, Organization.id)
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    rows = []
    for r in db.session.execute(stmt):
        (org_id, slug, name, value, n, engaged, low, high, estimate, prev, at) = r[:11]
        rate_value, rate_n, rate_days, rate_prev = r[11:]
        interval = None
        ratio_change = None
        if value is not None and n:
            interval = ratio_interval(engaged, n, value, low, high)
            ratio_change = calibration_change(
                "ratio",
                value=value,
                sample_size=n,
                window_days=None,
                previous=prev,
                engaged=engaged,
                interval_low=low,
                interval_high=high,
            )
        stale = at is not None and as_utc(at) <= fresh_after
        rows.append(
            TenantFeatureRow(
                org_id=org_id,
                slug=slug,
                name=name,
                ratio=value,
                n=int(n or 0),
                engaged=engaged,
                interval=interval,
                estimate=estimate,
                ratio_previous=prev,
                ratio_change=ratio_change,
                ratio_at=at,
                rate=rate_value,
                rate_n=rate_n,
                rate_change=calibration_change(
                    "rate",
                    value=rate_value,
                    sample_size=rate_n,
                    window_days=rate_days,
                    previous=rate_prev,
                )
                if rate_value is not None
                else None,
                rate_interval=rate_interval(rate_n, rate_days) if rate_value is not None else None,
                flag=None if stale else flags.get(org_id),
                stale=stale,
            )
        )
    return FeaturePage(
        feature=feature,
        rows=rows,
        total=int(total),
        page=page,
        per_page=per_page,
        q=q,
        sort=sort,
        flag=flag,
        pooled=pool,
        pooled_n=sum(r.sample_size for r in fresh),
        tenants=len(fresh),
        above=sum(1 for f in flags.values() if f is Flag.ABOVE),
        below=sum(1 for f in flags.values() if f is Flag.BELOW),
        rises=sum(1 for c in changes if c is Change.UP),
        drops=sum(1 for c in changes if c is Change.DOWN),
        stale=len(everyone) - len(fresh),
        scale=scale,
        trend=pooled_trend(feature, now, weeks),
        weeks=weeks,
        window_days=window_days,
    )


def exists(feature: str) -> bool:
    """Some tenant has a calibration of this feature."""
    return (
        db.session.execute(
            select(Calibration.id)
            .where(Calibration.key.in_([ratio_key(feature), rate_key(feature)]))
            .limit(1)
        ).first()
        is not None
    )


# --- every feature -------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSummary:
    feature: str
    tenants: int
    ratio_tenants: int
    pooled: float | None
    delivered: int
    volume: int  # ENGAGE signals in the tenants' latest windows
    rate: float  # Σ of tenants' rates: ENGAGE per day across tenants
    latest: datetime | None

    @property
    def pooled_text(self) -> str:
        return formatting.format_value("ratio", self.pooled)


def summaries(now: datetime, window_days: int) -> list[FeatureSummary]:
    """Each feature with a calibration: tenants, pooled ratio and volume (fresh rows only),
    most engaged first. One grouped read of loop_calibrations."""
    c = Calibration
    fresh = c.computed_at > _fresh_after(now, window_days)
    engaged = func.coalesce(c.engaged, func.round(c.value * c.sample_size))
    rows = db.session.execute(
        select(
            c.key,
            func.count(),
            func.sum(case((fresh, 1), else_=0)),
            func.sum(case((fresh, c.sample_size), else_=0)),
            func.sum(case((fresh, engaged), else_=0)),
            func.sum(case((fresh, c.value), else_=0.0)),
            func.max(c.computed_at),
        ).group_by(c.key)
    ).all()
    by_feature: dict[str, dict[str, Any]] = {}
    for key, tenants, fresh_tenants, n, e, total_value, latest in rows:
        kind, feature = split_key(key)
        if kind not in ("rate", "ratio"):
            continue
        slot = by_feature.setdefault(
            feature,
            {"tenants": 0, "ratio_tenants": 0, "delivered": 0, "engaged": 0, "volume": 0},
        )
        slot["tenants"] = max(slot["tenants"], int(tenants))
        slot.setdefault("rate", 0.0)
        latest = as_utc(latest) if latest is not None else None
        slot["latest"] = max(filter(None, [slot.get("latest"), latest]), default=None)
        if kind == "ratio":
            slot["ratio_tenants"] = int(fresh_tenants or 0)
            slot["delivered"] = int(n or 0)
            slot["engaged"] = int(e or 0)
        else:
            slot["volume"] = int(n or 0)
            slot["rate"] = float(total_value or 0.0)
    out = [
        FeatureSummary(
            feature=feature,
            tenants=s["tenants"],
            ratio_tenants=s["ratio_tenants"],
            pooled=(s["engaged"] / s["delivered"]) if s["delivered"] else None,
            delivered=s["delivered"],
            volume=s["volume"],
            rate=round(s["rate"], 4),
            latest=s.get("latest"),
        )
        for feature, s in by_feature.items()
    ]
    out.sort(key=lambda f: (-f.volume, f.feature))
    return out


CSV_COLUMNS = (
    "tenant",
    "name",
    "ratio",
    "sample_size",
    "engaged",
    "interval_low",
    "interval_high",
    "estimate",
    "previous_ratio",
    "ratio_change",
    "vs_pooled",
    "rate",
    "rate_change",
    "computed_at",
)


def page_csv(page: FeaturePage) -> str:
    return formatting.csv_text(CSV_COLUMNS, (_page_row(r) for r in page.rows))


def _page_row(r: TenantFeatureRow) -> tuple[object, ...]:
    low, high = r.interval if r.interval else (None, None)
    return (
        r.slug,
        r.name,
        r.ratio,
        r.n,
        r.engaged,
        low,
        high,
        r.estimate,
        r.ratio_previous,
        r.ratio_change.value if r.ratio_change else None,
        r.flag.value if r.flag else None,
        r.rate,
        r.rate_change.value if r.rate_change else None,
        None if r.ratio_at is None else as_utc(r.ratio_at).isoformat(),
    )
