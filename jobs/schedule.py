"""The weekly schedule on rq-scheduler: reconciled at start, read by the dashboard, kept alive."""

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


def schedule_job_id(cron: str, queue_name: str) -> str:
    """Derived from the job's definition: a changed cron is a different job id."""
    digest = hashlib.sha1(
        f"{constants.SCHEDULED_FUNC}|{cron.strip()}|{queue_name}".encode()
    ).hexdigest()[:12]
    return f"{constants.SCHEDULE_JOB_PREFIX}tune-engagement-{digest}"


def next_cron_time(cron: str, after: datetime) -> datetime:
    """The first time after ``after`` that ``cron`` (read as UTC) fires."""
    try:
        tab = crontab.CronTab(cron)
    except ValueError as exc:
        raise InvalidSchedule(f"TUNE_ENGAGEMENT_CRON is not a valid cron string: {cron!r}") from exc
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

    def __str__(self) -> str:
        what = "added" if self.added else "unchanged"
        gone = f"; removed {', '.join(self.removed)}" if self.removed else ""
        return (
            f"schedule {what}: tune-engagement cron={self.cron!r} (UTC) job={self.job_id} "
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


def _add(redis: Redis, cron: str, queue_name: str, job_id: str, now: datetime) -> datetime:
    scheduler = Scheduler(queue_name=queue_name, connection=redis)
    scheduler.cron(
        cron,
        func=constants.SCHEDULED_FUNC,
        id=job_id,
        queue_name=queue_name,
        # Never expire: a periodic job whose result TTL ends drops out of the
        # schedule (rq-scheduler issue #42).
        result_ttl=-1,
        timeout=SCHEDULED_JOB_TIMEOUT_S,
        description=f"tune-engagement weekly fan-out ({cron} UTC)",
        use_local_timezone=False,
    )
    # rq-scheduler computes the first time in the process's local time; set it
    # from UTC ourselves so registration is right whatever TZ this process has.
    first = next_cron_time(cron, now)
    redis.zadd(SCHEDULED_JOBS_KEY, {job_id: calendar.timegm(first.utctimetuple())})
    return first


def reconcile(redis: Redis, cron: str, queue_name: str, now: datetime | None = None) -> Reconciled:
    """Make the schedule hold exactly one weekly job, for ``cron``.

    Adds it if missing, keeps it if unchanged, replaces it if the cron changed and
    removes any other job of ours. Under a Redis lock, so schedulers starting
    together agree. Other apps' schedules in the same Redis are left alone.
    """
    validate_cron(cron)
    now = now or utcnow()
    want = schedule_job_id(cron, queue_name)
    with redis.lock(constants.SCHEDULE_RECONCILE_LOCK, timeout=30, blocking_timeout=30):
        ours = _our_scheduled(redis)
        removed = []
        for job_id in ours:
            if job_id != want:
                redis.zrem(SCHEDULED_JOBS_KEY, job_id)
                redis.delete(Job.key_for(job_id))
                removed.append(job_id)
        if want in ours and Job.exists(want, connection=redis):
            result = Reconciled(
                want, cron, datetime.fromtimestamp(ours[want], UTC), added=False, removed=removed
            )
        else:
            first = _add(redis, cron, queue_name, want, now)
            result = Reconciled(want, cron, first, added=True, removed=removed)
    log.info(
        "event=schedule_reconciled job=%s cron=%r added=%s removed=%d next=%s",
        want,
        cron,
        result.added,
        len(removed),
        result.next_run.isoformat(),
    )
    return result


def scheduled_jobs(redis: Redis) -> list[tuple[str, datetime, str | None]]:
    """Our scheduled jobs: (job id, next run, cron string)."""
    out = []
    for job_id, score in _our_scheduled(redis).items():
        job = Job.fetch_many([job_id], connection=redis)[0]
        cron = job.meta.get("cron_string") if job else None
        out.append((job_id, datetime.fromtimestamp(score, UTC), cron))
    return out


def next_scheduled_run(redis: Redis) -> datetime | None:
    """When the weekly job fires next (UTC), or None if unscheduled or Redis is down."""
    try:
        times = list(_our_scheduled(redis).values())
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
        want = schedule_job_id(self.cron_string, self.queue_name)
        if self.connection.zscore(SCHEDULED_JOBS_KEY, want) is None:
            log.warning("event=schedule_missing job=%s action=re-add", want)
            _add(self.connection, self.cron_string, self.queue_name, want, utcnow())
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
