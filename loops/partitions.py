"""loop_signals on PostgreSQL: monthly partitions by created_at, created ahead, dropped behind.

The layout (migration 0007): ``loop_signals`` is partitioned by RANGE (created_at),
one partition a UTC calendar month named ``loop_signals_pYYYY_MM``, plus
``loop_signals_default`` for any row no month partition takes (a backdated insert,
or a month whose partition the maintenance job has not created yet). The default
partition is a safety net: without it such an insert fails, and on the mark-read
path that would be a user's error; with it the row is kept and the next
maintenance run moves it into its month.

Exactly-once ENGAGE/DELIVER per notification cannot be a unique index on the
partitioned table (PostgreSQL requires a unique index to include the partition key,
and (kind, subject_id, created_at) does not say "once"). Instead every insert of an
ENGAGE or DELIVER row first claims (kind, subject_id) in ``loop_signal_once``, a
narrow table that is not partitioned and has that pair as its primary key. A
trigger on ``loop_signals`` does the claim in the same statement, so every path
(the ORM, the mark-read fast path's raw SQL, a bulk insert) goes through it; a
second claim finds the pair taken and the trigger drops the row, as ``ON CONFLICT
DO NOTHING`` did with the old unique index. Concurrent claims wait on each other in
the primary key, exactly as they did in the unique index. The guard also answers
the tune's "was this delivery first-read before now" as a primary-key lookup that
carries created_at (index-only).

A partition is created as a plain table and ATTACHed, with inserts into loop_signals
held for those milliseconds (reads go on); it is dropped with an ACCESS EXCLUSIVE
lock on the parent. Both run under a short lock_timeout and are retried: a DDL
statement waiting for a lock makes every later mark-read wait behind it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, text
from sqlalchemy.exc import OperationalError

from loops.database import db
from loops.models import ONCE_PER_SUBJECT_KINDS

log = logging.getLogger(__name__)

PARENT = "loop_signals"
DEFAULT_PARTITION = "loop_signals_default"
# How many months after the current one always have their partition ready: the
# daily job would have to fail for this long before rows land in the default.
AHEAD_MONTHS = 3
# Partitioned tables keep no rows and take no storage options: each partition gets
# the autovacuum settings that keep index-only scans index-only (migration 0005).
PARTITION_OPTIONS = (
    "autovacuum_vacuum_insert_scale_factor = 0.005, "
    "autovacuum_vacuum_scale_factor = 0.005, "
    "autovacuum_analyze_scale_factor = 0.01"
)
# A DDL statement queued for a lock holds up every mark-read behind it: wait briefly,
# give way, try again.
LOCK_TIMEOUT = "2s"
LOCK_ATTEMPTS = 5
LOCK_PAUSE_S = 1.0

# The exactly-once guard (PostgreSQL only: SQLite keeps a plain table whose partial
# unique index does this). Kept out of the models' metadata, which both databases share.
once_guard = Table(
    "loop_signal_once",
    MetaData(),
    Column("kind", String(32), primary_key=True),
    Column("subject_id", BigInteger, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

ONCE_KINDS_SQL = "(" + ", ".join(f"'{kind}'" for kind in ONCE_PER_SUBJECT_KINDS) + ")"
_BOUNDS = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


class PartitionLockTimeout(RuntimeError):
    """A partition change could not get its lock within the attempts allowed."""


class NotPartitioned(RuntimeError):
    """loop_signals is a plain table on PostgreSQL: migration 0007 has not run."""


@dataclass(frozen=True)
class Partition:
    """One partition of loop_signals; ``start``/``end`` are None for the default one."""

    name: str
    start: datetime | None
    end: datetime | None

    @property
    def is_default(self) -> bool:
        return self.start is None


def month_start(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(month: datetime) -> str:
    return f"{PARENT}_p{month:%Y_%m}"


def _timestamp(literal: str) -> datetime:
    return datetime.fromisoformat(literal).astimezone(UTC)


def is_postgres() -> bool:
    return str(db.session.get_bind().dialect.name) == "postgresql"


def lift_statement_timeout() -> None:
    """No statement_timeout for the rest of this transaction (PostgreSQL; nothing to do
    elsewhere): maintenance statements scan a month of signals, which may take longer
    than the API's DB_STATEMENT_TIMEOUT_MS allows a request."""
    if is_postgres():
        db.session.execute(text("SET LOCAL statement_timeout = 0"))


def is_partitioned() -> bool:
    """True when loop_signals is a partitioned table (PostgreSQL after migration 0007)."""
    if not is_postgres():
        return False
    kind = db.session.execute(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": PARENT}
    ).scalar()
    return kind == "p"


def require_partitioned() -> None:
    if not is_partitioned():
        raise NotPartitioned(
            "loop_signals is not partitioned: run `flask --app wsgi db upgrade` (migration 0007)"
        )


def partitions() -> list[Partition]:
    """Every partition of loop_signals, months in order, the default one last."""
    rows = db.session.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:t)"
        ),
        {"t": PARENT},
    ).all()
    out = []
    for name, bound in rows:
        if bound == "DEFAULT":
            out.append(Partition(str(name), None, None))
            continue
        match = _BOUNDS.search(str(bound))
        if match is None:
            # Not one of ours (MINVALUE/MAXVALUE bounds): never dropped by a prune.
            log.warning("event=partition_unrecognised name=%s bound=%r", name, bound)
            continue
        out.append(Partition(str(name), _timestamp(match[1]), _timestamp(match[2])))
    return sorted(out, key=lambda p: (p.start is None, p.start or datetime.min.replace(tzinfo=UTC)))


def months_wanted(now: datetime) -> list[datetime]:
    """The current month and AHEAD_MONTHS after it: partitions that must exist by ``now``."""
    first = month_start(now)
    return [add_months(first, n) for n in range(AHEAD_MONTHS + 1)]


def default_months(since: datetime) -> list[datetime]:
    """Months with rows in the default partition at or after ``since``."""
    rows = db.session.execute(
        text(
            f"SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC') "
            f"FROM {DEFAULT_PARTITION} WHERE created_at >= :since"
        ),
        {"since": since},
    ).scalars()
    return sorted(month.replace(tzinfo=UTC) for month in rows)


def _with_lock_retries(what: str, step: Callable[[], None]) -> None:
    """Run ``step`` (a callable doing DDL in the session's transaction) and commit it.

    It runs under a short lock_timeout; a lock not granted rolls back, waits and tries
    again, LOCK_ATTEMPTS times in all.
    """
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            db.session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            lift_statement_timeout()
            step()
            db.session.commit()
            return
        except OperationalError as exc:
            db.session.rollback()
            if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                raise
            log.warning("event=partition_lock_wait what=%s attempt=%d", what, attempt)
            if attempt < LOCK_ATTEMPTS:
                time.sleep(LOCK_PAUSE_S)
    raise PartitionLockTimeout(
        f"{what}: loop_signals stayed locked by other sessions "
        f"({LOCK_ATTEMPTS} tries, {LOCK_TIMEOUT} each); try again later"
    )


def create_month(month: datetime) -> int:
    """Create ``month``'s partition, moving its rows out of the default one. Returns rows moved.

    Built as a plain table, filled from the default partition, then ATTACHed: the
    parent keeps taking reads and writes meanwhile.
    """
    name = partition_name(month)
    end = add_months(month, 1)
    moved = 0

    def step() -> None:
        nonlocal moved
        # Inserts into loop_signals wait (reads go on) until the partition is attached:
        # an insert routed to the default partition while its rows move out would
        # break the new partition's bounds (and fail). Milliseconds, for a month
        # whose rows are not in the default partition.
        db.session.execute(text(f"LOCK TABLE {PARENT} IN SHARE ROW EXCLUSIVE MODE"))
        db.session.execute(
            text(
                f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS) WITH ({PARTITION_OPTIONS})"
            )
        )
        result = db.session.execute(
            text(
                f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} "
                f"WHERE created_at >= :start AND created_at < :end RETURNING *) "
                f"INSERT INTO {name} SELECT * FROM moved"
            ),
            {"start": month, "end": end},
            execution_options={"preserve_rowcount": True},
        )
        moved = max(0, result.rowcount)  # type: ignore[attr-defined]
        # Leaving the default partition released the moved rows' claims (its delete
        # trigger): claim them again. No insert can come between: inserts are held.
        db.session.execute(
            text(
                f"INSERT INTO {once_guard.name} (kind, subject_id, created_at) "
                f"SELECT kind, subject_id, created_at FROM {name} "
                f"WHERE kind IN {ONCE_KINDS_SQL} AND subject_id IS NOT NULL ON CONFLICT DO NOTHING"
            )
        )
        db.session.execute(
            text(
                f"ALTER TABLE {PARENT} ATTACH PARTITION {name} "
                f"FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}')"
            )
        )

    _with_lock_retries(f"create partition {name}", step)
    log.info("event=partition_created name=%s moved_from_default=%d", name, moved)
    return moved


def drop(partition: Partition) -> None:
    """Drop a month partition with all its rows (the guard rows are the caller's business)."""
    assert not partition.is_default

    def step() -> None:
        db.session.execute(text(f"DROP TABLE {partition.name}"))

    _with_lock_retries(f"drop partition {partition.name}", step)
    log.info("event=partition_dropped name=%s", partition.name)


def count_rows(partition: Partition, before: datetime | None = None) -> int:
    """Rows in a partition (only those created before ``before``, when given)."""
    where = "WHERE created_at < :before" if before is not None else ""
    lift_statement_timeout()
    return int(
        db.session.execute(
            text(f"SELECT count(*) FROM {partition.name} {where}"), {"before": before}
        ).scalar_one()
    )
