"""The tune job: a tenant's ENGAGE/DELIVER signals of a window become per-feature calibrations."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, timedelta
from types import TracebackType
from typing import Any

from flask import current_app
from rq import get_current_job
from sqlalchemy import (
    BindParameter,
    Engine,
    Float,
    bindparam,
    case,
    cast,
    distinct,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import aliased

from jobs import constants, settings
from loops import rollup
from loops.database import db, insert_rows
from loops.delivery import Decided, PolicySettings, decide_for_tenants
from loops.models import (
    ACTIVE_RUN_STATES,
    ONCE_PER_SUBJECT_KINDS,
    Calibration,
    CalibrationHistory,
    LoopSignal,
    Organization,
    RunState,
    SignalKind,
    TuneRun,
)
from loops.partitions import once_guard
from loops.policy_rules import Evidence
from loops.signals import loops_on
from loops.stats import RatioMoments, prior_from_moments, shrunk_estimate, wilson_interval
from loops.timeutil import UTCDateTime, as_utc, utcnow

log = logging.getLogger(__name__)

Number = int | float


# --- the pure math ------------------------------------------------------------


def _positive_finite_pair(a: Number, b: Number) -> tuple[float, float] | None:
    """Both as floats when both are finite and > 0; None otherwise (never raises)."""
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError, OverflowError):
        return None
    if not (math.isfinite(x) and math.isfinite(y)) or x <= 0 or y <= 0:
        return None
    return x, y


def compute_engagement_scale(count: Number, days: Number) -> float:
    """Signals per day: ``count / days`` rounded to 4 decimals.

    0.0 for days <= 0, count <= 0, or any non-finite input. Pure.
    """
    pair = _positive_finite_pair(count, days)
    if pair is None:
        return 0.0
    rate = round(pair[0] / pair[1], 4)
    return rate if math.isfinite(rate) else 0.0


def compute_engagement_ratio(engaged: Number, delivered: Number) -> float:
    """Fraction of delivered notifications first-read: 0..1, 4 decimals; 0.0 if none delivered."""
    pair = _positive_finite_pair(engaged, delivered)
    if pair is None:
        return 0.0
    e, d = pair
    return round(min(e, d) / d, 4)


# --- what a run computes ------------------------------------------------------


@dataclass(frozen=True)
class FeatureCalibration:
    """One calibration a run would write.

    Ratio keys also carry their numerator, 95% Wilson interval and shrunk estimate.
    """

    key: str
    value: float
    sample_size: int
    distinct_users: int
    engaged: int | None = None
    interval: tuple[float, float] | None = None
    estimate: float | None = None

    @property
    def feature(self) -> str:
        return self.key.partition(":")[2]

    @property
    def is_ratio(self) -> bool:
        return self.key.startswith(constants.RATIO_PREFIX)


@dataclass(frozen=True)
class CalibrationChange:
    """What a run would change for one key (dry run)."""

    key: str
    old_value: float | None
    new_value: float
    sample_size: int
    distinct_users: int
    old_sample_size: int | None = None

    @property
    def change_pct(self) -> float | None:
        if self.old_value is None or self.old_value == 0:
            return None
        return round((self.new_value - self.old_value) / self.old_value * 100, 1)


@dataclass(frozen=True)
class TenantResult:
    """How one tenant's run ended."""

    org_id: int
    run_id: int
    state: str
    calibrations_written: int
    ms: int
    error: str | None = None


# How many tenants one aggregation covers: a job's batch is cut into chunks of
# this size, so memory stays bounded whatever TUNE_BATCH_SIZE says.
AGGREGATE_CHUNK = 50

_ORGS: BindParameter[int] = bindparam("orgs", expanding=True)
_SINCE = bindparam("since", type_=UTCDateTime())
_NOW = bindparam("now", type_=UTCDateTime())


def _count_statement(kind: SignalKind) -> Any:
    """Per tenant and feature: the window's signals of ``kind``, and how many people they came from.

    ENGAGE gives the rate's numerator; DELIVER the notifications delivered (the ratio's
    denominator).
    """
    s = LoopSignal
    return (
        select(s.org_id, s.feature, func.count(), func.count(distinct(s.user_id)))
        .where(
            s.org_id.in_(_ORGS),
            s.kind == kind.value,
            s.created_at >= _SINCE,
            s.created_at < _NOW,
        )
        .group_by(s.org_id, s.feature)
    )


def _first_read_statement(postgres: bool) -> Any:
    """Per tenant and feature: how many of the window's deliveries were first-read before now.

    A semi-join in the WHERE clause, not a CASE over a correlated EXISTS in the
    select list: the planner can then hash the reads for a chunk holding the big
    tenants and probe the exactly-once key for a chunk of small ones. The select-list
    form is always one probe per delivery (4.2 s against 0.9 s for the largest chunk
    of the 3M-signal bench, docs/PERFORMANCE.md).
    """
    delivered = aliased(LoopSignal)
    if postgres:
        # The exactly-once guard: one primary-key probe carrying created_at
        # (index-only), where loop_signals itself would be one probe per partition.
        claim = once_guard.c
        first_read = (
            select(literal_column("1"))
            .where(
                claim.kind == literal_column(f"'{SignalKind.ENGAGE.value}'"),
                claim.subject_id == delivered.subject_id,
                claim.created_at < _NOW,
            )
            .exists()
        )
    else:
        read = aliased(LoopSignal)
        first_read = (
            select(literal_column("1"))
            .where(
                # Literal kinds, repeating the partial unique index's predicate:
                # SQLite uses uq_loop_signals_once_per_subject only when the query
                # states that predicate verbatim (and not through bound parameters).
                read.kind.in_([literal_column(f"'{k}'") for k in ONCE_PER_SUBJECT_KINDS]),
                read.kind == literal_column(f"'{SignalKind.ENGAGE.value}'"),
                read.subject_id == delivered.subject_id,
                read.created_at < _NOW,
            )
            .exists()
        )
    return (
        select(delivered.org_id, delivered.feature, func.count())
        .where(
            delivered.org_id.in_(_ORGS),
            delivered.kind == SignalKind.DELIVER.value,
            delivered.created_at >= _SINCE,
            delivered.created_at < _NOW,
            first_read,
        )
        .group_by(delivered.org_id, delivered.feature)
    )


# Built once: compiled once per process and cached, whatever the batch.
_RATE = _count_statement(SignalKind.ENGAGE)
_DELIVERED = _count_statement(SignalKind.DELIVER)
_FIRST_READ = {
    "postgresql": _first_read_statement(postgres=True),
    "sqlite": _first_read_statement(postgres=False),
}


def compute_batch(
    org_ids: Sequence[int],
    now: datetime,
    lookback_days: int,
) -> dict[int, list[FeatureCalibration]]:
    """Aggregate the window ``[now - lookback, now)`` for these tenants: three queries in all.

    ``engagement-rate:<f>`` = ENGAGE signals per day; ``engagement-ratio:<f>`` = of
    the notifications delivered (DELIVER) in the window, the fraction that have an
    ENGAGE (a first read) before ``now``. Features without signals yield nothing.
    Runs in the caller's transaction (on PostgreSQL it raises that transaction's
    ``work_mem``, so the distinct-user counts sort in memory, and keeps its queries
    serial: the other RQ workers' jobs have the other cores).
    """
    out: dict[int, list[FeatureCalibration]] = {org_id: [] for org_id in org_ids}
    if not org_ids:
        return out
    dialect = db.session.get_bind().dialect.name
    if dialect == "postgresql":
        db.session.execute(text(f"SET LOCAL work_mem = '{constants.AGGREGATE_WORK_MEM}'"))
        db.session.execute(
            text(
                "SET LOCAL max_parallel_workers_per_gather = "
                f"{constants.AGGREGATE_PARALLEL_WORKERS}"
            )
        )
    params = {"orgs": list(org_ids), "since": now - timedelta(days=lookback_days), "now": now}
    for org_id, feature, count, users in db.session.execute(_RATE, params):
        out[int(org_id)].append(
            FeatureCalibration(
                key=f"{constants.RATE_PREFIX}{feature}",
                value=compute_engagement_scale(count, lookback_days),
                sample_size=int(count),
                distinct_users=int(users),
            )
        )
    engaged_by = {
        (int(org_id), str(feature)): int(n)
        for org_id, feature, n in db.session.execute(_FIRST_READ[dialect], params)
    }
    for org_id, feature, sent, users in db.session.execute(_DELIVERED, params):
        engaged = engaged_by.get((int(org_id), str(feature)), 0)
        out[int(org_id)].append(
            FeatureCalibration(
                key=f"{constants.RATIO_PREFIX}{feature}",
                value=compute_engagement_ratio(engaged, sent),
                sample_size=int(sent),
                distinct_users=int(users),
                engaged=min(int(engaged), int(sent)),
                interval=wilson_interval(int(engaged), int(sent)),
            )
        )
    out = _with_estimates(out, now, lookback_days)
    return {org_id: sorted(cals, key=lambda c: c.key) for org_id, cals in out.items()}


def stored_ratio_moments(
    now: datetime, lookback_days: int, keys: set[str], other_than: Sequence[int]
) -> dict[str, RatioMoments]:
    """Per ratio key, the sums of the stored (engaged, n) of every tenant not in ``other_than``.

    Only values computed within the last window count: a tenant that stopped
    receiving a feature long ago says nothing about it today. One aggregate in the
    database (a row per key), not every tenant's pair: the prior needs only the sums.
    """
    c = Calibration
    n = c.sample_size
    # Rows written before the numerator was stored: recover it from the ratio.
    raw = func.coalesce(c.engaged, func.round(c.value * n))
    engaged = case((raw < 0, 0), (raw > n, n), else_=raw)
    as_float = cast(engaged, Float)
    query = (
        select(
            c.key,
            func.count(),
            func.sum(n),
            func.sum(engaged),
            func.sum(as_float * as_float / n),
            func.sum(cast(n, Float) * n),
        )
        .where(
            c.key.in_(sorted(keys)),
            c.computed_at > now - timedelta(days=lookback_days),
            c.org_id.not_in(list(other_than)),
            n > 0,
        )
        .group_by(c.key)
    )
    return {
        str(key): RatioMoments(int(k), int(total), int(e), float(e2n or 0), float(n2 or 0))
        for key, k, total, e, e2n, n2 in db.session.execute(query)
    }


def _with_estimates(
    batch: dict[int, list[FeatureCalibration]], now: datetime, lookback_days: int
) -> dict[int, list[FeatureCalibration]]:
    """Fill each ratio's empirical-Bayes estimate.

    Each feature's Beta prior is fitted to every tenant's counts of that feature:
    this batch's fresh counts, and the latest stored ones of all other tenants
    (which include what earlier chunks of the same job have just written).
    """
    ratios = [c for cals in batch.values() for c in cals if c.is_ratio]
    if not ratios:
        return batch
    keys = {c.key for c in ratios}
    moments = stored_ratio_moments(now, lookback_days, keys, list(batch))
    fresh: dict[str, list[tuple[int, int]]] = {key: [] for key in keys}
    for c in ratios:
        fresh[c.key].append((c.engaged or 0, c.sample_size))
    priors = {
        key: prior_from_moments(moments.get(key, RatioMoments()) + RatioMoments.of(pairs))
        for key, pairs in fresh.items()
    }
    out: dict[int, list[FeatureCalibration]] = {}
    for org_id, cals in batch.items():
        filled = []
        for c in cals:
            prior = priors.get(c.key) if c.is_ratio else None
            if prior is not None:
                c = replace(c, estimate=shrunk_estimate(c.engaged or 0, c.sample_size, prior))
            filled.append(c)
        out[org_id] = filled
    return out


def compute_calibrations(
    org_id: int, now: datetime, lookback_days: int
) -> list[FeatureCalibration]:
    """One tenant's calibrations for the window (see compute_batch)."""
    return compute_batch([org_id], now, lookback_days)[org_id]


def _current(org_id: int, keys: list[str]) -> dict[str, Calibration]:
    if not keys:
        return {}
    rows = db.session.execute(
        select(Calibration).where(Calibration.org_id == org_id, Calibration.key.in_(keys))
    ).scalars()
    return {row.key: row for row in rows}


def dry_run(org_id: int, now: datetime) -> list[CalibrationChange]:
    """What a run at ``now`` would write for this tenant, against current values. Writes nothing."""
    computed = compute_calibrations(org_id, now, settings.lookback_days())
    current = _current(org_id, [c.key for c in computed])
    changes = []
    for c in computed:
        old = current.get(c.key)
        changes.append(
            CalibrationChange(
                key=c.key,
                old_value=old.value if old else None,
                new_value=c.value,
                sample_size=c.sample_size,
                distinct_users=c.distinct_users,
                old_sample_size=old.sample_size if old else None,
            )
        )
    db.session.rollback()
    return changes


def _on_conflict_update(insert: Any) -> Any:
    """A calibration written again: ON CONFLICT (org_id, key) DO UPDATE, in place.

    The SET expressions read the row's old values, which become its ``previous_*``.
    """
    table = Calibration.__table__
    new = insert.excluded
    return insert.on_conflict_do_update(
        index_elements=[table.c.org_id, table.c.key],
        set_={
            "previous_value": table.c.value,
            "previous_sample_size": table.c.sample_size,
            "previous_computed_at": table.c.computed_at,
            "previous_run_id": table.c.run_id,
            "value": new.value,
            "sample_size": new.sample_size,
            "window_days": new.window_days,
            "computed_at": new.computed_at,
            "distinct_users": new.distinct_users,
            "run_id": new.run_id,
            "engaged": new.engaged,
            "interval_low": new.interval_low,
            "interval_high": new.interval_high,
            "estimate": new.estimate,
        },
    )


@dataclass(frozen=True)
class _Run:
    run_id: int
    org_id: int
    slug: str


@dataclass(frozen=True)
class _TenantWrite:
    """What one tenant's run writes: its calibrations and its chart rows' changes."""

    run: _Run
    computed: list[FeatureCalibration]
    daily: rollup.Changes


def _calibration_row(
    w: _TenantWrite, c: FeatureCalibration, now: datetime, window: int
) -> dict[str, Any]:
    return {
        "org_id": w.run.org_id,
        "key": c.key,
        "value": c.value,
        "sample_size": c.sample_size,
        "window_days": window,
        "computed_at": now,
        "distinct_users": c.distinct_users,
        "run_id": w.run.run_id,
        "engaged": c.engaged,
        "interval_low": c.interval[0] if c.interval else None,
        "interval_high": c.interval[1] if c.interval else None,
        "estimate": c.estimate,
    }


def _write(writes: Sequence[_TenantWrite], now: datetime, window: int) -> None:
    """Write these tenants' runs in the caller's transaction, a statement per table for all.

    Calibrations are created or updated in place (same row id), keeping what each
    value replaced; then the delivery decisions, one history row per value written,
    and the chart rollup's changed days.
    """
    rows = [_calibration_row(w, c, now, window) for w in writes for c in w.computed]
    insert_rows(Calibration.__table__, rows, _on_conflict_update)
    decisions = _decide_delivery(writes, now)
    history = [
        _history_row(w, c, now, window, decisions.get(w.run.org_id, {}))
        for w in writes
        for c in w.computed
    ]
    insert_rows(CalibrationHistory.__table__, history)
    rollup.apply_many({w.run.org_id: w.daily for w in writes})


def _stall_for_tests() -> None:
    delay = settings.test_delay_s()
    if delay > 0:
        # TEST-ONLY hook (TUNE_TEST_DELAY_S): stall with the calibrations written
        # but not committed, so a test can kill the worker mid-transaction.
        time.sleep(delay)


def _decide_delivery(
    writes: Sequence[_TenantWrite], now: datetime
) -> dict[int, dict[str, Decided]]:
    """Each measured feature's delivery mode, per tenant, in the writing transaction."""
    measured = {}
    for w in writes:
        evidence = [
            (c.feature, Evidence(c.value, c.interval[0], c.interval[1], c.sample_size))
            for c in w.computed
            if c.is_ratio and c.interval is not None
        ]
        if evidence:
            measured[w.run.org_id] = (w.run.run_id, evidence)
    if not measured:
        return {}
    threshold = PolicySettings.from_config(current_app.config).digest_below
    return decide_for_tenants(measured, threshold, now)


def _history_row(
    w: _TenantWrite,
    c: FeatureCalibration,
    now: datetime,
    window: int,
    decisions: dict[str, Decided],
) -> dict[str, Any]:
    """One value written, as the history keeps it; a ratio row with its delivery decision."""
    decision = decisions.get(c.feature) if c.is_ratio else None
    return {
        "org_id": w.run.org_id,
        "key": c.key,
        "value": c.value,
        "sample_size": c.sample_size,
        "window_days": window,
        "engaged": c.engaged,
        "interval_low": c.interval[0] if c.interval else None,
        "interval_high": c.interval[1] if c.interval else None,
        "estimate": c.estimate,
        "run_id": w.run.run_id,
        "computed_at": now,
        "mode": decision.mode if decision else None,
        "mode_reason": decision.reason if decision else None,
        # A decision that changes the mode (or is the first) restarts mode_since.
        "mode_changed": (as_utc(decision.mode_since) == as_utc(now)) if decision else None,
    }


# --- per-tenant orchestration ------------------------------------------------


def _job_id() -> str | None:
    job = get_current_job()
    return job.id if job else None


def _state_of(run_id: int) -> str:
    state = db.session.execute(select(TuneRun.state).where(TuneRun.id == run_id)).scalar()
    return str(state) if state else "missing"


def _claim(run_ids: Sequence[int]) -> set[int]:
    """queued → running for these runs, in one commit; the ids this call took.

    A run that is not queued (a duplicate delivery of its job, or swept) is not
    ours to run and is left out.
    """
    at = utcnow()
    claimed = db.session.execute(
        update(TuneRun)
        .where(TuneRun.id.in_(list(run_ids)), TuneRun.state == RunState.QUEUED.value)
        .values(state=RunState.RUNNING.value, started_at=at, heartbeat_at=at)
        .returning(TuneRun.id)
        .execution_options(synchronize_session=False)
    ).scalars()
    taken = {int(run_id) for run_id in claimed}
    db.session.commit()
    return taken


def _finish(run_id: int, state: RunState, *, error: str | None = None, written: int = 0) -> bool:
    """Record the end of a running run; False if it was no longer running (swept)."""
    result = db.session.execute(
        update(TuneRun)
        .where(TuneRun.id == run_id, TuneRun.state == RunState.RUNNING.value)
        .values(
            state=state.value,
            finished_at=utcnow(),
            heartbeat_at=utcnow(),
            calibrations_written=written,
            error=error[: constants.ERROR_MAX_CHARS] if error else None,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _finish_succeeded(written: dict[int, int]) -> set[int]:
    """Record these running runs as succeeded (run id -> values written); the ids it did.

    A run missing from the answer was no longer running (swept meanwhile).
    """
    at = utcnow()
    finished = db.session.execute(
        update(TuneRun)
        .where(TuneRun.id.in_(list(written)), TuneRun.state == RunState.RUNNING.value)
        .values(
            state=RunState.SUCCEEDED.value,
            finished_at=at,
            heartbeat_at=at,
            calibrations_written=case(written, value=TuneRun.id),
            error=None,
        )
        .returning(TuneRun.id)
        .execution_options(synchronize_session=False)
    ).scalars()
    return {int(run_id) for run_id in finished}


@dataclass(frozen=True)
class _Prepared:
    """A chunk's aggregates, read once for all its tenants."""

    calibrations: dict[int, list[FeatureCalibration]]
    daily_changes: dict[int, rollup.Changes]


def _rollup_since(org_ids: list[int], now: datetime, window: int) -> dict[int, date]:
    """From which day each tenant's chart rollup needs recounting.

    The whole window, except for days that ended before the tenant's previous
    successful run: that run recounted its window when those days were over, and
    a day that has ended never gains signals (they are stamped when written).
    So a weekly run recounts about eight days, not thirty-one, and still heals
    the days the periodic refresh missed (workers down, say) since the last run.
    """
    window_start = (now - timedelta(days=window)).date()
    previous = db.session.execute(
        select(TuneRun.org_id, func.max(TuneRun.started_at))
        .where(
            TuneRun.org_id.in_(org_ids),
            TuneRun.state == RunState.SUCCEEDED.value,
            TuneRun.started_at <= now,
        )
        .group_by(TuneRun.org_id)
    ).all()
    since = {org_id: window_start for org_id in org_ids}
    for org_id, started_at in previous:
        if started_at is not None:
            since[int(org_id)] = max(window_start, as_utc(started_at).date())
    return since


def _prepare(org_ids: list[int], now: datetime, window: int) -> _Prepared | None:
    """Aggregate a chunk of tenants in one read transaction; on error None (and logged)."""
    try:
        calibrations = compute_batch(org_ids, now, window)
        prepared: _Prepared | None = _Prepared(
            calibrations=calibrations,
            daily_changes=rollup.pending(_rollup_since(org_ids, now, window)),
        )
    except Exception:
        # Each tenant then aggregates alone, so one tenant's problem stays its own.
        log.exception(
            "event=tune_batch_aggregate_failed tenants=%d job=%s", len(org_ids), _job_id()
        )
        prepared = None
    db.session.rollback()
    return prepared


def _tune_together(
    runs: list[_Run], now: datetime, prepared: _Prepared, job_id: str | None
) -> list[TenantResult] | None:
    """Write and finish a chunk's claimed runs in one transaction: a statement per table.

    One commit for the chunk instead of one per tenant, which is most of what a
    tenant cost beyond its share of the aggregation. All or nothing: on any error,
    or a run swept meanwhile, it rolls back and returns None, and the caller writes
    each tenant in its own transaction, so one tenant's problem stays its own.
    """
    started = time.perf_counter()
    window = settings.lookback_days()
    writes = [
        _TenantWrite(r, prepared.calibrations[r.org_id], prepared.daily_changes[r.org_id])
        for r in runs
    ]
    try:
        _write(writes, now, window)
        _stall_for_tests()
        finished = _finish_succeeded({w.run.run_id: len(w.computed) for w in writes})
        if finished != {r.run_id for r in runs}:
            db.session.rollback()
            log.warning(
                "event=tune_chunk_write_retried reason=swept tenants=%d job=%s", len(runs), job_id
            )
            return None
        db.session.commit()
    except Exception:
        db.session.rollback()
        log.exception("event=tune_chunk_write_failed tenants=%d job=%s", len(runs), job_id)
        return None
    return [
        _logged(w.run, RunState.SUCCEEDED.value, started, job_id, len(w.computed), None)
        for w in writes
    ]


def _tune_claimed(
    run: _Run, now: datetime, prepared: _Prepared | None, job_id: str | None
) -> TenantResult:
    """Compute (or take the chunk's aggregates), write and finish one claimed run: one transaction.

    The calibrations, the chart rollup and the run's ``succeeded`` commit together:
    a tenant is never half-written. Any error fails only this tenant.
    """
    started = time.perf_counter()

    def result(state: str, written: int = 0, error: str | None = None) -> TenantResult:
        return _logged(run, state, started, job_id, written, error)

    if not loops_on():
        _finish(run.run_id, RunState.SKIPPED, error=None)
        db.session.commit()
        return result(RunState.SKIPPED.value)

    window = settings.lookback_days()
    try:
        if run.slug in settings.test_fail_tenants():
            raise RuntimeError(f"test hook: tuning of {run.slug} fails (TUNE_TEST_FAIL_TENANTS)")
        if prepared is None:
            computed = compute_calibrations(run.org_id, now, window)
            since = (now - timedelta(days=window)).date()
            daily = rollup.pending({run.org_id: since})[run.org_id]
        else:
            computed = prepared.calibrations[run.org_id]
            daily = prepared.daily_changes[run.org_id]
        _write([_TenantWrite(run, computed, daily)], now, window)
        _stall_for_tests()
        if not _finish(run.run_id, RunState.SUCCEEDED, written=len(computed)):
            db.session.rollback()
            return result(
                _state_of(run.run_id), error="run was swept while working; nothing written"
            )
        db.session.commit()
        return result(RunState.SUCCEEDED.value, len(computed))
    except Exception as exc:
        db.session.rollback()
        error = f"{type(exc).__name__}: {exc}"
        log.exception(
            "event=tune_tenant_error org=%s run=%s job=%s", run.org_id, run.run_id, job_id
        )
        try:
            _finish(run.run_id, RunState.FAILED, error=error)
            db.session.commit()
        except SQLAlchemyError:
            db.session.rollback()
            log.exception("event=tune_tenant_record_failure org=%s run=%s", run.org_id, run.run_id)
        return result(RunState.FAILED.value, error=error)


def _logged(
    run: _Run, state: str, started: float, job_id: str | None, written: int, error: str | None
) -> TenantResult:
    ms = int((time.perf_counter() - started) * 1000)
    log_fn = log.warning if state == RunState.FAILED.value else log.info
    log_fn(
        "event=tune_tenant tenant=%s org=%s run=%s state=%s calibrations=%d ms=%d job=%s%s",
        run.slug,
        run.org_id,
        run.run_id,
        state,
        written,
        ms,
        job_id,
        f" error={error!r}" if error else "",
    )
    return TenantResult(run.org_id, run.run_id, state, written, ms, error)


def _tune_chunk(runs: list[_Run], now: datetime) -> list[TenantResult]:
    """Claim a chunk's runs, aggregate its tenants together and write them together.

    Tenants the chunk's write could not take (its transaction failed) are written
    each in its own transaction.
    """
    job_id = _job_id()
    started = time.perf_counter()
    claimed = _claim([r.run_id for r in runs])
    mine = [r for r in runs if r.run_id in claimed]
    prepared = None
    if mine and loops_on():
        prepared = _prepare([r.org_id for r in mine], now, settings.lookback_days())
    done: dict[int, TenantResult] = {}
    if prepared is not None:
        failing = settings.test_fail_tenants()
        together = [r for r in mine if r.slug not in failing]
        written = _tune_together(together, now, prepared, job_id) if together else None
        done = {result.run_id: result for result in written or []}
    results = []
    for run in runs:
        if run.run_id in done:
            results.append(done[run.run_id])
        elif run.run_id in claimed:
            results.append(_tune_claimed(run, now, prepared, job_id))
        else:
            # Already taken (a duplicate delivery of the job) or swept: not ours to run.
            state = _state_of(run.run_id)
            db.session.rollback()
            results.append(
                _logged(run, state, started, job_id, 0, "run was not queued; left alone")
            )
    return results


def tune_tenant(
    org_id: int, run_id: int, now: datetime, *, slug: str | None = None
) -> TenantResult:
    """Run one tenant's tuning for run ``run_id`` (which must be ``queued``): a chunk of one."""
    if slug is None:
        slug = db.session.execute(
            select(Organization.slug).where(Organization.id == org_id)
        ).scalar()
    return _tune_chunk([_Run(run_id, org_id, str(slug))], now)[0]


class Heartbeat:
    """Bumps ``heartbeat_at`` of a job's active runs from a thread while the job works.

    Its own connection and autocommit, so it beats even while a tenant's long
    aggregation holds the main transaction. When the process dies the beats stop,
    and the sweep fails the runs (see constants: at most 75 s after the kill).
    """

    def __init__(self, engine: Engine, run_ids: list[int], interval_s: float) -> None:
        self.engine = engine
        self.run_ids = list(run_ids)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tune-heartbeat", daemon=True)

    def beat(self) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(TuneRun)
                    .where(TuneRun.id.in_(self.run_ids), TuneRun.state.in_(ACTIVE_RUN_STATES))
                    .values(heartbeat_at=utcnow())
                )
        except SQLAlchemyError as exc:
            log.warning("event=heartbeat_failed runs=%d error=%s", len(self.run_ids), exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def __enter__(self) -> Heartbeat:
        if self.run_ids:
            self.beat()
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 35)


def perform_runs_now(run_ids: list[int], now: datetime | None = None) -> list[TenantResult]:
    """Tune the tenants of these queued runs, a chunk at a time, under one heartbeat.

    Each chunk of up to AGGREGATE_CHUNK tenants is claimed together and
    aggregated with one query per calibration family (and one for the chart
    rollup); every tenant is then written, and its run finished, in its own
    transaction, so per-tenant status and fault isolation are as for one run.
    """
    runs: dict[int, _Run] = {
        int(run_id): _Run(int(run_id), int(org_id), str(slug))
        for run_id, org_id, slug in db.session.execute(
            select(TuneRun.id, TuneRun.org_id, Organization.slug)
            .join(Organization, Organization.id == TuneRun.org_id)
            .where(TuneRun.id.in_(run_ids))
        )
    }
    db.session.rollback()
    for run_id in run_ids:
        if run_id not in runs:
            log.warning("event=run_missing run=%s job=%s", run_id, _job_id())
    ordered = [runs[r] for r in run_ids if r in runs]
    results: list[TenantResult] = []
    with Heartbeat(db.engine, [r.run_id for r in ordered], settings.heartbeat_s()):
        for start in range(0, len(ordered), AGGREGATE_CHUNK):
            chunk = ordered[start : start + AGGREGATE_CHUNK]
            results.extend(_tune_chunk(chunk, now or utcnow()))
    return results


def perform_runs(run_ids: list[int]) -> list[dict[str, Any]]:
    """RQ entry point (takes ids, never ORM objects); runs inside the worker's app context."""
    return [asdict(r) for r in perform_runs_now([int(r) for r in run_ids])]
