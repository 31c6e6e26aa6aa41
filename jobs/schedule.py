"""Periodic jobs on rq-scheduler: declared in one list, reconciled at start, kept alive.

The weekly tune (TUNE_ENGAGEMENT_CRON), the hourly digest and the daily signal
maintenance. Each job's id is derived
from its definition, so reconciling adds what is missing, keeps what is unchanged and
cancels what is stale (a changed cron is a new id); any number of schedulers may
start at once.
"""

from __future__ import annotations

import calendar
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import crontab
from flask import Flask
from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job
from rq_scheduler import Scheduler

from jobs import constants
from jobs.exceptions import InvalidSchedule
from loops.timeutil import utcnow

log = logging.getLogger(__name__)

SCHEDULED_JOBS_KEY: str = Scheduler.scheduled_jobs_key
SCHEDULED_JOB_TIMEOUT_S = 600


@dataclass(frozen=True)
class Periodic:
    """One periodic job: what runs, when (cron, UTC), and the setting that says so."""

    name: str
    func: str
    cron: str
    description: str
    timeout_s: int = SCHEDULED_JOB_TIMEOUT_S
    setting: str | None = None

    def job_id(self, queue_name: str) -> str:
        """Derived from the job's definition: a changed cron is a different job id."""
        digest = hashlib.sha1(f"{self.func}|{self.cron.strip()}|{queue_name}".encode()).hexdigest()
        return f"{constants.SCHEDULE_JOB_PREFIX}{self.name}-{digest[:12]}"


TUNE = "tune-engagement"
DIGEST = "digest"
MAINTENANCE = "maintenance"


def periodic_jobs(tune_cron: str) -> list[Periodic]:
    """Every periodic job of the app; the first is the weekly tune."""
    return [
        Periodic(
            TUNE,
            constants.SCHEDULED_FUNC,
            tune_cron,
            f"tune-engagement weekly fan-out ({tune_cron} UTC)",
            setting="TUNE_ENGAGEMENT_CRON",
        ),
        Periodic(
            DIGEST,
            constants.DIGEST_FUNC,
            constants.DIGEST_CRON,
            f"deliver due digests ({constants.DIGEST_CRON} UTC)",
        ),
        Periodic(
            MAINTENANCE,
            constants.MAINTENANCE_FUNC,
            constants.MAINTENANCE_CRON,
            f"prune old signals, create partitions ahead ({constants.MAINTENANCE_CRON} UTC)",
            timeout_s=constants.MAINTENANCE_TIMEOUT_S,
        ),
    ]


def schedule_job_id(cron: str, queue_name: str) -> str:
    """The weekly tune's scheduled job id for this cron and queue."""
    return periodic_jobs(cron)[0].job_id(queue_name)


def next_cron_time(cron: str, after: datetime, setting: str = "TUNE_ENGAGEMENT_CRON") -> datetime:
    """The first time after ``after`` that ``cron`` (read as UTC) fires."""
    try:
        tab = crontab.CronTab(cron)
    except ValueError as exc:
        raise InvalidSchedule(f"{setting} is not a valid cron string: {cron!r}") from exc
    nxt = tab.next(now=after.astimezone(UTC), return_datetime=True)
    assert isinstance(nxt, datetime)
    return nxt.astimezone(UTC)


def validate_cron(cron: str) -> None:
    next_cron_time(cron, utcnow())


@dataclass
class Reconciled:
    job_id: str
    cron: str
    next_run: datetime
    added: bool
    removed: list[str] = field(default_factory=list)
    name: str = TUNE

    def __str__(self) -> str:
        what = "added" if self.added else "unchanged"
        gone = f"; removed {', '.join(self.removed)}" if self.removed else ""
        return (
            f"schedule {what}: {self.name} cron={self.cron!r} (UTC) job={self.job_id} "
            f"next={self.next_run.isoformat()}{gone}"
        )


def _our_scheduled(redis: Redis) -> dict[str, float]:
    entries = redis.zrange(SCHEDULED_JOBS_KEY, 0, -1, withscores=True)
    out: dict[str, float] = {}
    for raw, score in entries:
        job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        if job_id.startswith(constants.SCHEDULE_JOB_PREFIX):
            out[job_id] = float(score)
    return out


def _add(redis: Redis, job: Periodic, queue_name: str, now: datetime) -> datetime:
    job_id = job.job_id(queue_name)
    scheduler = Scheduler(queue_name=queue_name, connection=redis)
    scheduler.cron(
        job.cron,
        func=job.func,
        id=job_id,
        queue_name=queue_name,
        # Never expire: a periodic job whose result TTL ends drops out of the
        # schedule (rq-scheduler issue #42).
        result_ttl=-1,
        timeout=job.timeout_s,
        description=job.description,
        use_local_timezone=False,
    )
    # rq-scheduler computes the first time in the process's local time; set it
    # from UTC ourselves so registration is right whatever TZ this process has.
    first = next_cron_time(job.cron, now, job.setting or job.name)
    redis.zadd(SCHEDULED_JOBS_KEY, {job_id: calendar.timegm(first.utctimetuple())})
    return first


def reconcile_all(
    redis: Redis, jobs: list[Periodic], queue_name: str, now: datetime | None = None
) -> list[Reconciled]:
    """Make the schedule hold exactly ``jobs``, one entry each.

    Adds each if missing, keeps it if unchanged, replaces it if its cron changed and
    removes any other job of ours. Under a Redis lock, so schedulers starting
    together agree. Other apps' schedules in the same Redis are left alone.
    """
    for job in jobs:
        next_cron_time(job.cron, utcnow(), job.setting or job.name)
    now = now or utcnow()
    wanted = {job.job_id(queue_name): job for job in jobs}
    results = []
    with redis.lock(constants.SCHEDULE_RECONCILE_LOCK, timeout=30, blocking_timeout=30):
        ours = _our_scheduled(redis)
        removed: dict[str, list[str]] = {}
        for job_id in ours:
            if job_id not in wanted:
                redis.zrem(SCHEDULED_JOBS_KEY, job_id)
                redis.delete(Job.key_for(job_id))
                owner = next((j.name for j in jobs if job_id.startswith(_prefix(j))), "")
                removed.setdefault(owner, []).append(job_id)
        for job_id, job in wanted.items():
            gone = removed.get(job.name, [])
            if job_id in ours and Job.exists(job_id, connection=redis):
                at = datetime.fromtimestamp(ours[job_id], UTC)
                results.append(Reconciled(job_id, job.cron, at, False, gone, job.name))
            else:
                first = _add(redis, job, queue_name, now)
                results.append(Reconciled(job_id, job.cron, first, True, gone, job.name))
    for r in results:
        log.info(
            "event=schedule_reconciled name=%s job=%s cron=%r added=%s removed=%d next=%s",
            r.name,
            r.job_id,
            r.cron,
            r.added,
            len(r.removed),
            r.next_run.isoformat(),
        )
    return results


def _prefix(job: Periodic) -> str:
    return f"{constants.SCHEDULE_JOB_PREFIX}{job.name}-"


def reconcile(redis: Redis, cron: str, queue_name: str, now: datetime | None = None) -> Reconciled:
    """Reconcile every periodic job for this tune cron; the weekly tune's outcome."""
    return reconcile_all(redis, periodic_jobs(cron), queue_name, now)[0]


def scheduled_jobs(redis: Redis, name: str | None = None) -> list[tuple[str, datetime, str | None]]:
    """Our scheduled jobs (only ``name``'s when given): (job id, next run, cron string)."""
    out = []
    for job_id, score in _our_scheduled(redis).items():
        if name is not None and not job_id.startswith(f"{constants.SCHEDULE_JOB_PREFIX}{name}-"):
            continue
        job = Job.fetch_many([job_id], connection=redis)[0]
        cron = job.meta.get("cron_string") if job else None
        out.append((job_id, datetime.fromtimestamp(score, UTC), cron))
    return out


def next_scheduled_run(redis: Redis, name: str = TUNE) -> datetime | None:
    """When the tune (or ``name``) fires next (UTC); None if unscheduled or Redis is down."""
    prefix = f"{constants.SCHEDULE_JOB_PREFIX}{name}-"
    try:
        times = [t for job_id, t in _our_scheduled(redis).items() if job_id.startswith(prefix)]
    except (RedisError, OSError):
        return None
    return datetime.fromtimestamp(min(times), UTC) if times else None


def scheduler_alive(redis: Redis) -> bool:
    """True while some `rq scheduler` process keeps its heartbeat key fresh."""
    try:
        return bool(redis.exists(constants.SCHEDULER_HEARTBEAT_KEY))
    except (RedisError, OSError):
        return False


class AppScheduler(Scheduler):
    """rq-scheduler plus our liveness key, schedule self-healing and the abandoned-run sweep."""

    def __init__(self, *args: Any, app: Flask, cron: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = app
        self.cron_string = cron

    def heartbeat(self) -> None:
        super().heartbeat()
        self.connection.set(
            constants.SCHEDULER_HEARTBEAT_KEY, self.name, ex=int(self._interval) * 2 + 10
        )

    def enqueue_jobs(self) -> Any:
        # Runs under rq-scheduler's lock, so with several schedulers one does this.
        jobs = super().enqueue_jobs()
        for periodic in periodic_jobs(self.cron_string):
            want = periodic.job_id(self.queue_name)
            if self.connection.zscore(SCHEDULED_JOBS_KEY, want) is None:
                log.warning("event=schedule_missing job=%s action=re-add", want)
                _add(self.connection, periodic, self.queue_name, utcnow())
        from jobs.runs import sweep_abandoned

        with self.app.app_context():
            try:
                sweep_abandoned(utcnow())
            except Exception:
                log.exception("event=sweep_failed where=scheduler")
        return jobs

    def register_death(self) -> None:
        super().register_death()
        try:
            if self.connection.get(constants.SCHEDULER_HEARTBEAT_KEY) == self.name.encode():
                self.connection.delete(constants.SCHEDULER_HEARTBEAT_KEY)
        except (RedisError, OSError):
            pass
