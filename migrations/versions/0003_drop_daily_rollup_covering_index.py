"""drop the covering index of 0002: measured, it made the overview slower

With it PostgreSQL sums the whole 30-day ENGAGE slice for every tenant (index-only
scan + hash aggregate); without it the overview's page of 25 tenants is served
from the primary key per tenant, 2-3x faster at 1,000 tenants (docs/PERFORMANCE.md).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 00:58:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('loop_signal_daily', schema=None) as batch_op:
        batch_op.drop_index('ix_loop_signal_daily_kind_day_org')


def downgrade():
    with op.batch_alter_table('loop_signal_daily', schema=None) as batch_op:
        batch_op.create_index(
            'ix_loop_signal_daily_kind_day_org', ['kind', 'day', 'org_id', 'count'], unique=False
        )
