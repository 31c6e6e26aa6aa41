"""daily counts by tenant and day: pages read the window, not every day ever counted

The dashboard reads a page of tenants' daily counts since a day (the overview's
sparklines and volumes, the tenant page's charts). The primary key (org_id, kind,
feature, day) serves that only by reading every day of every feature of the tenant,
so the cost grew with the history kept: the overview took 1.43 x as long with 400
days of counts as with 60 (make bench-scale). Ordered by (org_id, day), with kind,
feature and count carried along, it is one index-only range per tenant, as long as
the window whatever the history (17.8 vs 17.1 ms; docs/PERFORMANCE.md).

PostgreSQL builds it CONCURRENTLY (writes go on; 1.5 s for 4M rows, a year of counts
at 1,000 tenants). SQLite has no INCLUDE: the carried columns are trailing key columns.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 03:10:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

NAME = 'ix_loop_signal_daily_org_day'


def upgrade():
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            # An interrupted concurrent build leaves an invalid index behind: start clean.
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NAME}")
            op.execute(
                f"CREATE INDEX CONCURRENTLY {NAME} ON loop_signal_daily (org_id, day) "
                "INCLUDE (kind, feature, count)"
            )
        return
    op.execute(
        f"CREATE INDEX {NAME} ON loop_signal_daily (org_id, day, kind, feature, count)"
    )


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NAME}")
        return
    op.execute(f"DROP INDEX IF EXISTS {NAME}")
