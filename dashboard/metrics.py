"""GET /metrics: Prometheus text format, summed over gunicorn's processes and the shared state.

Two kinds of figures, both on every web process's /metrics:

- counted by the web process itself (HTTP requests and their durations, signals
  recorded while answering a request). Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR``
  (set by gunicorn.conf.py before the workers import anything) makes each worker
  write its counts to files in that directory, and a scrape of any worker sums
  them all: counts add up whichever worker answered.
- read at scrape time from what every process shares, so that what workers and
  the scheduler do on any machine reaches Prometheus through the web's /metrics:
  tune runs from the ``tune_runs`` table (the runs' one source of truth), the
  queue and its workers from Redis, and what jobs report through
  ``loops.observe`` (signals written outside a request, digest runs), which is
  kept in Redis hashes. These are the same on every replica (aggregate them with
  ``max``, not ``sum``). A dead Redis or database leaves their series out and
  sets ``engagement_loops_redis_up`` to 0; it never breaks the scrape.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, has_request_context, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import Float, case, cast, func, literal_column, select
from sqlalchemy.exc import SQLAlchemyError

from loops import observe
from loops.database import db
from loops.models import Notification, RunState, SignalKind, TuneRun
from loops.timeutil import utcnow

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)

PREFIX = "engagement_loops"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Redis keys of the figures that background processes report (rq keeps its own under "rq:").
REDIS_KEY_PREFIX = "engagement-loops:metrics:"
SIGNALS_KEY = REDIS_KEY_PREFIX + "signals"
# A scrape must not hang on a dead Redis: Prometheus would time the whole scrape out.
REDIS_TIMEOUT_S = 0.5

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RUN_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "(unmatched)"
# WSGI environ key: when the request reached the app (time.perf_counter()), set by the
# mark-read route in front of Flask, so that a request it hands to Flask is timed from
# its arrival there.
ARRIVED = "engagement_loops.arrived"
# True while a request is answered outside Flask's request context (serving_request).
_SERVING: ContextVar[bool] = ContextVar("engagement_loops_serving_request", default=False)
FINISHED_STATES = (RunState.SUCCEEDED.value, RunState.FAILED.value, RunState.SKIPPED.value)
ACTIVE_STATES = (RunState.QUEUED.value, RunState.RUNNING.value)

# The process's own metric objects, in a registry of their own (never the global
# one: tests build many apps in one process, and a scrape builds its registry anew).
_LOCAL = CollectorRegistry(auto_describe=True)
HTTP_REQUESTS = Counter(
    f"{PREFIX}_http_requests",
    "HTTP requests answered, by method, route template (not the raw path) and status.",
    ["method", "route", "status"],
    registry=_LOCAL,
)
HTTP_DURATION = Histogram(
    f"{PREFIX}_http_request_duration_seconds",
    "Time from the request's arrival in the app to its response, by method and route template.",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
    registry=_LOCAL,
)
SIGNALS_FAMILY = f"{PREFIX}_signals"
SIGNALS = Counter(
    SIGNALS_FAMILY,
    "Loop signals recorded, by kind (ENGAGE, DELIVER); source=web while answering a request, "
    "source=jobs in workers and commands.",
    ["kind", "source"],
    registry=_LOCAL,
)


# --- what background processes report, kept in Redis -------------------------


def _job_label(job: str) -> str:
    """Job names become part of metric names: keep them to [a-z0-9_]."""
    return re.sub(r"[^a-z0-9_]", "_", job.lower())[:40] or "job"


def _runs_key(job: str) -> str:
    return f"{REDIS_KEY_PREFIX}runs:{_job_label(job)}"


def _run_seconds_key(job: str) -> str:
    return f"{REDIS_KEY_PREFIX}run-seconds:{_job_label(job)}"


# Jobs that report their runs through loops.observe.run_finished; the tune job is
# not among them (its runs are read from tune_runs).
OBSERVED_JOBS = ("digest",)


class _Listener:
    """Turns loops.observe calls into metrics: in a request, this process's counter;
    elsewhere (an RQ worker, a command) a Redis hash that every /metrics reads."""

    def signals_recorded(self, kind: str, count: int) -> None:
        if _SERVING.get() or has_request_context():
            SIGNALS.labels(kind, "web").inc(count)
            return
        conn = _background_redis()
        if conn is not None:
            conn.hincrby(SIGNALS_KEY, kind, count)

    def run_finished(self, job: str, state: str, seconds: float | None) -> None:
        conn = _background_redis()
        if conn is None:
            return
        pipe = conn.pipeline(transaction=False)
        pipe.hincrby(_runs_key(job), state, 1)
        if seconds is not None and seconds >= 0:
            key = _run_seconds_key(job)
            for bound in RUN_BUCKETS:
                if seconds <= bound:
                    pipe.hincrby(key, f"le:{bound}", 1)
            pipe.hincrby(key, "count", 1)
            pipe.hincrbyfloat(key, "sum", seconds)
        pipe.execute()


LISTENER = _Listener()


def _background_redis() -> Redis | None:
    try:
        from loops.redis_conn import get_redis

        return get_redis()
    except (RuntimeError, KeyError):  # no app context: nothing to report to
        return None


# --- HTTP ---------------------------------------------------------------------


def _route() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED_ROUTE


def _start_timer() -> None:
    g._metrics_started = request.environ.get(ARRIVED) or time.perf_counter()


def _count_response(response: Response) -> Response:
    count_request(request.method, _route(), response.status_code, g.pop("_metrics_started", None))
    return response


def count_request(method: str, route: str, status: int, started: float | None) -> None:
    """One answered request, by method, route template and status; timed from ``started``
    (``time.perf_counter()``) when known."""
    method = method if method in METHODS else "other"
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    if started is not None:
        HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)


@contextmanager
def serving_request() -> Iterator[None]:
    """For code that answers a request outside Flask's request context (the mark-read
    WSGI route in front of Flask): what is recorded meanwhile counts as the web's."""
    token = _SERVING.set(True)
    try:
        yield
    finally:
        _SERVING.reset(token)


# --- scrape-time figures ------------------------------------------------------


@dataclass
class RunStats:
    """Runs of one job: finished ones by state, active ones by state, and durations."""

    finished: dict[str, int] = field(default_factory=dict)
    active: dict[str, int] = field(default_factory=dict)
    # Cumulative counts per upper bound of RUN_BUCKETS, then the count and the sum.
    buckets: dict[str, list[int]] = field(default_factory=dict)
    duration_count: dict[str, int] = field(default_factory=dict)
    duration_sum: dict[str, float] = field(default_factory=dict)


def _duration_seconds() -> Any:
    if db.engine.dialect.name == "sqlite":
        return (func.julianday(TuneRun.finished_at) - func.julianday(TuneRun.started_at)) * 86400.0
    return func.extract("epoch", TuneRun.finished_at - TuneRun.started_at)


def tune_run_stats() -> RunStats:
    """Read from tune_runs: one grouped query, whatever the number of runs."""
    seconds = cast(_duration_seconds(), Float)
    timed = TuneRun.started_at.is_not(None) & TuneRun.finished_at.is_not(None)
    columns: list[Any] = [TuneRun.state, func.count()]
    columns += [func.sum(case((timed & (seconds <= bound), 1), else_=0)) for bound in RUN_BUCKETS]
    columns += [
        func.sum(case((timed, 1), else_=0)),
        func.coalesce(func.sum(case((timed, seconds), else_=literal_column("0.0"))), 0.0),
    ]
    stats = RunStats()
    try:
        rows = db.session.execute(select(*columns).group_by(TuneRun.state)).all()
    finally:
        db.session.rollback()
    for state, count, *rest in rows:
        if state in ACTIVE_STATES:
            stats.active[state] = int(count)
            continue
        stats.finished[state] = int(count)
        stats.buckets[state] = [int(n or 0) for n in rest[: len(RUN_BUCKETS)]]
        stats.duration_count[state] = int(rest[len(RUN_BUCKETS)] or 0)
        stats.duration_sum[state] = float(rest[len(RUN_BUCKETS) + 1] or 0.0)
    return stats


def held_notifications(now: datetime) -> tuple[int, int]:
    """Held for a digest: all of them, and those whose digest hour has passed."""
    try:
        held, overdue = db.session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((Notification.deliver_at <= now, 1), else_=0)), 0),
            ).where(Notification.delivered_at.is_(None))
        ).one()
    finally:
        db.session.rollback()
    return int(held), int(overdue)


def observed_run_stats(conn: Redis, job: str) -> RunStats:
    """Runs that ``job`` reported through loops.observe (kept in Redis)."""
    pipe = conn.pipeline(transaction=False)
    pipe.hgetall(_runs_key(job))
    pipe.hgetall(_run_seconds_key(job))
    runs, seconds = pipe.execute()
    stats = RunStats(finished={k.decode(): int(v) for k, v in runs.items()})
    values = {k.decode(): v for k, v in seconds.items()}
    if values:
        # One histogram over all states: the job reports a duration, not a state, per bucket.
        stats.buckets["all"] = [int(values.get(f"le:{b}", 0)) for b in RUN_BUCKETS]
        stats.duration_count["all"] = int(values.get("count", 0))
        stats.duration_sum["all"] = float(values.get("sum", 0.0))
    return stats


def _histogram(name: str, doc: str, stats: RunStats, label: str) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label] if label else [])
    for key, cumulative in sorted(stats.buckets.items()):
        bounds = [(str(b), float(n)) for b, n in zip(RUN_BUCKETS, cumulative, strict=True)]
        bounds.append(("+Inf", float(stats.duration_count.get(key, 0))))
        family.add_metric(
            [key] if label else [], bounds, sum_value=stats.duration_sum.get(key, 0.0)
        )
    return family


def _run_families(job: str, stats: RunStats, by_state_durations: bool) -> Iterator[Metric]:
    total = CounterMetricFamily(
        f"{PREFIX}_{job}_runs",
        f"{job.capitalize()} runs finished, by final state.",
        labels=["state"],
    )
    for state, count in sorted(stats.finished.items()):
        total.add_metric([state], count)
    yield total
    if by_state_durations:
        active = GaugeMetricFamily(
            f"{PREFIX}_{job}_runs_active",
            f"{job.capitalize()} runs queued or running now.",
            labels=["state"],
        )
        for state in ACTIVE_STATES:
            active.add_metric([state], stats.active.get(state, 0))
        yield active
    yield _histogram(
        f"{PREFIX}_{job}_run_duration_seconds",
        f"Time from a {job} run's start to its end"
        + (", by final state." if by_state_durations else "."),
        stats,
        "state" if by_state_durations else "",
    )


def _metrics_redis(app: Flask) -> Redis:
    conn: Redis | None = app.extensions.get("metrics_redis")
    if conn is None:
        conn = Redis.from_url(
            app.config["REDIS_URL"],
            socket_connect_timeout=REDIS_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S,
        )
        app.extensions["metrics_redis"] = conn
    return conn


class SharedState:
    """Collector of the figures every process shares: database, Redis (queue, workers,
    scheduler, what jobs reported)."""

    def __init__(self, app: Flask):
        self.app = app
        self.jobs_signals: dict[str, int] = {}

    def collect(self) -> Iterable[Metric]:
        yield from self._from_database()
        yield from self._from_redis()

    def _from_database(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            f"{PREFIX}_database_up", "1 when the database answered this scrape's queries."
        )
        try:
            stats = tune_run_stats()
            held, overdue = held_notifications(utcnow())
        except SQLAlchemyError as exc:
            log.warning("event=metrics_source_down source=database error=%s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _run_families("tune", stats, by_state_durations=True)
        yield _gauge(
            "held_notifications", "Notifications held for a digest, not yet delivered.", held
        )
        yield _gauge(
            "held_notifications_overdue",
            "Held notifications past their digest hour (the digest job is behind or not running).",
            overdue,
        )

    def _from_redis(self) -> Iterator[Metric]:
        from rq import Worker
        from rq.registry import FailedJobRegistry, StartedJobRegistry

        from jobs import settings
        from jobs.queue import get_queue
        from jobs.schedule import scheduler_alive

        conn = _metrics_redis(self.app)
        up = GaugeMetricFamily(f"{PREFIX}_redis_up", "1 when Redis answered this scrape.")
        try:
            queue = get_queue(conn)
            pipe = conn.pipeline(transaction=False)
            pipe.llen(queue.key)
            pipe.zcard(FailedJobRegistry(queue=queue).key)
            pipe.zcard(StartedJobRegistry(queue=queue).key)
            pipe.hgetall(SIGNALS_KEY)
            depth, failed, started, signals = pipe.execute()
            workers = int(Worker.count(connection=conn, queue=queue))
            scheduler = scheduler_alive(conn)
            observed = {job: observed_run_stats(conn, job) for job in OBSERVED_JOBS}
        except (RedisError, OSError) as exc:
            log.warning("event=metrics_source_down source=redis error=%s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        name = settings.queue_name()
        for metric, doc, value in (
            ("queue_depth", "Jobs waiting in the queue for a worker.", depth),
            ("queue_started_jobs", "Jobs a worker is executing now.", started),
            ("queue_failed_jobs", "Jobs in the queue's failed-job registry.", failed),
        ):
            gauge = GaugeMetricFamily(f"{PREFIX}_{metric}", doc, labels=["queue"])
            gauge.add_metric([name], int(value))
            yield gauge
        yield _gauge("workers", "RQ workers registered on the queue.", workers)
        yield _gauge("scheduler_up", "1 while an `rq scheduler` keeps its heartbeat.", scheduler)
        self.jobs_signals = {k.decode(): int(v) for k, v in signals.items()}
        for job, stats in observed.items():
            yield from _run_families(job, stats, by_state_durations=False)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", doc)
    family.add_metric([], float(value))
    return family


class _Exposition:
    """This scrape's registry: the processes' own counts merged with the shared state.

    Signals written by jobs (in Redis) join the web's signal counter as
    ``source="jobs"`` samples of the same family: one family, one TYPE line.
    """

    def __init__(self, app: Flask):
        self.shared = SharedState(app)

    def _process_families(self) -> Iterable[Metric]:
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(registry)
            return registry.collect()
        return _LOCAL.collect()

    def collect(self) -> Iterable[Metric]:
        shared = list(self.shared.collect())  # reads Redis, filling shared.jobs_signals
        signals_seen = False
        for family in self._process_families():
            if family.name == SIGNALS_FAMILY:
                signals_seen = True
                family.samples = [s for s in family.samples if s.labels.get("source") != "jobs"]
                family.samples += self._jobs_signal_samples()
            yield family
        if not signals_seen:
            family = CounterMetricFamily(SIGNALS_FAMILY, SIGNALS._documentation, labels=[])
            family.samples = self._jobs_signal_samples()
            yield family
        yield from shared

    def _jobs_signal_samples(self) -> list[Sample]:
        return [
            Sample(f"{SIGNALS_FAMILY}_total", {"kind": kind, "source": "jobs"}, float(count))
            for kind, count in sorted(self.shared.jobs_signals.items())
        ]


def render(app: Flask) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Exposition(app))
    return generate_latest(registry)


# --- access -------------------------------------------------------------------


def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _refusal() -> Response | None:
    """With METRICS_TOKEN: its bearer token or 401. Without: loopback clients or 403."""
    token = current_app.config.get("METRICS_TOKEN")
    if token:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), str(token).encode()
        ):
            return None
        return Response(
            "Send Authorization: Bearer <METRICS_TOKEN>.\n",
            401,
            mimetype="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    if _loopback(request.remote_addr):
        return None
    return Response(
        "/metrics answers loopback clients only; set METRICS_TOKEN to scrape it remotely.\n",
        403,
        mimetype="text/plain",
    )


@bp.get("/metrics")
def metrics() -> Response:
    refused = _refusal()
    if refused is not None:
        return refused
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    return Response(render(app), mimetype=None, content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    # The _created series double the exposition's size and carry nothing a dashboard uses.
    disable_created_metrics()
    observe.add_listener(LISTENER)
    for kind in SignalKind:
        SIGNALS.labels(kind.value, "web")  # the series exist, at 0, from the start
    # First of all hooks, so the time spent refusing a request counts too.
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)
    app.after_request(_count_response)
    app.register_blueprint(bp)
