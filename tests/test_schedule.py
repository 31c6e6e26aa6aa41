"""The weekly schedule on real Redis: idempotent registration, cron changes, firing, liveness."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta

import pytest
from redis import Redis
from rq.job import Job
from rq_scheduler import Scheduler
from sqlalchemy import select

from jobs.exceptions import InvalidSchedule
from jobs.schedule import (
    DIGEST,
    MAINTENANCE,
    SCHEDULED_JOBS_KEY,
    TUNE,
    AppScheduler,
    next_cron_time,
    next_scheduled_run,
    periodic_jobs,
    reconcile,
    reconcile_all,
    schedule_job_id,
    scheduled_jobs,
    scheduler_alive,
)
from loops.database import db
from loops.models import TuneRun
from tests.support.jobs import NOW, proc_output, work_burst

WEEKLY = "30 5 * * 1"
QUEUE = "engagement"
DIGEST_ID = periodic_jobs(WEEKLY)[1].job_id(QUEUE)
MAINTENANCE_ID = periodic_jobs(WEEKLY)[2].job_id(QUEUE)
DOWN = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)


def test_registering_twice_leaves_one_job_that_never_expires(app, redis_conn) -> None:
    first = reconcile(redis_conn, WEEKLY, QUEUE, now=NOW)
    second = reconcile(redis_conn, WEEKLY, QUEUE, now=NOW)
    assert first.added and not second.added
    [(job_id, next_run, cron)] = scheduled_jobs(redis_conn, TUNE)
    assert job_id == first.job_id == schedule_job_id(WEEKLY, QUEUE)
    assert cron == WEEKLY
    # NOW is Monday 2026-11-23 12:00 UTC: the next firing is the Monday after, 05:30 UTC.
    assert next_run == datetime(2026, 11, 30, 5, 30, tzinfo=UTC)
    job = Job.fetch(job_id, connection=redis_conn)
    assert job.result_ttl == -1  # rq-scheduler issue #42: must never expire
    assert job.func_name == "jobs.runs.enqueue_scheduled_runs"
    assert job.origin == QUEUE


def test_a_changed_cron_replaces_the_job(app, redis_conn) -> None:
    old = reconcile(redis_conn, WEEKLY, QUEUE, now=NOW)
    new = reconcile(redis_conn, "0 6 * * 2", QUEUE, now=NOW)
    assert new.added and new.removed == [old.job_id]
    [(job_id, next_run, cron)] = scheduled_jobs(redis_conn, TUNE)
    assert (job_id, cron) == (new.job_id, "0 6 * * 2")
    assert next_run == datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    assert not Job.exists(old.job_id, connection=redis_conn)


def test_other_apps_schedules_are_left_alone(app, redis_conn) -> None:
    Scheduler(queue_name="other", connection=redis_conn).cron(
        "* * * * *", func="os.getcwd", id="someone-elses-job"
    )
    reconcile(redis_conn, WEEKLY, QUEUE, now=NOW)
    reconcile(redis_conn, "0 6 * * 2", QUEUE, now=NOW)
    ids = {m.decode() for m in redis_conn.zrange(SCHEDULED_JOBS_KEY, 0, -1)}
    assert ids == {
        "someone-elses-job",
        schedule_job_id("0 6 * * 2", QUEUE),
        DIGEST_ID,
        MAINTENANCE_ID,
    }


def test_a_missing_job_record_is_re_added(app, redis_conn) -> None:
    first = reconcile(redis_conn, WEEKLY, QUEUE, now=NOW)
    redis_conn.delete(Job.key_for(first.job_id))
    assert reconcile(redis_conn, WEEKLY, QUEUE, now=NOW).added
    assert len(scheduled_jobs(redis_conn, TUNE)) == 1


def test_an_invalid_cron_is_refused(app, redis_conn) -> None:
    with pytest.raises(InvalidSchedule, match="TUNE_ENGAGEMENT_CRON"):
        reconcile(redis_conn, "every monday", QUEUE)
    assert redis_conn.zcard(SCHEDULED_JOBS_KEY) == 0


def test_cron_is_read_in_utc() -> None:
    after = datetime(2026, 11, 23, 5, 29, tzinfo=UTC)
    assert next_cron_time(WEEKLY, after) == datetime(2026, 11, 23, 5, 30, tzinfo=UTC)
    tokyo_evening = datetime(2026, 11, 23, 5, 31, tzinfo=UTC).astimezone()
    assert next_cron_time(WEEKLY, tokyo_evening) == datetime(2026, 11, 30, 5, 30, tzinfo=UTC)


def test_next_scheduled_run_for_the_dashboard(app, redis_conn) -> None:
    assert next_scheduled_run(redis_conn) is None
    result = reconcile(redis_conn, WEEKLY, QUEUE, now=NOW)
    assert next_scheduled_run(redis_conn) == result.next_run
    assert next_scheduled_run(DOWN) is None


def test_scheduler_liveness_follows_its_heartbeat(app, redis_conn) -> None:
    assert not scheduler_alive(redis_conn)
    scheduler = AppScheduler(
        queue_name=QUEUE, connection=redis_conn, interval=5, app=app, cron=WEEKLY
    )
    scheduler.register_birth()
    scheduler.heartbeat()
    assert scheduler_alive(redis_conn)
    assert 0 < redis_conn.ttl("engagement-loops:scheduler:alive") <= 20
    scheduler.register_death()
    assert not scheduler_alive(redis_conn)
    assert not scheduler_alive(DOWN)


def _run_scheduler_once(app, redis_conn: Redis) -> None:  # type: ignore[no-untyped-def]
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        AppScheduler(
            queue_name=app.config["RQ_QUEUE"],
            connection=redis_conn,
            interval=5,
            app=app,
            cron=WEEKLY,
        ).run(burst=True)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_when_the_schedule_fires_every_tenant_is_tuned_and_it_stays_scheduled(
    app, make, signals, redis_conn
) -> None:
    orgs = [make.org() for _ in range(3)]
    for org in orgs:
        signals.engage_many(org, "mention", datetime.now(UTC) - timedelta(days=1), 30)
    job_id = reconcile(redis_conn, WEEKLY, app.config["RQ_QUEUE"]).job_id
    redis_conn.zadd(SCHEDULED_JOBS_KEY, {job_id: 1})  # due long ago
    _run_scheduler_once(app, redis_conn)
    work_burst(app)  # the fan-out job, then the per-tenant jobs it enqueued
    runs = db.session.execute(select(TuneRun).order_by(TuneRun.org_id)).scalars().all()
    assert [(r.org_id, r.trigger, r.state) for r in runs] == [
        (o.id, "schedule", "succeeded") for o in orgs
    ]
    # Still exactly one weekly job, due in the future, its record kept.
    [(still, next_run, _)] = scheduled_jobs(redis_conn, TUNE)
    assert still == job_id and next_run > datetime.now(UTC)
    assert Job.exists(job_id, connection=redis_conn)


def test_the_scheduler_puts_back_a_lost_schedule(app, redis_conn) -> None:
    job_id = reconcile(redis_conn, WEEKLY, app.config["RQ_QUEUE"]).job_id
    redis_conn.zrem(SCHEDULED_JOBS_KEY, job_id)
    _run_scheduler_once(app, redis_conn)
    assert [j for j, _, _ in scheduled_jobs(redis_conn, TUNE)] == [job_id]


@pytest.mark.slow
def test_starting_rq_scheduler_twice_and_with_a_changed_cron_keeps_one_job(
    app, redis_conn, spawn
) -> None:
    for env in ({}, {}, {"TUNE_ENGAGEMENT_CRON": "0 6 * * 2", "TZ": "Asia/Tokyo"}):
        proc = spawn("rq", "scheduler", "--burst", **env)
        assert proc.wait(timeout=120) == 0, proc_output(proc)
        [(_, next_run, cron)] = scheduled_jobs(redis_conn, TUNE)
        assert cron == env.get("TUNE_ENGAGEMENT_CRON", WEEKLY)
    # Registered in UTC even though that scheduler's machine said Tokyo.
    assert (next_run.weekday(), next_run.hour, next_run.minute) == (1, 6, 0)
    # One weekly tune, one hourly digest and one daily maintenance, whatever the restarts.
    assert redis_conn.zcard(SCHEDULED_JOBS_KEY) == 3
    assert len(scheduled_jobs(redis_conn, DIGEST)) == 1
    assert len(scheduled_jobs(redis_conn, MAINTENANCE)) == 1


def test_rq_scheduler_refuses_a_bad_cron_in_one_line(app, runner) -> None:
    app.config["TUNE_ENGAGEMENT_CRON"] = "every monday"
    result = runner.invoke(args=["rq", "scheduler", "--burst"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "TUNE_ENGAGEMENT_CRON" in lines[0], result.output


def test_the_hourly_digest_is_scheduled_beside_the_tune_once(app, redis_conn) -> None:
    first = reconcile_all(redis_conn, periodic_jobs(WEEKLY), QUEUE, now=NOW)
    again = reconcile_all(redis_conn, periodic_jobs("0 6 * * 2"), QUEUE, now=NOW)
    assert [r.added for r in first] == [True, True, True]
    # A changed tune cron replaces the tune only; the others are kept as they were.
    assert [(r.name, r.added) for r in again] == [
        (TUNE, True),
        (DIGEST, False),
        (MAINTENANCE, False),
    ]
    [(job_id, next_run, cron)] = scheduled_jobs(redis_conn, DIGEST)
    assert job_id == DIGEST_ID and cron == "0 * * * *"
    assert next_run == datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
    job = Job.fetch(job_id, connection=redis_conn)
    assert job.func_name == "jobs.digest.deliver_due_digests" and job.result_ttl == -1
    # The dashboard's "next run" is the weekly tune's, not the next hourly digest.
    assert next_scheduled_run(redis_conn) == datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


def test_the_scheduler_puts_back_a_lost_digest_schedule(app, redis_conn) -> None:
    reconcile(redis_conn, WEEKLY, app.config["RQ_QUEUE"])
    digest_id = periodic_jobs(WEEKLY)[1].job_id(app.config["RQ_QUEUE"])
    redis_conn.zrem(SCHEDULED_JOBS_KEY, digest_id)
    _run_scheduler_once(app, redis_conn)
    assert [j for j, _, _ in scheduled_jobs(redis_conn, DIGEST)] == [digest_id]
