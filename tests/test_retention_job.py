"""The daily maintenance job and `flask signals prune`: scheduled once, run by a worker."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta

from rq.job import Job
from sqlalchemy import func, select

from jobs.schedule import (
    MAINTENANCE,
    SCHEDULED_JOBS_KEY,
    AppScheduler,
    periodic_jobs,
    reconcile,
    reconcile_all,
    scheduled_jobs,
)
from loops.database import db
from loops.models import LoopSignal, SignalPrune
from loops.retention import cutoff_for
from loops.timeutil import utcnow
from tests.conftest import is_postgres
from tests.support.jobs import NOW, proc_output, work_burst
from tests.test_retention import add, only_default_partition

WEEKLY = "30 5 * * 1"
QUEUE = "engagement"


def test_the_daily_maintenance_is_scheduled_once_whatever_the_restarts(app, redis_conn) -> None:
    first = reconcile_all(redis_conn, periodic_jobs(WEEKLY), QUEUE, now=NOW)
    again = reconcile_all(redis_conn, periodic_jobs(WEEKLY), QUEUE, now=NOW)
    assert [(r.name, r.added) for r in first if r.name == MAINTENANCE] == [(MAINTENANCE, True)]
    assert [(r.name, r.added) for r in again if r.name == MAINTENANCE] == [(MAINTENANCE, False)]
    [(job_id, next_run, cron)] = scheduled_jobs(redis_conn, MAINTENANCE)
    assert cron == "17 3 * * *"
    # NOW is Monday 2026-11-23 12:00 UTC: next 03:17 UTC is Tuesday's.
    assert next_run == datetime(2026, 11, 24, 3, 17, tzinfo=UTC)
    job = Job.fetch(job_id, connection=redis_conn)
    assert job.func_name == "jobs.maintenance.run_maintenance"
    assert job.result_ttl == -1 and job.timeout == 3600
    assert redis_conn.zcard(SCHEDULED_JOBS_KEY) == 3  # tune, digest, maintenance


def _run_scheduler_once(app, redis_conn) -> None:  # type: ignore[no-untyped-def]
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


def test_the_scheduler_puts_back_a_lost_maintenance_schedule(app, redis_conn) -> None:
    reconcile(redis_conn, WEEKLY, app.config["RQ_QUEUE"])
    [(job_id, _, _)] = scheduled_jobs(redis_conn, MAINTENANCE)
    redis_conn.zrem(SCHEDULED_JOBS_KEY, job_id)
    _run_scheduler_once(app, redis_conn)
    assert [j for j, _, _ in scheduled_jobs(redis_conn, MAINTENANCE)] == [job_id]


def test_when_the_maintenance_fires_a_worker_prunes(app, make, redis_conn) -> None:
    only_default_partition()
    app.config["SIGNAL_RETENTION_DAYS"] = 30
    org = make.org()
    now = utcnow()
    old = add(org, now - timedelta(days=45))
    young = add(org, now - timedelta(days=29))
    reconcile(redis_conn, WEEKLY, app.config["RQ_QUEUE"])
    [(job_id, _, _)] = scheduled_jobs(redis_conn, MAINTENANCE)
    redis_conn.zadd(SCHEDULED_JOBS_KEY, {job_id: 1})  # due long ago
    _run_scheduler_once(app, redis_conn)
    work_burst(app)
    ids = set(db.session.execute(select(LoopSignal.id)).scalars())
    assert ids == {young} and old not in ids
    [prune_row] = db.session.execute(select(SignalPrune)).scalars()
    assert prune_row.cutoff == cutoff_for(now, 30) or prune_row.cutoff == cutoff_for(utcnow(), 30)
    assert prune_row.signals_removed == 1 and prune_row.finished_at is not None
    # Still scheduled once, for later.
    [(still, next_run, _)] = scheduled_jobs(redis_conn, MAINTENANCE)
    assert still == job_id and next_run > datetime.now(UTC)


# --- flask signals prune ----------------------------------------------------------


def test_prune_prints_one_line(app, make, runner) -> None:
    only_default_partition()
    app.config["SIGNAL_RETENTION_DAYS"] = 30
    org = make.org()
    now = utcnow()
    for days in (400, 45, 31):
        add(org, now - timedelta(days=days))
    add(org, now - timedelta(days=2))
    result = runner.invoke(args=["signals", "prune"])
    assert result.exit_code == 0, result.output
    cutoff = cutoff_for(utcnow(), 30).date().isoformat()
    line = f"pruned 3 signals older than {cutoff} (retention 30 days)"
    if is_postgres(app):
        line += ": 0 partitions dropped, 4 created"  # this month and 3 ahead
    assert result.output.splitlines() == [line]
    assert db.session.execute(select(func.count()).select_from(LoopSignal)).scalar() == 1


def test_a_dry_run_prints_what_would_go_and_removes_nothing(app, make, runner) -> None:
    only_default_partition()
    app.config["SIGNAL_RETENTION_DAYS"] = 30
    org = make.org()
    add(org, utcnow() - timedelta(days=60))
    result = runner.invoke(args=["signals", "prune", "--dry-run"])
    assert result.exit_code == 0, result.output
    [line] = result.output.splitlines()
    assert line.startswith("would prune 1 signal older than ")
    if is_postgres(app):
        assert line.endswith(": 0 partitions to drop, 4 to create")
    assert db.session.execute(select(func.count()).select_from(LoopSignal)).scalar() == 1


def test_retention_zero_keeps_everything(app, make, runner) -> None:
    only_default_partition()
    app.config["SIGNAL_RETENTION_DAYS"] = 0
    add(make.org(), datetime(2001, 1, 1, tzinfo=UTC))
    result = runner.invoke(args=["signals", "prune"])
    assert result.exit_code == 0, result.output
    expected = "retention off: nothing pruned"
    if is_postgres(app):
        expected += " (created 5 partitions ahead)"
    assert result.output.splitlines() == [expected]
    assert db.session.execute(select(func.count()).select_from(LoopSignal)).scalar() == 1


def test_a_bad_retention_setting_stops_the_command_in_one_line(app, spawn) -> None:
    proc = spawn("signals", "prune", SIGNAL_RETENTION_DAYS="-3")
    assert proc.wait(timeout=60) == 1
    lines = [line for line in proc_output(proc).splitlines() if line.strip()]
    assert len(lines) == 1 and "SIGNAL_RETENTION_DAYS must be at least 0" in lines[0], lines
