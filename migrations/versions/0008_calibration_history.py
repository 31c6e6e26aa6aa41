"""calibration history: every value each run wrote, not only the latest and the one before

- loop_calibration_history: one row per calibration per run (tenant, key, value,
  sample size, window, engaged, interval, estimate, run, computed_at), and on ratio
  rows the delivery mode the same run decided (mode, its reason, whether it changed).
- Seeded from loop_calibrations: each row's previous value (when it has one) and its
  current value become the first two entries of its history, oldest first. Intervals
  of previous values were never stored; they stay empty (readers recompute a ratio's
  Wilson interval from its counts, as the API does for such rows).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 09:00:00

"""

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)

SEED_PREVIOUS = """
INSERT INTO loop_calibration_history
    (org_id, key, value, sample_size, window_days, run_id, computed_at)
SELECT org_id, key, previous_value, coalesce(previous_sample_size, 0), window_days,
       previous_run_id, previous_computed_at
FROM loop_calibrations
WHERE previous_value IS NOT NULL AND previous_computed_at IS NOT NULL
ORDER BY previous_computed_at, id
"""
SEED_CURRENT = """
INSERT INTO loop_calibration_history
    (org_id, key, value, sample_size, window_days, engaged, interval_low, interval_high,
     estimate, run_id, computed_at)
SELECT org_id, key, value, sample_size, window_days, engaged, interval_low, interval_high,
       estimate, run_id, computed_at
FROM loop_calibrations
ORDER BY computed_at, id
"""


def upgrade():
    op.create_table(
        "loop_calibration_history",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "org_id",
            sa.Integer(),
            sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("sample_size", sa.Integer(), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=True),
        sa.Column("engaged", sa.Integer(), nullable=True),
        sa.Column("interval_low", sa.Float(), nullable=True),
        sa.Column("interval_high", sa.Float(), nullable=True),
        sa.Column("estimate", sa.Float(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("computed_at", Time, nullable=False),
        sa.Column("mode", sa.String(16), nullable=True),
        sa.Column("mode_reason", sa.Text(), nullable=True),
        sa.Column("mode_changed", sa.Boolean(), nullable=True),
    )
    # Rows first, indexes after: one sort each instead of a row-by-row index build.
    op.execute(SEED_PREVIOUS)
    op.execute(SEED_CURRENT)
    op.create_index(
        "ix_loop_calibration_history_org_key_time",
        "loop_calibration_history",
        ["org_id", "key", "computed_at"],
    )
    op.create_index(
        "ix_loop_calibration_history_key_time",
        "loop_calibration_history",
        ["key", "computed_at", "engaged", "sample_size"],
    )
    op.create_index(
        "ix_loop_calibration_history_run_id", "loop_calibration_history", ["run_id"]
    )


def downgrade():
    op.drop_index("ix_loop_calibration_history_run_id", table_name="loop_calibration_history")
    op.drop_index("ix_loop_calibration_history_key_time", table_name="loop_calibration_history")
    op.drop_index(
        "ix_loop_calibration_history_org_key_time", table_name="loop_calibration_history"
    )
    op.drop_table("loop_calibration_history")
