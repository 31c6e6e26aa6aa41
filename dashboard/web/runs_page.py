"""Run lists for the runs page and the live status partial (tenant names joined, no N+1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from dashboard.extensions import db
from loops.models import ACTIVE_RUN_STATES, RunState, TuneRun

RUNS_PER_PAGE = 50
STATUS_LIMIT = 50


@dataclass(frozen=True)
class RunsPage:
    runs: list[TuneRun]
    state: str
    before: int | None
    next_before: int | None


def parse_state(raw: str | None) -> str:
    return raw if raw in {s.value for s in RunState} else ""


def recent(state: str = "", before: int | None = None, limit: int = RUNS_PER_PAGE) -> RunsPage:
    stmt = select(TuneRun).options(joinedload(TuneRun.organization)).order_by(TuneRun.id.desc())
    if state:
        stmt = stmt.where(TuneRun.state == state)
    if before:
        stmt = stmt.where(TuneRun.id < before)
    runs = list(db.session.execute(stmt.limit(limit + 1)).scalars().all())
    more = len(runs) > limit
    runs = runs[:limit]
    return RunsPage(runs, state, before, runs[-1].id if more and runs else None)


def first_active_id(org_id: int | None = None) -> int | None:
    """The oldest queued or running run (its id starts the status panel), if any."""
    stmt = select(func.min(TuneRun.id)).where(TuneRun.state.in_(ACTIVE_RUN_STATES))
    if org_id is not None:
        stmt = stmt.where(TuneRun.org_id == org_id)
    return db.session.execute(stmt).scalar_one_or_none()


def last_runs(org_ids: Sequence[int]) -> dict[int, TuneRun]:
    """The latest run of each tenant in ``org_ids`` (index probes on tune_runs (org_id, id))."""
    if not org_ids:
        return {}
    latest = (
        select(func.max(TuneRun.id))
        .where(TuneRun.org_id.in_(list(org_ids)))
        .group_by(TuneRun.org_id)
    )
    return {
        run.org_id: run
        for run in db.session.execute(select(TuneRun).where(TuneRun.id.in_(latest))).scalars()
    }


@dataclass(frozen=True)
class StatusPanel:
    """What one "Run now" click (or the page's active runs) looks like right now."""

    first_id: int | None
    org_id: int | None
    runs: list[TuneRun]
    counts: dict[str, int]
    cells: dict[int, TuneRun] = field(default_factory=dict)
    error: str | None = None

    @property
    def active(self) -> bool:
        return any(self.counts.get(s, 0) for s in ACTIVE_RUN_STATES)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def status(
    first_id: int | None, org_id: int | None = None, cells: Sequence[int] = ()
) -> StatusPanel:
    """Runs from ``first_id`` on (a click's batch and anything after it), newest first."""
    if first_id is None:
        return StatusPanel(None, org_id, [], {}, last_runs(cells))
    where = [TuneRun.id >= first_id]
    if org_id is not None:
        where.append(TuneRun.org_id == org_id)
    counts = {
        state: int(n)
        for state, n in db.session.execute(
            select(TuneRun.state, func.count()).where(*where).group_by(TuneRun.state)
        )
    }
    runs = list(
        db.session.execute(
            select(TuneRun)
            .options(joinedload(TuneRun.organization))
            .where(*where)
            .order_by(TuneRun.id.desc())
            .limit(STATUS_LIMIT)
        )
        .scalars()
        .all()
    )
    return StatusPanel(first_id, org_id, runs, counts, last_runs(cells))
