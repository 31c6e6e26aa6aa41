"""Commands for the tune job and its processes: `tune run`, `rq worker`, `rq scheduler`."""

from __future__ import annotations

import getpass
import logging
import os
import sys
import time
import warnings
from typing import TYPE_CHECKING

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import select

from dashboard.cli.progress import progress
from dashboard.extensions import db
from jobs import settings
from jobs.exceptions import InvalidSchedule, QueueUnavailable
from loops.accounts import find_org
from loops.models import Organization, RunState, RunTrigger, TuneRun
from loops.timeutil import utcnow

if TYPE_CHECKING:
    from jobs.tune_engagement import TenantResult

tune_cli = AppGroup("tune", help="The tune job: turn signals into calibrations.")
rq_cli = AppGroup("rq", help="Background processes: the RQ worker and the scheduler.")

log = logging.getLogger(__name__)


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _tenants(slug: str | None) -> list[Organization]:
    if slug is None:
        return list(db.session.execute(select(Organization).order_by(Organization.id)).scalars())
    org = find_org(slug.strip())
    if org is None:
        raise click.ClickException(f"no tenant with slug {slug.strip()!r}")
    return [org]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_dry_run(orgs: list[Organization]) -> None:
    from jobs.tune_engagement import dry_run

    now = utcnow()
    click.echo(
        f"dry run at {now.isoformat()} (window {settings.lookback_days()} days); nothing written"
    )
    click.echo(
        f"{'tenant':<20} {'key':<36} {'current':>10} {'new':>10} {'change':>8} "
        f"{'n':>7} {'users':>6}"
    )
    for org in orgs:
        changes = dry_run(org.id, now)
        if not changes:
            click.echo(f"{org.slug:<20} (no signals in the window: nothing would be written)")
        for c in changes:
            pct = (
                "new"
                if c.old_value is None
                else ("-" if c.change_pct is None else f"{c.change_pct:+.1f}%")
            )
            click.echo(
                f"{org.slug:<20} {c.key:<36} {_fmt(c.old_value):>10} {_fmt(c.new_value):>10} "
                f"{pct:>8} {c.sample_size:>7} {c.distinct_users:>6}"
            )


@tune_cli.command("run")
@click.option("--tenant", "slug", metavar="SLUG", help="Only this tenant (default: all).")
@click.option("--wait", is_flag=True, help="Run here and now, print per-tenant results.")
@click.option("--dry-run", is_flag=True, help="Print what a run would write; write nothing.")
def tune_run(slug: str | None, wait: bool, dry_run: bool) -> None:
    """Tune tenants now: enqueue for the workers, or with --wait run in this process.

    Exits 1 when any tenant's run failed (--wait).
    """
    from jobs.runs import request_runs

    orgs = _tenants(slug)
    if dry_run:
        _print_dry_run(orgs)
        return
    org_ids = [o.id for o in orgs] if slug is not None else None
    slug_of = {o.id: o.slug for o in orgs}
    if not wait:
        try:
            runs = request_runs(org_ids, trigger=RunTrigger.CLI, requested_by=_who())
        except QueueUnavailable as exc:
            raise click.ClickException(str(exc)) from None
        for run in runs:
            click.echo(
                f"run {run.id} tenant={slug_of.get(run.org_id, run.org_id)} state={run.state}"
            )
        click.echo(f"{len(runs)} run(s); follow them on /runs or with `tune run --wait`")
        return

    results, others = _run_here(orgs, org_ids)
    click.echo(f"{'tenant':<20} {'run':>6} {'state':<10} {'calibrations':>12} {'ms':>7}  error")
    for r in results:
        click.echo(
            f"{slug_of.get(r.org_id, str(r.org_id)):<20} {r.run_id:>6} {r.state:<10} "
            f"{r.calibrations_written:>12} {r.ms:>7}  "
            f"{(r.error or '') if r.state == RunState.FAILED.value else ''}"
        )
    for run in others:
        click.echo(
            f"{slug_of.get(run.org_id, str(run.org_id)):<20} {run.id:>6} {run.state:<10} "
            f"{'-':>12} {'-':>7}  already {run.state} elsewhere; left alone"
        )
    failed = [r for r in results if r.state == RunState.FAILED.value]
    if failed:
        click.echo(f"{len(failed)} of {len(results)} tenant run(s) failed", err=True)
        sys.exit(1)


def _run_here(
    orgs: list[Organization], org_ids: list[int] | None
) -> tuple[list[TenantResult], list[TuneRun]]:
    """Run the tenants in this process, a chunk at a time, so a terminal shows progress.

    A chunk is what the tune aggregates in one go, so chunking here costs nothing.
    """
    from jobs.runs import run_in_process
    from jobs.tune_engagement import AGGREGATE_CHUNK

    now = utcnow()
    ids = org_ids if org_ids is not None else [o.id for o in orgs]
    results: list[TenantResult] = []
    others: list[TuneRun] = []
    with progress("tuning", total=len(ids)) as bar:
        for start in range(0, len(ids), AGGREGATE_CHUNK):
            chunk = ids[start : start + AGGREGATE_CHUNK]
            done, busy = run_in_process(chunk, trigger=RunTrigger.CLI, requested_by=_who(), now=now)
            results.extend(done)
            others.extend(busy)
            bar.advance(len(chunk))
    return results, others


def _wait_for_redis(url: str) -> Redis:
    """Block until Redis answers (a process manager keeps us up meanwhile)."""
    warned = False
    while True:
        conn = Redis.from_url(url)
        try:
            conn.ping()
            return conn
        except (RedisError, OSError) as exc:
            if not warned:
                log.warning("event=redis_unreachable url=%s error=%s; retrying", url, exc)
                warned = True
            conn.close()
            time.sleep(2)


@rq_cli.command("worker")
@click.option("--burst", is_flag=True, help="Quit when the queue is empty.")
@click.option("--name", help="Worker name (default: random).")
@click.option("--max-jobs", type=int, help="Quit after this many jobs.")
def rq_worker(burst: bool, name: str | None, max_jobs: int | None) -> None:
    """Run an RQ worker for the tune queue, inside the app context."""
    from jobs.worker import AppWorker

    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    level = app.config["LOG_LEVEL"]
    while True:
        connection = _wait_for_redis(app.config["REDIS_URL"])
        worker = AppWorker(
            [settings.queue_name()],
            connection=connection,
            name=name,
            app=app,
            sweep_interval_s=settings.sweep_interval_s(),
        )
        worker.work(burst=burst, max_jobs=max_jobs, logging_level=level)
        asked_to_stop = worker._stop_requested or worker._shutdown_requested_date is not None
        if burst or max_jobs is not None or asked_to_stop:
            return
        # work() returned without being asked to stop: Redis went away. Start over.
        log.warning("event=worker_restart reason=work_loop_ended")
        time.sleep(2)


@rq_cli.command("scheduler")
@click.option("--interval", type=int, default=None, help="Seconds between checks (default 15).")
@click.option("--burst", is_flag=True, help="Reconcile, check once and quit.")
def rq_scheduler(interval: int | None, burst: bool) -> None:
    """Reconcile the weekly schedule (TUNE_ENGAGEMENT_CRON, UTC) and run rq-scheduler."""
    from jobs import constants
    from jobs.schedule import AppScheduler, reconcile, validate_cron

    cron = settings.cron()
    try:
        validate_cron(cron)
    except InvalidSchedule as exc:
        raise click.ClickException(str(exc)) from None
    # rq-scheduler reads cron strings in local time: make this process's local time UTC
    # (which also makes crontab's warning about naive local times moot).
    os.environ["TZ"] = "UTC"
    time.tzset()
    warnings.filterwarnings("ignore", category=FutureWarning, module="rq_scheduler")
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    queue = settings.queue_name()
    every = interval or constants.DEFAULT_SCHEDULER_INTERVAL_S
    while True:
        connection = _wait_for_redis(app.config["REDIS_URL"])
        try:
            click.echo(str(reconcile(connection, cron, queue)))
            scheduler = AppScheduler(
                queue_name=queue, connection=connection, interval=every, app=app, cron=cron
            )
            scheduler.run(burst=burst)
            return
        except InvalidSchedule as exc:
            raise click.ClickException(str(exc)) from None
        except (RedisError, OSError) as exc:
            log.warning("event=scheduler_restart error=%s", exc)
            time.sleep(2)


def init_app(app: Flask) -> None:
    for group in (tune_cli, rq_cli):
        app.cli.add_command(group)
