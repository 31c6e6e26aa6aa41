"""calibrations by key: a feature's page reads its tenants' two keys, not every calibration

The feature page reads every tenant's calibration of one feature (its ratio and rate
keys), and whether any tenant has one at all. The unique (org_id, key) index leads with
the tenant, so both read the whole table: loop_calibrations holds tenants x features x
2 rows, which grows with every tenant and feature. By key, the reads take the feature's
rows only. `python -m bench.calibration_key` (psycopg, unprepared, median of 60):

| loop_calibrations | a feature's calibrations | a feature no tenant has (404) |
|---|---|---|
| 1,000 tenants x 12 features (24k rows) | 10.4 -> 7.1 ms | 3.4 -> 0.15 ms |
| 10,000 x 12 (240k rows) | 96.7 -> 64.1 ms | 28.5 -> 0.10 ms |
| 10,000 x 50 (1M rows) | 159 -> 96 ms | 92 -> 0.16 ms |

The tune's upserts never change a key, so the index leaves them HOT-eligible.

PostgreSQL builds it CONCURRENTLY (the tune and the pages go on).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 05:45:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

NAME = 'ix_loop_calibrations_key'


def upgrade():
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            # An interrupted concurrent build leaves an invalid index behind: start clean.
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NAME}")
            op.execute(f"CREATE INDEX CONCURRENTLY {NAME} ON loop_calibrations (key)")
        return
    op.execute(f"CREATE INDEX {NAME} ON loop_calibrations (key)")


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NAME}")
        return
    op.execute(f"DROP INDEX IF EXISTS {NAME}")
