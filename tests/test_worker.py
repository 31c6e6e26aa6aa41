"""Real `rq worker` processes: a SIGKILLed worker's run ends failed (abandoned); a re-run works."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
from redis import Redis
from sqlalchemy import select

from jobs.queue import worker_count
from jobs.runs import request_runs, sweep_abandoned
from jobs.schedule import scheduler_alive
from loops.database import db
from loops.models import Calibration, RunTrigger
from loops.timeutil import utcnow
from tests.support.jobs import fresh_run, proc_output
from tests.support.procs import wait_until

DAY = timedelta(days=1)
# Test timings: beat twice a second, abandoned after 3 s of silence, sweep every second.
FAST = {"TUNE_HEARTBEAT_S": 0.5, "TUNE_STALE_AFTER_S": 3, "TUNE_SWEEP_INTERVAL_S": 1}


def calibrations(org_id: int) -> dict[str, float]:
    db.session.rollback()
    rows = db.session.execute(
        select(Calibration.key, Calibration.value).where(Calibration.org_id == org_id)
    ).all()
    db.session.rollback()
    return dict(rows)  # type: ignore[arg-type]


def wait_for_workers(app, n: int) -> None:  # type: ignore[no-untyped-def]
    redis = Redis.from_url(app.config["REDIS_URL"])
    wait_until(lambda: worker_count(redis) >= n, timeout=60, interval=0.2)


@pytest.mark.slow
def test_a_worker_killed_mid_run_leaves_the_run_failed_and_a_rerun_succeeds(
    app, make, signals, spawn
) -> None:
    org = make.org("acme")
    signals.engage_many(org, "mention", utcnow() - DAY, 60, users=5)
    signals.engage_many(org, "comment.reply", utcnow() - DAY, 30, users=5)

    # A worker whose run stalls half-way through its writes (test-only hook).
    slow = spawn("rq", "worker", TUNE_TEST_DELAY_S=300, **FAST)
    wait_for_workers(app, 1)
    [run] = request_runs([org.id], trigger=RunTrigger.MANUAL, requested_by="admin")
    wait_until(lambda: fresh_run(run.id).state == "running", timeout=60)
    time.sleep(1.0)  # now inside the stall, one calibration flushed but not committed

    # A healthy worker is listening; the queue is empty so it takes nothing yet.
    healthy = spawn("rq", "worker", **FAST)
    wait_for_workers(app, 2)

    os.kill(slow.pid, signal.SIGKILL)
    slow.wait(timeout=10)
    killed_at = time.monotonic()
    # Nobody in this test sweeps: the surviving worker's sweeper must notice.
    failed = wait_until(
        lambda: (r := fresh_run(run.id)).state == "failed" and r, timeout=120, interval=0.2
    )
    detected_s = time.monotonic() - killed_at
    print(f"abandoned run detected {detected_s:.1f} s after SIGKILL (stale after 3 s)")
    assert failed.error.startswith("abandoned"), failed.error
    # The documented bound is STALE_AFTER_S + SWEEP_INTERVAL_S (75 s with defaults);
    # with the test's 3 s + 1 s, plus slack for a loaded machine.
    assert detected_s < 3 + 1 + 6, proc_output(healthy)
    assert calibrations(org.id) == {}  # the killed transaction left nothing behind

    [rerun] = request_runs([org.id], trigger=RunTrigger.MANUAL, requested_by="admin")
    assert rerun.id != run.id
    done = wait_until(
        lambda: (r := fresh_run(rerun.id)).state in ("succeeded", "failed") and r, timeout=60
    )
    assert done.state == "succeeded", (done.error, proc_output(healthy))
    assert calibrations(org.id) == {
        "engagement-rate:mention": 2.0,
        "engagement-rate:comment.reply": 1.0,
    }


@pytest.mark.slow
def test_a_worker_process_runs_a_tenant_that_fails_and_one_that_succeeds(
    app, make, signals, spawn
) -> None:
    good, bad = make.org("good"), make.org("bad")
    for org in (good, bad):
        signals.engage_many(org, "mention", utcnow() - DAY, 30)
    spawn("rq", "worker", TUNE_TEST_FAIL_TENANTS="bad", **FAST)
    wait_for_workers(app, 1)
    runs = request_runs(None, trigger=RunTrigger.MANUAL, requested_by="admin")
    finished = [
        wait_until(
            lambda r=r: (x := fresh_run(r.id)).state in ("succeeded", "failed") and x, timeout=60
        )
        for r in runs
    ]
    by_org = {r.org_id: r for r in finished}
    assert by_org[good.id].state == "succeeded"
    assert by_org[bad.id].state == "failed"
    assert "test hook" in (by_org[bad.id].error or "")
    assert calibrations(good.id) == {"engagement-rate:mention": 1.0}


def test_worker_count_is_zero_when_redis_is_down(app) -> None:
    assert worker_count(Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)) == 0


@pytest.mark.slow
@pytest.mark.postgres_only
def test_a_long_run_that_keeps_beating_is_never_swept(app, make, signals, spawn) -> None:
    """The heartbeat runs beside the work: a run longer than the stale threshold survives
    sweeps (on PostgreSQL; SQLite's single write lock blocks the beat during writes)."""
    if not str(app.config["SQLALCHEMY_DATABASE_URI"]).startswith("postgresql"):
        pytest.skip("needs PostgreSQL")
    app.config.update(TUNE_STALE_AFTER_S=2)
    org = make.org()
    signals.engage_many(org, "mention", utcnow() - DAY, 30)
    spawn("rq", "worker", TUNE_TEST_DELAY_S=6, TUNE_HEARTBEAT_S=0.3, TUNE_STALE_AFTER_S=2)
    wait_for_workers(app, 1)
    [run] = request_runs([org.id], trigger=RunTrigger.MANUAL, requested_by="admin")

    def finished():  # type: ignore[no-untyped-def]
        sweep_abandoned(utcnow())  # as a status poll would, many times during the run
        r = fresh_run(run.id)
        return r.state in ("succeeded", "failed") and r

    done = wait_until(finished, timeout=60, interval=0.3)
    assert done.state == "succeeded", done.error
    assert (done.finished_at - done.started_at).total_seconds() >= 6
    assert calibrations(org.id) == {"engagement-rate:mention": 1.0}


@pytest.mark.slow
def test_worker_and_scheduler_stop_on_sigterm(app, spawn) -> None:
    """A process manager (honcho, systemd) stopping them must not see them restart."""
    worker = spawn("rq", "worker")
    scheduler = spawn("rq", "scheduler", "--interval", "1")
    redis = Redis.from_url(app.config["REDIS_URL"])
    wait_for_workers(app, 1)
    wait_until(lambda: scheduler_alive(redis), timeout=60)
    for proc in (worker, scheduler):
        proc.send_signal(signal.SIGTERM)
    for proc in (worker, scheduler):
        proc.wait(timeout=30)
        assert "worker_restart" not in proc_output(proc)
    assert not scheduler_alive(redis)
