"""Signal retention: signals older than SIGNAL_RETENTION_DAYS go, the daily counts stay.

The cutoff is the UTC midnight on or before ``now - retention days``: nothing younger
than the retention is ever removed. On PostgreSQL whole month partitions that ended
by the cutoff are dropped (so up to a month more than the retention is kept: nothing
older than retention + 31 days remains), and the default partition's old rows are
deleted. On SQLite old rows are deleted in batches, committing between them, so a
mark-read waits for one batch at most, never for the whole prune.

Before anything is removed, the days about to go are recounted into the daily counts
(``loop_signal_daily``), and the cutoff is recorded in ``loop_signal_prunes``: the
rollup never recounts a day before the highest recorded cutoff, so a pruned day's
counts are never replaced by the zeros its missing signals would give.
"""

from __future__ import annotations

import logging
import time as clock
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta

from sqlalchemy import bindparam, func, select, text, update

from loops import partitions, rollup
from loops.database import db
from loops.models import LoopSignal, SignalDailyCount, SignalPrune
from loops.partitions import Partition
from loops.timeutil import UTC, UTCDateTime

log = logging.getLogger(__name__)

# Rows deleted per transaction where rows are deleted one by one (SQLite, and the
# PostgreSQL default partition): a concurrent mark-read waits for one batch at most.
DELETE_BATCH = 10_000
# Tenants recounted per transaction when the days about to be pruned are rolled up.
ROLLUP_BATCH = 100
# Two prunes at once on PostgreSQL would race to drop the same partitions.
_LOCK_KEY = "engagement-loops:signals-prune"

Progress = Callable[[int, int], None]


class PruneBusy(RuntimeError):
    """Another prune holds the lock."""


@dataclass(frozen=True)
class PruneOutcome:
    """What a prune removed (or, dry run, would remove)."""

    retention_days: int
    cutoff: datetime | None = None
    removed: int = 0
    dropped: tuple[str, ...] = ()
    created: tuple[str, ...] = ()
    partitioned: bool = False
    dry_run: bool = False
    ms: int = field(default=0, compare=False)

    def __str__(self) -> str:
        if self.cutoff is None:
            line = "retention off: nothing pruned"
            if self.created:
                what = "would create" if self.dry_run else "created"
                line += f" ({what} {_count(len(self.created), 'partition')} ahead)"
            return line
        verb = "would prune" if self.dry_run else "pruned"
        line = (
            f"{verb} {_count(self.removed, 'signal')} older than {self.cutoff.date().isoformat()} "
            f"(retention {self.retention_days} days)"
        )
        if self.partitioned:
            dropped = "to drop" if self.dry_run else "dropped"
            created = "to create" if self.dry_run else "created"
            line += (
                f": {_count(len(self.dropped), 'partition')} {dropped}, "
                f"{len(self.created)} {created}"
            )
        return line


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def cutoff_for(now: datetime, retention_days: int) -> datetime:
    """The UTC midnight on or before ``now - retention_days``: older signals are pruned."""
    day = (now.astimezone(UTC) - timedelta(days=retention_days)).date()
    return datetime.combine(day, time.min, tzinfo=UTC)


def prune(
    now: datetime,
    retention_days: int,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PruneOutcome:
    """Remove the signals older than the retention and, on PostgreSQL, keep partitions ahead.

    ``retention_days`` 0 keeps every signal (partitions are still created ahead).
    ``dry_run`` counts what would go and writes nothing. Commits its own transactions.
    """
    started = clock.monotonic()
    report = progress or (lambda _done, _total: None)
    partitioned = partitions.is_postgres()
    if partitioned:
        partitions.require_partitioned()
    cutoff = cutoff_for(now, retention_days) if retention_days > 0 else None
    with _exclusive():
        if partitioned:
            outcome = _prune_partitions(now, retention_days, cutoff, dry_run, report)
        else:
            outcome = _prune_rows(retention_days, cutoff, dry_run, report)
    outcome = replace(outcome, ms=int((clock.monotonic() - started) * 1000))
    log.info(
        "event=signals_pruned dry_run=%s retention_days=%d cutoff=%s removed=%d "
        "partitions_dropped=%d partitions_created=%d ms=%d",
        dry_run,
        retention_days,
        cutoff.isoformat() if cutoff else None,
        outcome.removed,
        len(outcome.dropped),
        len(outcome.created),
        outcome.ms,
    )
    return outcome


@contextmanager
def _exclusive() -> Iterator[None]:
    """One prune at a time on PostgreSQL (an advisory lock on a connection of its own).

    SQLite needs none: its writes take turns, and a batch another prune already
    deleted is simply not there any more.
    """
    if not partitions.is_postgres():
        yield
        return
    with db.engine.connect() as conn:
        held = conn.execute(
            text("SELECT pg_try_advisory_lock(hashtext(:key))"), {"key": _LOCK_KEY}
        ).scalar()
        conn.commit()
        if not held:
            raise PruneBusy("another prune is running; try again when it has finished")
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": _LOCK_KEY})
            conn.commit()


# --- PostgreSQL ----------------------------------------------------------------


def _prune_partitions(
    now: datetime,
    retention_days: int,
    cutoff: datetime | None,
    dry_run: bool,
    report: Progress,
) -> PruneOutcome:
    have = {p.start for p in partitions.partitions() if p.start is not None}
    ahead = [m for m in partitions.months_wanted(now) if m not in have]
    # Rows waiting in the default partition get their month's partition, unless they
    # are old enough to be pruned (those are deleted first, below).
    since = cutoff or datetime.min.replace(tzinfo=UTC)
    strays = [m for m in partitions.default_months(since) if m not in have and m not in ahead]
    db.session.rollback()
    created = tuple(partitions.partition_name(m) for m in sorted(ahead + strays))
    if not dry_run:
        for month in ahead:
            partitions.create_month(month)
    if cutoff is None:
        if not dry_run:
            for month in strays:
                partitions.create_month(month)
        return PruneOutcome(retention_days, created=created, partitioned=True, dry_run=dry_run)

    existing = partitions.partitions()
    expired = [p for p in existing if p.end is not None and p.end <= cutoff]
    default = next((p for p in existing if p.is_default), None)
    counts = [partitions.count_rows(p) for p in expired]
    in_default = partitions.count_rows(default, before=cutoff) if default else 0
    db.session.rollback()
    total = sum(counts) + in_default
    outcome = PruneOutcome(
        retention_days,
        cutoff,
        total,
        tuple(p.name for p in expired),
        created,
        partitioned=True,
        dry_run=dry_run,
    )
    if dry_run:
        return outcome

    oldest = _oldest_to_remove(expired, in_default)
    newest_subject = _newest_subject(expired, in_default, cutoff)
    if oldest is not None:
        _close_books(oldest.date(), cutoff.date() - timedelta(days=1))
    prune_id = _record(cutoff)
    report(0, total)
    done = 0
    if in_default:
        done = _delete_in_batches(partitions.DEFAULT_PARTITION, cutoff, lambda n: report(n, total))
    for month in strays:
        partitions.create_month(month)
    for partition, count in zip(expired, counts, strict=True):
        partitions.drop(partition)
        done += count
        report(done, total)
    _forget_claims(cutoff, newest_subject)
    _finish(prune_id, done, len(expired))
    return replace(outcome, removed=done)


def _oldest_to_remove(expired: list[Partition], in_default: int) -> datetime | None:
    starts = [p.start for p in expired if p.start is not None]
    if in_default:
        oldest_default = db.session.execute(
            text(f"SELECT min(created_at) FROM {partitions.DEFAULT_PARTITION}")
        ).scalar()
        db.session.rollback()
        if oldest_default is not None:
            starts.append(oldest_default)
    return min(starts) if starts else None


def _newest_subject(expired: list[Partition], in_default: int, cutoff: datetime) -> int | None:
    """The highest notification id among the signals this prune removes; None if none.

    Read before they go: their claims all lie at or below it in the claims' primary
    key (kind, subject_id), so forgetting them is a range of that key, not a scan of
    every claim ever made (one per signal: 50M rows in the 400-day bench).
    """
    selects = [f"SELECT max(subject_id) FROM {p.name}" for p in expired]
    if in_default:
        selects.append(
            f"SELECT max(subject_id) FROM {partitions.DEFAULT_PARTITION} WHERE created_at < :cutoff"
        )
    if not selects:
        return None
    newest = db.session.execute(
        text(f"SELECT max(m) FROM ({' UNION ALL '.join(selects)}) AS t(m)"), {"cutoff": cutoff}
    ).scalar()
    db.session.rollback()
    return None if newest is None else int(newest)


def _forget_claims(cutoff: datetime, newest_subject: int | None) -> None:
    """Drop the exactly-once claims of signals that no longer exist.

    Claims go only below the oldest signal still kept (a partition straddling the
    cutoff keeps its older rows, and their claims with them), so no two ENGAGE or
    DELIVER rows for one notification can ever exist side by side. A notification
    whose signals are gone cannot be signalled again by the app either: its first
    read (first_read_at) and its delivery (delivered_at) are set once.

    Only claims of notifications up to ``newest_subject`` are looked at (see
    ``_newest_subject``); notification ids grow with time, so the claims of signals
    an earlier prune removed lie below it too.
    """
    if newest_subject is None:
        return
    kept = [p.start for p in partitions.partitions() if p.start is not None]
    horizon = min([cutoff, *kept])
    partitions.lift_statement_timeout()
    # One statement: it locks only old claims, which nothing writes any more.
    db.session.execute(
        text(
            f"DELETE FROM loop_signal_once WHERE kind IN {partitions.ONCE_KINDS_SQL} "
            "AND subject_id <= :newest AND created_at < :horizon"
        ),
        {"horizon": horizon, "newest": newest_subject},
    )
    db.session.commit()


# --- SQLite ----------------------------------------------------------------------


def _prune_rows(
    retention_days: int, cutoff: datetime | None, dry_run: bool, report: Progress
) -> PruneOutcome:
    if cutoff is None:
        return PruneOutcome(retention_days, dry_run=dry_run)
    total, oldest = db.session.execute(
        select(func.count(), func.min(LoopSignal.created_at)).where(LoopSignal.created_at < cutoff)
    ).one()
    db.session.rollback()
    outcome = PruneOutcome(retention_days, cutoff, int(total), dry_run=dry_run)
    if dry_run:
        return outcome
    if oldest is not None:
        _close_books(oldest.date(), cutoff.date() - timedelta(days=1))
    prune_id = _record(cutoff)
    report(0, int(total))
    removed = _delete_in_batches(LoopSignal.__tablename__, cutoff, lambda n: report(n, int(total)))
    _finish(prune_id, removed, 0)
    return PruneOutcome(retention_days, cutoff, removed, dry_run=False)


# --- both ------------------------------------------------------------------------


def _close_books(first: date, last: date) -> None:
    """Recount days [first, last] into the daily counts before their signals go.

    The rollup keeps these days current as they happen; this makes sure a day the
    rollup missed (no worker running then, say) is counted before it can no longer
    be. A month at a time: one pass over the month's signals finds the tenants whose
    counts fall short (``_short_tenants``), and only those are recounted, ROLLUP_BATCH
    tenants a transaction; days before an earlier prune's cutoff are left alone (the
    rollup never recounts those).
    """
    if last < first:
        return
    day = first
    while day <= last:
        until = min(last, _month_end(day))
        short = _short_tenants(day, until)
        for start in range(0, len(short), ROLLUP_BATCH):
            chunk = short[start : start + ROLLUP_BATCH]
            partitions.lift_statement_timeout()
            for org_id, change in rollup.pending(dict.fromkeys(chunk, day), until).items():
                rollup.apply(org_id, *change)
            db.session.commit()
        day = until + timedelta(days=1)


def _short_tenants(first: date, last: date) -> list[int]:
    """Tenants whose daily counts of days [first, last] may differ from their signals.

    Compared per tenant, kind and feature over the whole span: one scan of the
    signals (a month's partition on PostgreSQL) and one of the daily counts. Equal
    totals mean equal days: a stored day's count never exceeds its signals (it was
    counted from them, and a day that has ended gains no signals and loses none
    before its prune; a deleted tenant takes both), so a day counted short would
    show in the total.
    """
    start = datetime.combine(first, time.min, tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
    s, d = LoopSignal, SignalDailyCount
    partitions.lift_statement_timeout()
    signals = {
        (int(org_id), str(kind), str(feature)): int(n)
        for org_id, kind, feature, n in db.session.execute(
            select(s.org_id, s.kind, s.feature, func.count())
            .where(s.created_at >= start, s.created_at < end)
            .group_by(s.org_id, s.kind, s.feature)
        )
    }
    counted = {
        (int(org_id), str(kind), str(feature)): int(n)
        for org_id, kind, feature, n in db.session.execute(
            select(d.org_id, d.kind, d.feature, func.sum(d.count))
            .where(d.day >= first, d.day <= last)
            .group_by(d.org_id, d.kind, d.feature)
        )
    }
    db.session.rollback()
    return sorted(
        {key[0] for key in signals.keys() | counted.keys() if signals.get(key) != counted.get(key)}
    )


def _month_end(day: date) -> date:
    following = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return following - timedelta(days=1)


def _record(cutoff: datetime) -> int:
    """Record the cutoff, committed, before a single signal is removed."""
    row = SignalPrune(cutoff=cutoff, started_at=datetime.now(UTC))
    db.session.add(row)
    db.session.commit()
    return row.id


def _finish(prune_id: int, removed: int, dropped: int) -> None:
    db.session.execute(
        update(SignalPrune)
        .where(SignalPrune.id == prune_id)
        .values(finished_at=datetime.now(UTC), signals_removed=removed, partitions_dropped=dropped)
    )
    db.session.commit()


def _delete_in_batches(table: str, cutoff: datetime, on_batch: Callable[[int], None]) -> int:
    """Delete ``table``'s rows created before ``cutoff``, DELETE_BATCH a transaction.

    Walks the id order once: each batch starts where the last one ended.
    """
    bound = bindparam("cutoff", value=cutoff, type_=UTCDateTime())
    last_of_batch = text(
        f"SELECT max(id) FROM (SELECT id FROM {table} WHERE id > :after AND created_at < :cutoff "
        f"ORDER BY id LIMIT :batch) AS batch"
    ).bindparams(bound)
    delete_batch = text(
        f"DELETE FROM {table} WHERE id > :after AND id <= :last AND created_at < :cutoff"
    ).bindparams(bound)
    removed = 0
    after = -1
    while True:
        last = db.session.execute(last_of_batch, {"after": after, "batch": DELETE_BATCH}).scalar()
        if last is None:
            db.session.rollback()
            return removed
        result = db.session.execute(delete_batch, {"after": after, "last": last})
        db.session.commit()
        removed += max(0, result.rowcount)  # type: ignore[attr-defined]
        after = int(last)
        on_batch(removed)
