"""Tune-job faults on real processes: SIGKILLed worker and scheduler; raising and huge tenants."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from redis import Redis

from jobs.queue import worker_count
from jobs.runs import request_runs
from jobs.schedule import TUNE, scheduled_jobs, scheduler_alive
from loops.database import db
from loops.models import Calibration, LoopSignal, RunTrigger, TuneRun
from loops.timeutil import utcnow
from tests.support.procs import ROOT, kill_group, wait_until

pytestmark = pytest.mark.slow

# Beat twice a second, abandoned after 3 s of silence, sweep every second.
FAST = {"TUNE_HEARTBEAT_S": "0.5", "TUNE_STALE_AFTER_S": "3", "TUNE_SWEEP_INTERVAL_S": "1"}
ABANDON_BOUND_S = 3 + 1 + 8  # STALE_AFTER_S + SWEEP_INTERVAL_S, plus a loaded machine's slack
CRON = "30 5 * * 1"


@pytest.fixture
def spawn(app: Flask, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """`flask --app wsgi <args>` on this test's database and Redis; killed at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, **extra: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=str(app.config["SQLALCHEMY_DATABASE_URI"]),
            REDIS_URL=str(app.config["REDIS_URL"]),
            SECRET_KEY="reliability",
            LOOPS_ENABLED="true",
            TZ="UTC",
            TUNE_ENGAGEMENT_CRON=CRON,
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        log = (tmp_path / f"proc-{len(started)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        started.append(process)
        return process

    yield start
    for process in started:
        kill_group(process, signal.SIGKILL)


def _run(run_id: int) -> TuneRun:
    db.session.rollback()
    return db.session.execute(
        sa.select(TuneRun).where(TuneRun.id == run_id).execution_options(populate_existing=True)
    ).scalar_one()


def _calibrations(org_id: int) -> dict[str, tuple[float | None, int]]:
    db.session.rollback()
    rows = db.session.execute(
        sa.select(Calibration.key, Calibration.value, Calibration.sample_size).where(
            Calibration.org_id == org_id
        )
    ).all()
    return {key: (value, size) for key, value, size in rows}


def _engage(org_id: int, feature: str, n: int, first_subject: int) -> None:
    at = utcnow() - timedelta(days=1)
    db.session.execute(
        sa.insert(LoopSignal),
        [
            {
                "org_id": org_id,
                "kind": "ENGAGE",
                "feature": feature,
                "user_id": 1 + i % 7,
                "subject_id": first_subject + i,
                "created_at": at,
            }
            for i in range(n)
        ],
    )
    db.session.commit()


def _finished(run_id: int) -> TuneRun | None:
    run = _run(run_id)
    return run if run.state in ("succeeded", "failed", "skipped") else None


def _logs(tmp_path: Path) -> str:
    return "\n".join(
        f"== {p.name}\n" + p.read_text(errors="replace")[-1500:]
        for p in sorted(tmp_path.glob("proc-*.log"))
    )


def test_sigkilled_worker_and_scheduler_abandon_nothing_half_written(
    app: Flask, make: Any, spawn: Any, redis_conn: Redis, tmp_path: Path
) -> None:
    org = make.org(slug="acme")
    _engage(org.id, "mention", 60, 1_000_000)
    _engage(org.id, "digest", 30, 2_000_000)

    scheduler = spawn("rq", "scheduler", "--interval", "1", **FAST)
    wait_until(lambda: scheduler_alive(redis_conn), 60, 0.2, "the scheduler's heartbeat")
    assert [cron for _, _, cron in scheduled_jobs(redis_conn, TUNE)] == [CRON]

    slow = spawn("rq", "worker", TUNE_TEST_DELAY_S="300", **FAST)  # stalls mid-writes
    wait_until(lambda: worker_count(redis_conn) >= 1, 60, 0.2, "the slow worker")
    [run] = request_runs([org.id], trigger=RunTrigger.MANUAL, requested_by="admin")
    wait_until(lambda: _run(run.id).state == "running", 60, 0.2, "the run to start")
    time.sleep(1.0)  # inside the stall: some calibrations flushed, none committed

    os.killpg(slow.pid, signal.SIGKILL)
    os.killpg(scheduler.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    slow.wait(timeout=10)
    scheduler.wait(timeout=10)

    # Nobody but the restarted scheduler sweeps: no worker is running now.
    spawn("rq", "scheduler", "--interval", "1", **FAST)
    wait_until(lambda: _finished(run.id), ABANDON_BOUND_S + 30, 0.2, "the abandoned run to fail")
    detected_s = time.monotonic() - killed_at
    failed = _run(run.id)
    assert failed.state == "failed" and (failed.error or "").startswith("abandoned")
    assert detected_s < ABANDON_BOUND_S, detected_s
    assert _calibrations(org.id) == {}  # the killed transaction left no half-written tenant
    wait_until(lambda: scheduler_alive(redis_conn), 60, 0.2, "the restarted scheduler")
    assert [cron for _, _, cron in scheduled_jobs(redis_conn, TUNE)] == [CRON]  # still exactly one

    spawn("rq", "worker", **FAST)
    [rerun] = request_runs([org.id], trigger=RunTrigger.MANUAL, requested_by="admin")
    assert rerun.id != run.id
    wait_until(lambda: _finished(rerun.id), 60, 0.2, "the re-run")
    final = _run(rerun.id)
    assert final.state == "succeeded", (final.error, _logs(tmp_path))
    assert _calibrations(org.id) == {
        "engagement-rate:mention": (2.0, 60),
        "engagement-rate:digest": (1.0, 30),
    }
    print(f"\nRELIABILITY worker_sigkill abandoned_detected_s={detected_s:.1f} bound=4+slack")


@pytest.mark.postgres_only
def test_a_raising_tenant_and_a_million_signal_tenant_in_one_run(
    app: Flask, make: Any, spawn: Any, redis_conn: Redis, tmp_path: Path
) -> None:
    big, bad = make.org(slug="big"), make.org(slug="bad")
    small = [make.org(slug=f"small-{i}") for i in range(3)]
    started = time.monotonic()
    for start in range(0, 1_000_000, 100_000):  # chunks: each under the statement timeout
        db.session.execute(
            sa.text(
                "INSERT INTO loop_signals (org_id, kind, feature, user_id, subject_id, created_at) "
                "SELECT :org, 'ENGAGE', 'f' || (g % 4), g % 5000, 50000000 + g, "
                "now() - interval '1 hour' - (g % 28) * interval '1 day' "
                "FROM generate_series(:first, :last) AS g"
            ),
            {"org": big.id, "first": start + 1, "last": start + 100_000},
        )
        db.session.commit()
    db.session.execute(sa.text("ANALYZE loop_signals"))
    db.session.commit()
    seeded_s = time.monotonic() - started
    for i, org in enumerate([bad, *small]):
        _engage(org.id, "mention", 30, 100_000 * (i + 1))

    job_timeout_s = 120
    spawn(
        "rq",
        "worker",
        TUNE_TEST_FAIL_TENANTS="bad",
        TUNE_JOB_TIMEOUT=str(job_timeout_s),
        TUNE_BATCH_SIZE="1",
        **FAST,
    )
    wait_until(lambda: worker_count(redis_conn) >= 1, 60, 0.2, "the worker")
    runs = request_runs(None, trigger=RunTrigger.MANUAL, requested_by="admin")
    assert len(runs) == 5
    for run in runs:
        wait_until(lambda r=run: _finished(r.id), job_timeout_s + 60, 0.5, f"run {run.id}")
    by_org = {run.org_id: _run(run.id) for run in runs}

    assert by_org[bad.id].state == "failed", by_org[bad.id].error
    assert "test hook" in (by_org[bad.id].error or ""), (by_org[bad.id].error, _logs(tmp_path))
    for org in small:
        assert by_org[org.id].state == "succeeded", by_org[org.id].error
        assert _calibrations(org.id) == {"engagement-rate:mention": (1.0, 30)}
    big_run = by_org[big.id]
    assert big_run.state == "succeeded", big_run.error
    assert big_run.started_at is not None and big_run.finished_at is not None
    big_s = (big_run.finished_at - big_run.started_at).total_seconds()
    assert big_s < job_timeout_s
    calibrations = _calibrations(big.id)
    assert {k: n for k, (_, n) in calibrations.items()} == {
        f"engagement-rate:f{i}": 250_000 for i in range(4)
    }
    assert calibrations["engagement-rate:f0"][0] == round(250_000 / 30, 4)
    assert _calibrations(bad.id) == {}
    print(
        f"\nRELIABILITY big_tenant signals=1000000 seeded_s={seeded_s:.1f} "
        f"tuned_s={big_s:.2f} timeout_s={job_timeout_s}"
    )
