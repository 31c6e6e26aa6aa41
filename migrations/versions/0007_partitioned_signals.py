"""signal retention: loop_signals partitioned by month (PostgreSQL), exactly-once guard, prunes

- Both databases: loop_signal_prunes, one row per prune (its cutoff, when, what it
  removed). Its highest cutoff is the day from which raw signals are complete: the
  chart rollup never recounts a day before it (that recount would find the pruned
  day empty and erase its counts).
- PostgreSQL: loop_signals becomes a table partitioned by RANGE (created_at), one
  partition a UTC month (loop_signals_pYYYY_MM) from the oldest row's month to
  three months ahead, plus loop_signals_default. Rows, ids and the id sequence are
  kept. The primary key becomes (id, created_at): a partitioned table's unique
  indexes must include the partition key.
- PostgreSQL: uq_loop_signals_once_per_subject cannot exist on the partitioned table
  for the same reason; loop_signal_once (kind, subject_id) takes its place, filled
  from the existing ENGAGE/DELIVER rows and claimed by a trigger on every insert
  (loops/partitions.py explains the design).
- SQLite keeps its plain table and its partial unique index.

The conversion copies every row inside this migration's transaction, with writes to
loop_signals blocked (reads go on) until it commits: fine for a small database
(seconds per million rows). A large live database is converted beside the running
app first (docs/SCALE.md); this migration then finds loop_signals already
partitioned and leaves it as it is.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 16:30:00

"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Time = sa.DateTime(timezone=True)
ONCE_KINDS = "('ENGAGE', 'DELIVER')"
AHEAD_MONTHS = 3
# Written out here rather than imported: a migration must keep meaning what it meant.
PARTITION_OPTIONS = (
    "autovacuum_vacuum_insert_scale_factor = 0.005, "
    "autovacuum_vacuum_scale_factor = 0.005, "
    "autovacuum_analyze_scale_factor = 0.01"
)
COLUMNS = "id, org_id, kind, feature, user_id, subject_id, created_at"

GUARD_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION loop_signals_claim_once() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- One ENGAGE/DELIVER per notification across every partition: the first insert
    -- claims (kind, subject_id); a later one finds it taken and is dropped, like
    -- ON CONFLICT DO NOTHING (a concurrent one waits for the first to commit or abort).
    INSERT INTO loop_signal_once (kind, subject_id, created_at)
    VALUES (NEW.kind, NEW.subject_id, NEW.created_at)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION loop_signals_release_once() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- A deleted signal (an organization deleted, a row removed by hand) gives its
    -- claim back, so the guard always mirrors the rows that exist.
    DELETE FROM loop_signal_once
    WHERE kind = OLD.kind AND subject_id = OLD.subject_id AND created_at = OLD.created_at;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION loop_signals_truncate_once() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE loop_signal_once;
    RETURN NULL;
END
$$;

CREATE TRIGGER loop_signals_claim_once BEFORE INSERT ON loop_signals
FOR EACH ROW WHEN (NEW.kind IN {ONCE_KINDS} AND NEW.subject_id IS NOT NULL)
EXECUTE FUNCTION loop_signals_claim_once();

CREATE TRIGGER loop_signals_release_once AFTER DELETE ON loop_signals
FOR EACH ROW WHEN (OLD.kind IN {ONCE_KINDS} AND OLD.subject_id IS NOT NULL)
EXECUTE FUNCTION loop_signals_release_once();

CREATE TRIGGER loop_signals_truncate_once AFTER TRUNCATE ON loop_signals
FOR EACH STATEMENT EXECUTE FUNCTION loop_signals_truncate_once();
"""


def _month(at):
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def _add_months(month, n):
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _relkind(bind, name):
    return bind.execute(
        sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": name}
    ).scalar()


def upgrade():
    op.create_table(
        "loop_signal_prunes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("cutoff", Time, nullable=False),
        sa.Column("started_at", Time, nullable=False),
        sa.Column("finished_at", Time, nullable=True),
        sa.Column("signals_removed", sa.BigInteger(), nullable=True),
        sa.Column("partitions_dropped", sa.Integer(), nullable=False, server_default="0"),
    )
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if _relkind(bind, "loop_signals") == "p":
        return  # converted beside the running app (docs/SCALE.md)
    _partition(bind)


def _partition(bind):
    op.execute("SET LOCAL statement_timeout = 0")
    op.execute("SET LOCAL timezone = 'UTC'")
    # Readers go on; writers (mark-read's ENGAGE, deliveries) wait until commit.
    op.execute("LOCK TABLE loop_signals IN EXCLUSIVE MODE")
    oldest, newest = bind.execute(
        sa.text("SELECT min(created_at), max(created_at) FROM loop_signals")
    ).one()
    now = _month(datetime.now(UTC))
    first = _month(oldest) if oldest is not None else now
    last = _add_months(max(now, _month(newest) if newest is not None else now), AHEAD_MONTHS)

    sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence('loop_signals', 'id')")).scalar()
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY NONE")
    op.execute("ALTER TABLE loop_signals RENAME TO loop_signals_unpartitioned")
    op.execute("ALTER INDEX loop_signals_pkey RENAME TO loop_signals_unpartitioned_pkey")
    op.execute(
        f"""
        CREATE TABLE loop_signals (
            id bigint NOT NULL DEFAULT nextval('{sequence}'::regclass),
            org_id integer NOT NULL,
            kind varchar(32) NOT NULL,
            feature varchar(64) NOT NULL,
            user_id integer,
            subject_id bigint,
            created_at timestamp with time zone NOT NULL
        ) PARTITION BY RANGE (created_at)
        """
    )
    op.execute(
        f"CREATE TABLE loop_signals_default PARTITION OF loop_signals DEFAULT "
        f"WITH ({PARTITION_OPTIONS})"
    )
    month = first
    while month <= last:
        end = _add_months(month, 1)
        op.execute(
            f"CREATE TABLE loop_signals_p{month:%Y_%m} PARTITION OF loop_signals "
            f"FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}') "
            f"WITH ({PARTITION_OPTIONS})"
        )
        month = end
    op.execute(
        f"INSERT INTO loop_signals ({COLUMNS}) SELECT {COLUMNS} FROM loop_signals_unpartitioned"
    )
    op.execute(
        f"""
        CREATE TABLE loop_signal_once (
            kind varchar(32) NOT NULL,
            subject_id bigint NOT NULL,
            created_at timestamp with time zone NOT NULL
        ) WITH ({PARTITION_OPTIONS})
        """
    )
    # The old unique index guarantees one row per pair: the guard's key holds.
    op.execute(
        "INSERT INTO loop_signal_once (kind, subject_id, created_at) "
        "SELECT kind, subject_id, created_at FROM loop_signals_unpartitioned "
        f"WHERE kind IN {ONCE_KINDS} AND subject_id IS NOT NULL"
    )
    op.execute("DROP TABLE loop_signals_unpartitioned")
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY loop_signals.id")
    # Indexes and keys after the copy: one sorted build each instead of row-by-row upkeep.
    op.execute(
        "ALTER TABLE loop_signal_once ADD CONSTRAINT loop_signal_once_pkey "
        "PRIMARY KEY (kind, subject_id) INCLUDE (created_at)"
    )
    op.execute(
        "ALTER TABLE loop_signals ADD CONSTRAINT loop_signals_pkey PRIMARY KEY (id, created_at)"
    )
    op.execute(
        "CREATE INDEX ix_loop_signals_org_kind_time ON loop_signals "
        "(org_id, kind, created_at, feature, user_id, subject_id)"
    )
    op.execute(
        "ALTER TABLE loop_signals ADD CONSTRAINT loop_signals_org_id_fkey FOREIGN KEY (org_id) "
        "REFERENCES organizations (id) ON DELETE CASCADE"
    )
    op.execute(GUARD_FUNCTIONS)
    op.execute("ANALYZE loop_signals")
    op.execute("ANALYZE loop_signal_once")


def downgrade():
    bind = op.get_bind()
    if bind.dialect.name == "postgresql" and _relkind(bind, "loop_signals") == "p":
        _unpartition(bind)
    op.drop_table("loop_signal_prunes")


def _unpartition(bind):
    op.execute("SET LOCAL statement_timeout = 0")
    op.execute("LOCK TABLE loop_signals IN EXCLUSIVE MODE")
    sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence('loop_signals', 'id')")).scalar()
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY NONE")
    op.execute("ALTER TABLE loop_signals RENAME TO loop_signals_partitioned")
    op.execute("ALTER INDEX loop_signals_pkey RENAME TO loop_signals_partitioned_pkey")
    op.execute("ALTER INDEX ix_loop_signals_org_kind_time RENAME TO ix_loop_signals_partitioned")
    op.execute(
        f"""
        CREATE TABLE loop_signals (
            id bigint NOT NULL DEFAULT nextval('{sequence}'::regclass),
            org_id integer NOT NULL,
            kind varchar(32) NOT NULL,
            feature varchar(64) NOT NULL,
            user_id integer,
            subject_id bigint,
            created_at timestamp with time zone NOT NULL
        ) WITH ({PARTITION_OPTIONS})
        """
    )
    op.execute(
        f"INSERT INTO loop_signals ({COLUMNS}) SELECT {COLUMNS} FROM loop_signals_partitioned"
    )
    op.execute("DROP TABLE loop_signals_partitioned")
    op.execute("DROP TABLE loop_signal_once")
    op.execute("DROP FUNCTION loop_signals_claim_once()")
    op.execute("DROP FUNCTION loop_signals_truncate_once()")
    op.execute("DROP FUNCTION loop_signals_release_once()")
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY loop_signals.id")
    op.execute("ALTER TABLE loop_signals ADD CONSTRAINT loop_signals_pkey PRIMARY KEY (id)")
    op.execute(
        "CREATE INDEX ix_loop_signals_org_kind_time ON loop_signals "
        "(org_id, kind, created_at, feature, user_id, subject_id)"
    )
    op.execute(
        "CREATE UNIQUE INDEX uq_loop_signals_once_per_subject ON loop_signals "
        f"(kind, subject_id) INCLUDE (created_at) WHERE kind IN {ONCE_KINDS}"
    )
    op.execute(
        "ALTER TABLE loop_signals ADD CONSTRAINT loop_signals_org_id_fkey FOREIGN KEY (org_id) "
        "REFERENCES organizations (id) ON DELETE CASCADE"
    )
