"""One tune run's page read model: who, when, how it ended, and what it changed."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.exceptions import RedisError
from sqlalchemy import and_, func, select
from sqlalchemy.orm import joinedload

from dashboard.extensions import db
from dashboard.web import formatting
from dashboard.web.trends import HistoryEntry, entries
from loops.models import CalibrationHistory, TuneRun
from loops.redis_conn import get_redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """The delivery mode the run decided for one feature, and what it was before."""

    feature: str
    mode: str
    reason: str
    changed: bool
    before: str | None

    @property
    def text(self) -> str:
        if not self.changed:
            return f"stays {self.mode}"
        if self.before and self.before != self.mode:
            return f"{self.before} → {self.mode}"
        return f"starts {self.mode}"


@dataclass(frozen=True)
class JobInfo:
    """The RQ job that carried the run; ``alive`` is None when Redis cannot be asked."""

    id: str
    alive: bool | None


@dataclass(frozen=True)
class RunPage:
    run: TuneRun
    changes: list[HistoryEntry]
    decisions: list[Decision]
    previous_id: int | None
    next_id: int | None
    job: JobInfo | None

    @property
    def waited(self) -> str:
        return formatting.duration(self.run.enqueued_at, self.run.started_at)

    @property
    def took(self) -> str:
        return formatting.duration(self.run.started_at, self.run.finished_at)

    @property
    def significant(self) -> int:
        return sum(1 for c in self.changes if c.change is not None and c.change.significant)


def what_changed(run: TuneRun) -> tuple[list[HistoryEntry], list[Decision]]:
    """The values this run wrote, each against the tenant's value of that key before it."""
    h = CalibrationHistory
    written = list(
        db.session.execute(
            select(h).where(h.run_id == run.id, h.org_id == run.org_id).order_by(h.key)
        ).scalars()
    )
    if not written:
        return [], []
    at = min(row.computed_at for row in written)
    latest_before = (
        select(h.key, func.max(h.computed_at).label("at"))
        .where(h.org_id == run.org_id, h.key.in_([r.key for r in written]), h.computed_at < at)
        .group_by(h.key)
        .subquery()
    )
    before = {
        row.key: row
        for row in db.session.execute(
            select(h).join(
                latest_before,
                and_(
                    h.org_id == run.org_id,
                    h.key == latest_before.c.key,
                    h.computed_at == latest_before.c.at,
                ),
            )
        ).scalars()
    }
    pairs: list[CalibrationHistory] = []
    for row in written:
        if row.key in before:
            pairs.append(before[row.key])
        pairs.append(row)
    changes = [e for e in entries(pairs) if e.run_id == run.id]
    changes.sort(key=lambda e: (e.feature, e.kind))
    decisions = [
        Decision(
            feature=row.key.partition(":")[2],
            mode=row.mode,
            reason=row.mode_reason or "",
            changed=bool(row.mode_changed),
            before=before[row.key].mode if row.key in before else None,
        )
        for row in written
        if row.mode is not None
    ]
    decisions.sort(key=lambda d: d.feature)
    return changes, decisions


def job_info(job_id: str | None) -> JobInfo | None:
    """Whether the run's RQ job is still in Redis (rq-dashboard can show it only then)."""
    if not job_id:
        return None
    from rq.job import Job

    try:
        alive: bool | None = Job.exists(job_id, connection=get_redis())
    except (RedisError, OSError) as exc:
        log.warning("event=job_probe_failed job=%s error=%s", job_id, type(exc).__name__)
        alive = None
    return JobInfo(job_id, alive)


def load(run_id: int, *, with_job: bool) -> RunPage | None:
    run = db.session.execute(
        select(TuneRun).options(joinedload(TuneRun.organization)).where(TuneRun.id == run_id)
    ).scalar_one_or_none()
    if run is None:
        return None
    changes, decisions = what_changed(run)
    neighbours = db.session.execute(
        select(
            select(func.max(TuneRun.id))
            .where(TuneRun.org_id == run.org_id, TuneRun.id < run.id)
            .scalar_subquery(),
            select(func.min(TuneRun.id))
            .where(TuneRun.org_id == run.org_id, TuneRun.id > run.id)
            .scalar_subquery(),
        )
    ).one()
    return RunPage(
        run=run,
        changes=changes,
        decisions=decisions,
        previous_id=neighbours[0],
        next_id=neighbours[1],
        job=job_info(run.rq_job_id) if with_job else None,
    )
