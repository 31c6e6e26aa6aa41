"""Tune runs: request (de-duplicated enqueue), status, and sweeping abandoned runs."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import RedisError
from rq.job import Job, JobStatus
from sqlalchemy import delete, func, select, update

from jobs import constants, settings
from jobs.exceptions import QueueUnavailable
from jobs.job_plan import plan_jobs
from jobs.queue import get_queue
from loops.database import db, dialect_insert
from loops.models import (
    ACTIVE_RUN_STATES,
    Calibration,
    Organization,
    RunState,
    RunTrigger,
    TuneRun,
)
from loops.redis_conn import get_redis, redis_up
from loops.timeutil import as_utc, iso, utcnow

if TYPE_CHECKING:
    from jobs.tune_engagement import TenantResult

log = logging.getLogger(__name__)

# What the dashboard, the CLI and the scheduler's logs say when Redis refuses a run.
QUEUE_DOWN_MESSAGE = (
    "Could not queue the run: Redis (the job queue) is unreachable. Nothing was started; "
    "try again when Redis is back."
)

T = TypeVar("T")


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _existing_org_ids(org_ids: Iterable[int] | None) -> list[int]:
    """The requested tenants that exist, in request order (all tenants, by id, for None)."""
    if org_ids is None:
        return list(db.session.execute(select(Organization.id).order_by(Organization.id)).scalars())
    wanted = list(dict.fromkeys(int(o) for o in org_ids))
    found: set[int] = set()
    for chunk in _chunks(wanted, 500):
        found.update(
            db.session.execute(select(Organization.id).where(Organization.id.in_(chunk))).scalars()
        )
    return [o for o in wanted if o in found]


def _insert_ignoring_conflicts() -> Any:
    # The partial unique index uq_tune_runs_one_active_per_org refuses a second
    # queued/running run for a tenant; DO NOTHING turns that refusal into "skip",
    # which is exactly the de-duplication we want, race-free across processes.
    return dialect_insert(TuneRun.__table__).on_conflict_do_nothing()


def _active_runs_by_org(org_ids: Sequence[int]) -> dict[int, TuneRun]:
    runs: dict[int, TuneRun] = {}
    for chunk in _chunks(org_ids, 500):
        for run in db.session.execute(
            select(TuneRun)
            .where(TuneRun.org_id.in_(chunk), TuneRun.state.in_(ACTIVE_RUN_STATES))
            .execution_options(populate_existing=True)
        ).scalars():
            runs[run.org_id] = run
    return runs


def _latest_runs_by_org(org_ids: Sequence[int]) -> dict[int, TuneRun]:
    runs: dict[int, TuneRun] = {}
    for chunk in _chunks(org_ids, 500):
        latest = (
            select(func.max(TuneRun.id)).where(TuneRun.org_id.in_(chunk)).group_by(TuneRun.org_id)
        )
        for run in db.session.execute(select(TuneRun).where(TuneRun.id.in_(latest))).scalars():
            runs[run.org_id] = run
    return runs


def create_queued_runs(
    org_ids: Iterable[int] | None,
    *,
    trigger: RunTrigger,
    requested_by: str | None,
    now: datetime,
) -> tuple[list[TuneRun], list[int]]:
    """Insert a ``queued`` run for each tenant that has no active run; commit.

    Returns (one run per tenant — the new one or the already-active one — in
    request order, ids of the runs created now).
    """
    targets = _existing_org_ids(org_ids)
    # Skip tenants known to be active up front (PostgreSQL spends a sequence value
    # on every conflicting row); DO NOTHING still settles races with other requests.
    busy = _active_runs_by_org(targets)
    created: list[int] = []
    for chunk in _chunks([o for o in targets if o not in busy], 500):
        rows = [
            {
                "org_id": org_id,
                "trigger": trigger.value,
                "requested_by": requested_by,
                "state": RunState.QUEUED.value,
                "enqueued_at": now,
                "calibrations_written": 0,
            }
            for org_id in chunk
        ]
        # A list of rows (SQLAlchemy batches them into multi-row VALUES itself): the
        # statement is compiled once, where .values(rows) compiled 3,000 parameters anew.
        result = db.session.execute(_insert_ignoring_conflicts().returning(TuneRun.id), rows)
        created.extend(int(run_id) for run_id in result.scalars())
    db.session.commit()
    by_org = _active_runs_by_org(targets)
    missing = [o for o in targets if o not in by_org]
    if missing:
        # An active run finished between our insert and this read: report it.
        by_org.update(_latest_runs_by_org(missing))
    return [by_org[o] for o in targets if o in by_org], sorted(created)


def _expected_signals(run_ids: Sequence[int]) -> dict[int, int]:
    """Run id -> the signals its tenant's last run counted (0 for a tenant never tuned).

    The sample sizes of its stored calibrations: the ENGAGE and DELIVER signals of the
    last window, which is the best cheap guess of this window's (one indexed read of
    the calibrations, not a count of the signals).
    """
    volumes: dict[int, int] = {}
    for chunk in _chunks(run_ids, 500):
        for run_id, signals in db.session.execute(
            select(TuneRun.id, func.coalesce(func.sum(Calibration.sample_size), 0))
            .join(Calibration, Calibration.org_id == TuneRun.org_id)
            .where(TuneRun.id.in_(chunk))
            .group_by(TuneRun.id)
        ):
            volumes[int(run_id)] = int(signals)
    return volumes


def _job_batches(run_ids: Sequence[int]) -> list[tuple[str, list[int]]]:
    """The RQ jobs for these runs, heaviest first: (job id, run ids) each (jobs/job_plan.py)."""
    size = settings.batch_size()
    volumes = _expected_signals(run_ids) if len(run_ids) > 1 else {}
    jobs = plan_jobs(run_ids, volumes, max_tenants=size, max_signals=settings.batch_signals())
    return [(f"{constants.RUN_JOB_PREFIX}{job.run_ids[0]}", list(job.run_ids)) for job in jobs]


def _discard_unenqueued(run_ids: Sequence[int]) -> None:
    for chunk in _chunks(run_ids, 500):
        db.session.execute(
            delete(TuneRun).where(TuneRun.id.in_(chunk), TuneRun.state == RunState.QUEUED.value)
        )
    db.session.commit()


def request_runs(
    org_ids: list[int] | None, *, trigger: RunTrigger, requested_by: str | None
) -> list[TuneRun]:
    """Run now: one run per tenant (None = all), de-duplicated against active runs.

    For a tenant with a queued or running run, that run is returned and nothing is
    started; otherwise a ``queued`` run is created and its RQ job enqueued.
    Raises QueueUnavailable when Redis is down — and then no new run is left behind.
    """
    redis = get_redis()
    if not redis_up(redis):
        raise QueueUnavailable(QUEUE_DOWN_MESSAGE)
    now = utcnow()
    # A run whose worker died must not block the new request for its tenant.
    sweep_abandoned(now)
    runs, created = create_queued_runs(org_ids, trigger=trigger, requested_by=requested_by, now=now)
    if not created:
        return runs
    # The runs' ids now, while loaded: the commit below expires them.
    run_ids = [run.id for run in runs]
    batches = _job_batches(created)
    for job_id, ids in batches:
        db.session.execute(
            update(TuneRun)
            .where(TuneRun.id.in_(ids))
            .values(rq_job_id=job_id)
            .execution_options(synchronize_session=False)
        )
    db.session.commit()
    queue = get_queue(redis)
    try:
        with redis.pipeline() as pipe:
            for job_id, ids in batches:
                queue.enqueue_call(
                    constants.PERFORM_RUNS_FUNC,
                    args=(ids,),
                    job_id=job_id,
                    timeout=settings.job_timeout_s() * len(ids),
                    result_ttl=constants.RUN_JOB_RESULT_TTL,
                    failure_ttl=constants.RUN_JOB_FAILURE_TTL,
                    description=f"tune-engagement: {len(ids)} tenant(s), first run {ids[0]}",
                    pipeline=pipe,
                )
            pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("event=enqueue_failed runs=%d error=%s", len(created), type(exc).__name__)
        _discard_unenqueued(created)
        raise QueueUnavailable(QUEUE_DOWN_MESSAGE) from exc
    log.info(
        "event=runs_enqueued trigger=%s requested_by=%s runs=%d jobs=%d already_active=%d",
        trigger.value,
        requested_by,
        len(created),
        len(batches),
        len(runs) - len(created),
    )
    _reload(run_ids)
    return runs


def _reload(run_ids: Sequence[int]) -> None:
    """Read these runs back (their job ids, and what a quick worker changed already).

    One query per 500 runs, not one per run: "all tenants" is a thousand of them,
    and the workers are already working beside this request.
    """
    for chunk in _chunks(run_ids, 500):
        db.session.execute(
            select(TuneRun).where(TuneRun.id.in_(chunk)).execution_options(populate_existing=True)
        ).scalars().all()


def request_failed_reruns(*, requested_by: str | None) -> list[TuneRun]:
    """Re-run only the tenants whose latest finished run failed.

    A tenant already being re-run (its failed run followed by an active one) gets
    that active run back, as with any repeated request.
    """
    latest = (
        select(func.max(TuneRun.id))
        .where(TuneRun.state.not_in(ACTIVE_RUN_STATES))
        .group_by(TuneRun.org_id)
    )
    org_ids = list(
        db.session.execute(
            select(TuneRun.org_id)
            .where(TuneRun.id.in_(latest), TuneRun.state == RunState.FAILED.value)
            .order_by(TuneRun.org_id)
        ).scalars()
    )
    if not org_ids:
        return []
    return request_runs(org_ids, trigger=RunTrigger.MANUAL, requested_by=requested_by)


def _fail(run_ids: Sequence[int], reason: str, now: datetime, *conditions: Any) -> list[int]:
    failed: list[int] = []
    for chunk in _chunks(run_ids, 500):
        result = db.session.execute(
            update(TuneRun)
            .where(TuneRun.id.in_(chunk), TuneRun.state.in_(ACTIVE_RUN_STATES), *conditions)
            .values(state=RunState.FAILED.value, error=reason, finished_at=now)
            .returning(TuneRun.id)
            .execution_options(synchronize_session=False)
        )
        failed.extend(int(i) for i in result.scalars())
    return failed


def _job_verdict(job: Job | None, stale_before: datetime) -> str | None:
    """Why a queued run with this RQ job is abandoned, or None if it may still run."""
    if job is None:
        return "abandoned: its queue job vanished from Redis"
    status = job.get_status(refresh=False)
    if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
        return f"abandoned: its queue job ended as {status.value} before running it"
    if status == JobStatus.FINISHED:
        return "abandoned: its queue job finished without running it"
    if status == JobStatus.STARTED:
        started = job.started_at
        if started is not None and as_utc(started) < stale_before:
            return "abandoned: a worker took its job but never reported progress"
    return None


def sweep_abandoned(now: datetime) -> int:
    """Mark runs whose worker died (stale heartbeat) or whose job vanished as failed.

    Cheap when nothing is wrong: one indexed SELECT on the (few) active runs and no
    write. Safe to call from every status poll, worker and scheduler at once: each
    UPDATE re-checks its condition, so a run that just beat is never failed.
    """
    stale_before = now - timedelta(seconds=settings.stale_after_s())
    candidates = db.session.execute(
        select(TuneRun.id, TuneRun.heartbeat_at, TuneRun.rq_job_id).where(
            TuneRun.state.in_(ACTIVE_RUN_STATES),
            (TuneRun.heartbeat_at < stale_before)
            | (TuneRun.heartbeat_at.is_(None) & (TuneRun.enqueued_at < stale_before)),
        )
    ).all()
    if not candidates:
        db.session.rollback()
        return 0
    failed: list[int] = []
    lapsed = [c.id for c in candidates if c.heartbeat_at is not None]
    if lapsed:
        failed += _fail(
            lapsed,
            f"abandoned: no heartbeat for over {settings.stale_after_s():g} s — "
            "its worker died or was killed",
            now,
            TuneRun.heartbeat_at < stale_before,
        )
    silent = [c for c in candidates if c.heartbeat_at is None]
    verdicts: dict[str, list[int]] = {}
    never_enqueued = [c.id for c in silent if not c.rq_job_id]
    if never_enqueued:
        verdicts["abandoned: it was never handed to the job queue"] = never_enqueued
    job_ids = sorted({c.rq_job_id for c in silent if c.rq_job_id})
    if job_ids:
        try:
            jobs = Job.fetch_many(job_ids, connection=get_redis())
        except (RedisError, OSError):
            jobs = None  # Redis down: we cannot tell, so we do not judge.
        if jobs is not None:
            verdict_of = {
                job_id: _job_verdict(job, stale_before)
                for job_id, job in zip(job_ids, jobs, strict=True)
            }
            for c in silent:
                reason = verdict_of.get(c.rq_job_id or "")
                if reason:
                    verdicts.setdefault(reason, []).append(c.id)
    for reason, ids in verdicts.items():
        failed += _fail(ids, reason, now, TuneRun.heartbeat_at.is_(None))
    db.session.commit()
    for run_id in failed:
        log.warning("event=run_abandoned run=%s at=%s", run_id, iso(now))
    return len(failed)


def enqueue_scheduled_runs() -> int:
    """The weekly job (run by a worker when the schedule fires): fan out all tenants."""
    runs = request_runs(None, trigger=RunTrigger.SCHEDULE, requested_by="schedule")
    log.info("event=scheduled_fanout tenants=%d", len(runs))
    return len(runs)


def run_in_process(
    org_ids: list[int] | None,
    *,
    trigger: RunTrigger,
    requested_by: str | None,
    now: datetime | None = None,
) -> tuple[list[TenantResult], list[TuneRun]]:
    """Tune tenants right here, without Redis (``tune run --wait``, ``demo seed``).

    De-duplicated like request_runs. Returns (results of the runs started here,
    runs that were already active elsewhere and were left alone).
    """
    from jobs.tune_engagement import perform_runs_now

    now = now or utcnow()
    sweep_abandoned(utcnow())
    runs, created = create_queued_runs(
        org_ids, trigger=trigger, requested_by=requested_by, now=utcnow()
    )
    created_set = set(created)
    others = [r for r in runs if r.id not in created_set]
    results = perform_runs_now(created, now=now)
    return results, others
