"""Run requests: de-duplicated enqueue on real Redis, real workers, failed re-runs, the sweep."""

from __future__ import annotations

from datetime import timedelta

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy import func, select, update

from jobs import runs as tune_runs
from jobs.exceptions import QueueUnavailable
from jobs.runs import (
    request_failed_reruns,
    request_runs,
    run_in_process,
    sweep_abandoned,
)
from loops.database import db
from loops.models import Calibration, RunState, RunTrigger, TuneRun
from loops.redis_conn import make_redis
from loops.timeutil import utcnow
from tests.support.jobs import NOW, fresh_run, work_burst

DAY = timedelta(days=1)


def queue(app, redis_conn: Redis) -> Queue:  # type: ignore[no-untyped-def]
    return Queue(app.config["RQ_QUEUE"], connection=redis_conn)


def run_count() -> int:
    db.session.rollback()
    return int(db.session.execute(select(func.count()).select_from(TuneRun)).scalar_one())


def set_run(run_id: int, **values) -> None:  # type: ignore[no-untyped-def]
    db.session.execute(update(TuneRun).where(TuneRun.id == run_id).values(**values))
    db.session.commit()


def test_an_enqueued_run_is_executed_by_a_real_worker(app, make, signals, redis_conn) -> None:
    org = make.org("acme")
    signals.engage_many(org, "mention", utcnow() - DAY, 60, users=4)
    [run] = request_runs([org.id], trigger=RunTrigger.MANUAL, requested_by="admin@example.com")
    assert run.state == "queued" and run.rq_job_id
    assert queue(app, redis_conn).job_ids == [run.rq_job_id]
    assert work_burst(app)
    done = fresh_run(run.id)
    assert done.state == "succeeded", done.error
    assert done.calibrations_written == 1
    assert done.requested_by == "admin@example.com" and done.trigger == "manual"
    cal = db.session.execute(select(Calibration).where(Calibration.org_id == org.id)).scalar_one()
    assert (cal.key, cal.value, cal.sample_size, cal.distinct_users) == (
        "engagement-rate:mention",
        2.0,
        60,
        4,
    )
    assert cal.run_id == run.id


def test_a_second_request_while_queued_returns_the_same_run_and_one_job(
    app, make, redis_conn
) -> None:
    org = make.org()
    [first] = request_runs([org.id], trigger=RunTrigger.MANUAL, requested_by="a")
    [second] = request_runs([org.id], trigger=RunTrigger.MANUAL, requested_by="b")
    [third] = request_runs(None, trigger=RunTrigger.SCHEDULE, requested_by=None)
    assert first.id == second.id == third.id
    assert second.requested_by == "a"
    assert run_count() == 1
    assert len(queue(app, redis_conn)) == 1
    work_burst(app)
    # Once finished, a new request starts a new run.
    [fourth] = request_runs([org.id], trigger=RunTrigger.MANUAL, requested_by="c")
    assert fourth.id != first.id and fourth.state == "queued"


def test_a_second_request_while_running_returns_the_running_run(app, make) -> None:
    org = make.org()
    [run] = request_runs([org.id], trigger=RunTrigger.MANUAL, requested_by="a")
    set_run(run.id, state=RunState.RUNNING.value, heartbeat_at=utcnow())
    [again] = request_runs([org.id], trigger=RunTrigger.MANUAL, requested_by="b")
    assert again.id == run.id and again.state == "running"


def test_all_tenants_fan_out_in_batches_with_per_tenant_runs(app, make, signals, redis_conn):
    app.config["TUNE_BATCH_SIZE"] = 2
    orgs = [make.org(f"t{i}") for i in range(5)]
    for org in orgs:
        signals.engage_many(org, "mention", utcnow() - DAY, 3)
    runs = request_runs(None, trigger=RunTrigger.MANUAL, requested_by="a")
    assert [r.org_id for r in runs] == [o.id for o in orgs]
    assert len({r.id for r in runs}) == 5
    assert len(queue(app, redis_conn)) == 3  # 2 + 2 + 1
    work_burst(app)
    assert {fresh_run(r.id).state for r in runs} == {"succeeded"}


def test_a_large_tenant_gets_a_job_of_its_own_enqueued_first(
    app, make, signals, redis_conn
) -> None:
    """After a first run, jobs are cut by the signals each tenant's last run counted."""
    app.config["TUNE_BATCH_SIZE"] = 50
    app.config["TUNE_BATCH_SIGNALS"] = 100
    small = [make.org(f"s{i}") for i in range(3)]
    big = make.org("big")
    for org in small:
        signals.engage_many(org, "mention", utcnow() - DAY, 10)
    signals.engage_many(big, "mention", utcnow() - DAY, 150)
    first = request_runs(None, trigger=RunTrigger.MANUAL, requested_by="a")
    assert len(queue(app, redis_conn)) == 1  # nothing tuned yet: one job of 4 tenants
    work_burst(app)
    assert {fresh_run(r.id).state for r in first} == {"succeeded"}

    runs = request_runs(None, trigger=RunTrigger.MANUAL, requested_by="a")
    by_org = {r.org_id: r for r in runs}
    jobs = [Job.fetch(j, connection=redis_conn) for j in queue(app, redis_conn).job_ids]
    assert [job.args[0] for job in jobs] == [
        [by_org[big.id].id],
        sorted(by_org[o.id].id for o in small),
    ]
    assert by_org[big.id].rq_job_id == jobs[0].id
    work_burst(app)
    assert {fresh_run(r.id).state for r in runs} == {"succeeded"}


def test_unknown_tenants_are_ignored(app, make) -> None:
    org = make.org()
    runs = request_runs([org.id, 999_999], trigger=RunTrigger.MANUAL, requested_by="a")
    assert [r.org_id for r in runs] == [org.id]


def test_redis_down_raises_and_leaves_no_queued_run(app, make) -> None:
    org = make.org()
    app.extensions["redis"] = make_redis("redis://127.0.0.1:1/0")
    with pytest.raises(QueueUnavailable, match="unreachable"):
        request_runs([org.id], trigger=RunTrigger.MANUAL, requested_by="a")
    assert run_count() == 0


def test_redis_failing_during_enqueue_leaves_no_queued_run(app, make, monkeypatch) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    org = make.org()

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RedisConnectionError("connection reset")

    # Redis answers the ping, then goes away before the jobs are pushed.
    monkeypatch.setattr(Queue, "enqueue_call", broken)
    with pytest.raises(QueueUnavailable):
        request_runs([org.id], trigger=RunTrigger.MANUAL, requested_by="a")
    assert run_count() == 0


def test_failed_reruns_start_only_tenants_whose_latest_run_failed(app, make) -> None:
    failed, ok, recovered = make.org("failed"), make.org("ok"), make.org("recovered")
    for org, states in ((failed, ["succeeded", "failed"]), (ok, ["succeeded"])):
        for state in states:
            db.session.add(TuneRun(org_id=org.id, trigger="manual", state=state))
    db.session.add(TuneRun(org_id=recovered.id, trigger="manual", state="failed"))
    db.session.add(TuneRun(org_id=recovered.id, trigger="manual", state="succeeded"))
    db.session.commit()
    runs = request_failed_reruns(requested_by="admin")
    assert [r.org_id for r in runs] == [failed.id]
    assert runs[0].state == "queued" and runs[0].trigger == "manual"
    assert request_failed_reruns(requested_by="admin")[0].id == runs[0].id  # de-duplicated


def test_failed_reruns_with_nothing_failed_start_nothing(app, make) -> None:
    make.org()
    assert request_failed_reruns(requested_by="admin") == []


# --- the sweep -------------------------------------------------------------------


def test_sweep_fails_a_running_run_whose_heartbeat_is_stale(app, make) -> None:
    app.config["TUNE_STALE_AFTER_S"] = 60
    org, live = make.org(), make.org()
    dead_run, live_run = request_runs(None, trigger=RunTrigger.MANUAL, requested_by="x")
    now = utcnow()
    set_run(dead_run.id, state="running", heartbeat_at=now - timedelta(seconds=61))
    set_run(live_run.id, state="running", heartbeat_at=now - timedelta(seconds=30))
    assert sweep_abandoned(now) == 1
    dead = fresh_run(dead_run.id)
    assert dead.state == "failed" and dead.error.startswith("abandoned")
    assert dead.finished_at is not None
    assert fresh_run(live_run.id).state == "running"
    assert org.id != live.id
    # The tenant is no longer blocked: a new request starts a new run.
    [new] = request_runs([dead_run.org_id], trigger=RunTrigger.MANUAL, requested_by="x")
    assert new.id != dead_run.id and new.state == "queued"


def test_sweep_fails_a_queued_run_whose_job_vanished(app, make, redis_conn) -> None:
    app.config["TUNE_STALE_AFTER_S"] = 5
    make.org()
    [run] = request_runs(None, trigger=RunTrigger.MANUAL, requested_by="x")
    # Too young to judge: a run is created a moment before its job is pushed.
    redis_conn.delete(Job.key_for(run.rq_job_id))
    assert sweep_abandoned(utcnow()) == 0
    assert sweep_abandoned(utcnow() + timedelta(seconds=6)) == 1
    assert fresh_run(run.id).error == "abandoned: its queue job vanished from Redis"


def test_sweep_leaves_a_queued_run_waiting_for_a_worker(app, make) -> None:
    app.config["TUNE_STALE_AFTER_S"] = 5
    make.org()
    [run] = request_runs(None, trigger=RunTrigger.MANUAL, requested_by="x")
    # No worker for an hour: still waiting in the queue, not abandoned.
    assert sweep_abandoned(utcnow() + timedelta(hours=1)) == 0
    assert fresh_run(run.id).state == "queued"


def test_sweep_fails_a_queued_run_never_handed_to_the_queue(app, make) -> None:
    app.config["TUNE_STALE_AFTER_S"] = 5
    org = make.org()
    db.session.add(TuneRun(org_id=org.id, trigger="manual", state="queued", enqueued_at=NOW))
    db.session.commit()
    assert sweep_abandoned(NOW + timedelta(seconds=10)) == 1


def test_sweep_with_nothing_active_is_a_cheap_no_op(app, make) -> None:
    make.org()
    run_in_process(None, trigger=RunTrigger.CLI, requested_by="x")
    assert sweep_abandoned(utcnow() + timedelta(days=1)) == 0


def test_sweep_does_not_judge_jobs_while_redis_is_down(app, make) -> None:
    app.config["TUNE_STALE_AFTER_S"] = 5
    make.org()
    [run] = request_runs(None, trigger=RunTrigger.MANUAL, requested_by="x")
    app.extensions["redis"] = make_redis("redis://127.0.0.1:1/0")
    assert sweep_abandoned(utcnow() + timedelta(minutes=5)) == 0
    assert fresh_run(run.id).state == "queued"


def test_the_scheduled_fan_out_requests_every_tenant(app, make, signals) -> None:
    orgs = [make.org() for _ in range(3)]
    for org in orgs:
        signals.engage_many(org, "mention", utcnow() - DAY, 3)
    assert tune_runs.enqueue_scheduled_runs() == 3
    work_burst(app)
    runs = db.session.execute(select(TuneRun).order_by(TuneRun.id)).scalars().all()
    assert [(r.trigger, r.state) for r in runs] == [("schedule", "succeeded")] * 3
