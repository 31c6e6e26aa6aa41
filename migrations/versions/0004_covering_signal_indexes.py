"""covering indexes for the tune's batched aggregation

The tune aggregates a chunk of tenants with one query per calibration family: the
DELIVER (or ENGAGE) side is a range of ix_loop_signals_org_kind_time, and every
delivery probes for its first read by (kind, subject_id). With user_id and
subject_id in the first index and created_at reachable from the probe's index,
both are index-only: measured at 1,000 tenants / 10M signals on PostgreSQL,
23.8 s -> 12.8 s for the whole tune; on SQLite (100 tenants, 1M signals) the two
aggregation queries take half the time (docs/PERFORMANCE.md).

- ix_loop_signals_org_kind_time gains user_id and subject_id as trailing key
  columns (both databases: SQLite has no INCLUDE).
- PostgreSQL: uq_loop_signals_once_per_subject INCLUDEs created_at.
  SQLite: a partial index (subject_id, created_at) WHERE kind = 'ENGAGE' (the
  unique index cannot take a third key column without changing what it enforces).

On PostgreSQL the indexes are built CONCURRENTLY under a temporary name and
swapped in, so a live database keeps taking writes (mark-read inserts ENGAGE rows).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 02:45:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

ONCE_KINDS = "kind IN ('ENGAGE', 'DELIVER')"
ORG_KIND_TIME = "org_id, kind, created_at, feature"


def _swap(name: str, create_sql: str) -> None:
    """PostgreSQL: build ``name``'s new definition under a temporary name, then replace it."""
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}_new")
        op.execute(create_sql.format(name=f"{name}_new"))
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        op.execute(f"ALTER INDEX {name}_new RENAME TO {name}")


def upgrade():
    if op.get_bind().dialect.name == 'postgresql':
        _swap(
            'ix_loop_signals_org_kind_time',
            "CREATE INDEX CONCURRENTLY {name} ON loop_signals "
            f"({ORG_KIND_TIME}, user_id, subject_id)",
        )
        _swap(
            'uq_loop_signals_once_per_subject',
            "CREATE UNIQUE INDEX CONCURRENTLY {name} ON loop_signals "
            f"(kind, subject_id) INCLUDE (created_at) WHERE {ONCE_KINDS}",
        )
        return
    op.execute("DROP INDEX IF EXISTS ix_loop_signals_org_kind_time")
    op.execute(
        "CREATE INDEX ix_loop_signals_org_kind_time ON loop_signals "
        f"({ORG_KIND_TIME}, user_id, subject_id)"
    )
    op.execute(
        "CREATE INDEX ix_loop_signals_engage_subject ON loop_signals "
        "(subject_id, created_at) WHERE kind = 'ENGAGE'"
    )


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        _swap(
            'ix_loop_signals_org_kind_time',
            f"CREATE INDEX CONCURRENTLY {{name}} ON loop_signals ({ORG_KIND_TIME})",
        )
        _swap(
            'uq_loop_signals_once_per_subject',
            "CREATE UNIQUE INDEX CONCURRENTLY {name} ON loop_signals "
            f"(kind, subject_id) WHERE {ONCE_KINDS}",
        )
        return
    op.execute("DROP INDEX IF EXISTS ix_loop_signals_engage_subject")
    op.execute("DROP INDEX IF EXISTS ix_loop_signals_org_kind_time")
    op.execute(f"CREATE INDEX ix_loop_signals_org_kind_time ON loop_signals ({ORG_KIND_TIME})")
