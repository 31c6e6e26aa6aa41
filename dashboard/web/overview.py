"""The tenants overview read model: a fixed handful of indexed queries per page."""

# Volumes come from loop_signal_daily (never a scan of loop_signals); the last run per
# tenant is a probe of the tune_runs (org_id, id) index; the count does not grow with
# the number of tenants.

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, Subquery, case, func, select

from dashboard.extensions import db
from dashboard.web import formatting
from dashboard.web.charts import Sparkline, sparkline
from loops.delivery import digest_counts
from loops.models import (
    Calibration,
    Organization,
    RunState,
    SignalDailyCount,
    SignalKind,
    TuneRun,
)
from loops.significance import Change, count_change
from loops.timeutil import as_utc

PER_PAGE = 25
# The overview's range switch (the tune's lookback is always offered too).
RANGES = (7, 30, 90)


def ranges(default: int) -> tuple[int, ...]:
    return tuple(sorted({*RANGES, default}))


def parse_days(raw: str | None, default: int) -> int:
    try:
        days = int(raw or default)
    except ValueError:
        return default
    return days if days in ranges(default) else default


class Sort(StrEnum):
    NAME = "name"
    VOLUME = "volume"
    LAST_RUN = "last_run"


@dataclass(frozen=True)
class TenantRow:
    org_id: int
    slug: str
    name: str
    volume: int
    daily: list[int]
    calibrations: int
    last_run: TuneRun | None
    # Features in digest mode, and whether that is applied (enforced) or only shown.
    digests: int = 0
    enforced: bool = False
    # ENGAGE in the last complete days of the range, and in as many days before them.
    recent: int = 0
    before: int = 0

    @property
    def chart(self) -> Sparkline:
        return sparkline(self.daily)

    @property
    def change(self) -> Change | None:
        """Whether the period's change is more than chance (both windows' counts)."""
        return count_change(self.recent, self.before)

    @property
    def change_pct(self) -> float | None:
        return formatting.change_pct(self.recent, self.before)

    @property
    def change_text(self) -> str:
        if self.before == 0:
            return "new" if self.recent else "—"
        return formatting.format_change(self.change_pct)

    @property
    def change_title(self) -> str:
        verdict = self.change.label if self.change else "nothing to compare"
        return f"{self.recent:,} vs {self.before:,} ENGAGE: {verdict}"


@dataclass(frozen=True)
class OverviewPage:
    rows: list[TenantRow]
    total: int
    page: int
    per_page: int
    q: str
    sort: Sort
    days: int
    since: date
    today: date
    failed_count: int = 0
    lookback_days: int = 30

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def org_ids(self) -> list[int]:
        return [r.org_id for r in self.rows]

    @property
    def default_days(self) -> bool:
        return self.days == self.lookback_days


def window(now: datetime, days: int) -> tuple[date, date]:
    """The last ``days`` UTC days, today included: (first day, today)."""
    today = as_utc(now).date()
    return today - timedelta(days=days - 1), today


def parse_sort(raw: str | None) -> Sort:
    try:
        return Sort(raw or Sort.NAME)
    except ValueError:
        return Sort.NAME


def _like_pattern(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _name_filter(q: str) -> list[ColumnElement[bool]]:
    return [Organization.name.ilike(_like_pattern(q), escape="\\")] if q else []


def last_run_id_column() -> ColumnElement[int | None]:
    """Per-tenant correlated max(id): one backward probe of ix_tune_runs_org_id_id each."""
    return (
        select(func.max(TuneRun.id))
        .where(TuneRun.org_id == Organization.id)
        .correlate(Organization)
        .scalar_subquery()
    )


def _volume_subquery(since: date) -> Subquery:
    return (
        select(
            SignalDailyCount.org_id.label("org_id"),
            func.sum(SignalDailyCount.count).label("volume"),
        )
        .where(
            SignalDailyCount.kind == SignalKind.ENGAGE.value,
            SignalDailyCount.day >= since,
        )
        .group_by(SignalDailyCount.org_id)
        .subquery()
    )


def comparison_windows(now: datetime, days: int) -> tuple[date, date, date]:
    """(start of the window before, start of the recent window, today): complete days only.

    Today is still filling up; comparing it with full days would show every morning
    as a drop, so both windows end before it.
    """
    today = as_utc(now).date()
    recent = today - timedelta(days=days)
    return recent - timedelta(days=days), recent, today


def period_volumes(org_ids: list[int], now: datetime, days: int) -> dict[int, tuple[int, int]]:
    """Per tenant: ENGAGE in the last ``days`` complete days and in the ``days`` before."""
    if not org_ids:
        return {}
    before_start, recent_start, today = comparison_windows(now, days)
    d = SignalDailyCount
    recent = func.sum(case((d.day >= recent_start, d.count), else_=0))
    before = func.sum(case((d.day < recent_start, d.count), else_=0))
    return {
        int(org_id): (int(r or 0), int(b or 0))
        for org_id, r, b in db.session.execute(
            select(d.org_id, recent, before)
            .where(
                d.org_id.in_(org_ids),
                d.kind == SignalKind.ENGAGE.value,
                d.day >= before_start,
                d.day < today,
            )
            .group_by(d.org_id)
        )
    }


def load(
    *,
    now: datetime,
    days: int,
    lookback_days: int | None = None,
    q: str = "",
    sort: Sort = Sort.NAME,
    page: int = 1,
    per_page: int = PER_PAGE,
) -> OverviewPage:
    """One page of tenants with their volume, daily chart, calibration count and last run."""
    q = q.strip()[:100]
    since, today = window(now, days)
    filters = _name_filter(q)
    total = db.session.execute(
        select(func.count()).select_from(Organization).where(*filters)
    ).scalar_one()
    pages = max(1, -(-total // per_page))
    page = min(max(page, 1), pages)

    last_id = last_run_id_column().label("last_run_id")
    stmt = select(
        Organization.id, Organization.slug, Organization.name, Organization.policy_enforced, last_id
    ).where(*filters)
    if sort is Sort.VOLUME:
        # Only this order needs every tenant's volume; the others read just the page's.
        volume = _volume_subquery(since)
        volume_col = func.coalesce(volume.c.volume, 0)
        stmt = stmt.outerjoin(volume, volume.c.org_id == Organization.id).order_by(
            volume_col.desc(), Organization.name, Organization.id
        )
    elif sort is Sort.LAST_RUN:
        stmt = stmt.order_by(func.coalesce(last_id, 0).desc(), Organization.name, Organization.id)
    else:
        stmt = stmt.order_by(Organization.name, Organization.id)
    base_rows = db.session.execute(stmt.limit(per_page).offset((page - 1) * per_page)).all()
    org_ids = [r.id for r in base_rows]

    daily: dict[int, dict[date, int]] = {oid: {} for oid in org_ids}
    calibrations: dict[int, int] = {}
    runs: dict[int, TuneRun] = {}
    if org_ids:
        for org_id, day, count in db.session.execute(
            select(SignalDailyCount.org_id, SignalDailyCount.day, func.sum(SignalDailyCount.count))
            .where(
                SignalDailyCount.org_id.in_(org_ids),
                SignalDailyCount.kind == SignalKind.ENGAGE.value,
                SignalDailyCount.day >= since,
            )
            .group_by(SignalDailyCount.org_id, SignalDailyCount.day)
        ):
            daily[org_id][day] = int(count)
        calibrations = {
            org_id: int(count)
            for org_id, count in db.session.execute(
                select(Calibration.org_id, func.count())
                .where(Calibration.org_id.in_(org_ids))
                .group_by(Calibration.org_id)
            )
        }
        run_ids = [r.last_run_id for r in base_rows if r.last_run_id is not None]
        if run_ids:
            runs = {
                run.org_id: run
                for run in db.session.execute(select(TuneRun).where(TuneRun.id.in_(run_ids)))
                .scalars()
                .all()
            }

    latest = select(func.max(TuneRun.id)).group_by(TuneRun.org_id)
    failed_count = db.session.execute(
        select(func.count())
        .select_from(TuneRun)
        .where(TuneRun.id.in_(latest), TuneRun.state == RunState.FAILED.value)
    ).scalar_one()

    digests = digest_counts(org_ids)
    periods = period_volumes(org_ids, now, days)
    day_list = [since + timedelta(days=i) for i in range(days)]
    rows = [
        TenantRow(
            org_id=r.id,
            slug=r.slug,
            name=r.name,
            volume=sum(daily[r.id].values()),
            daily=[daily[r.id].get(d, 0) for d in day_list],
            calibrations=calibrations.get(r.id, 0),
            last_run=runs.get(r.id),
            digests=digests.get(r.id, 0),
            enforced=bool(r.policy_enforced),
            recent=periods.get(r.id, (0, 0))[0],
            before=periods.get(r.id, (0, 0))[1],
        )
        for r in base_rows
    ]
    return OverviewPage(
        rows=rows,
        total=total,
        page=page,
        per_page=per_page,
        q=q,
        sort=sort,
        days=days,
        since=since,
        today=today,
        failed_count=int(failed_count),
        lookback_days=lookback_days or days,
    )
