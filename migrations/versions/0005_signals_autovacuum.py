"""vacuum loop_signals often enough for index-only scans (PostgreSQL)

loop_signals is append-mostly: mark-read inserts an ENGAGE row per first read. With
PostgreSQL's defaults a 10M-row table is vacuumed only after ~2M inserts or updates,
so the pages of the recent weeks — exactly the tune's window — are not marked
all-visible, and the tune's index-only scans (migration 0004) fall back to the heap:
measured 12 s -> 20 s for the whole tune at 10M signals after 370k inserts and
440k deletes since the last vacuum (docs/PERFORMANCE.md). Vacuuming after ~0.5 %
of the table changes keeps the visibility map current; on an append-mostly table
such a vacuum only visits the new pages, so it is cheap.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 03:05:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute(
        "ALTER TABLE loop_signals SET ("
        "autovacuum_vacuum_insert_scale_factor = 0.005, "
        "autovacuum_vacuum_scale_factor = 0.005, "
        "autovacuum_analyze_scale_factor = 0.01)"
    )


def downgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute(
        "ALTER TABLE loop_signals RESET ("
        "autovacuum_vacuum_insert_scale_factor, "
        "autovacuum_vacuum_scale_factor, "
        "autovacuum_analyze_scale_factor)"
    )
