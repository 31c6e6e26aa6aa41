"""covering index for the overview's volume sums over loop_signal_daily

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 00:40:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('loop_signal_daily', schema=None) as batch_op:
        batch_op.create_index(
            'ix_loop_signal_daily_kind_day_org', ['kind', 'day', 'org_id', 'count'], unique=False
        )


def downgrade():
    with op.batch_alter_table('loop_signal_daily', schema=None) as batch_op:
        batch_op.drop_index('ix_loop_signal_daily_kind_day_org')
