"""delivery policy: calibration uncertainty, delivery_policies, held notifications

- loop_calibrations gains engaged, interval_low, interval_high and estimate (the
  engagement ratio's numerator, 95% Wilson interval and empirical-Bayes estimate).
- organizations gains policy_enforced (default false: shadow) with who and when.
- delivery_policies: one mode per tenant and feature, with its reason and evidence;
  delivery_policy_changes: each admin pin/unpin/enforce/shadow, who and when.
- notifications gains delivered_at (NULL while held for a digest), deliver_at (when
  a held one is due) and digest_id (the digest that delivered it). Every existing
  notification was delivered when it was created: delivered_at = created_at.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 15:40:00

"""

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)


def upgrade():
    with op.batch_alter_table("loop_calibrations") as batch:
        batch.add_column(sa.Column("engaged", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("interval_low", sa.Float(), nullable=True))
        batch.add_column(sa.Column("interval_high", sa.Float(), nullable=True))
        batch.add_column(sa.Column("estimate", sa.Float(), nullable=True))

    with op.batch_alter_table("organizations") as batch:
        batch.add_column(
            sa.Column("policy_enforced", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("policy_enforced_at", Time, nullable=True))
        batch.add_column(sa.Column("policy_enforced_by", sa.String(254), nullable=True))

    op.create_table(
        "delivery_policies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "org_id",
            sa.Integer(),
            sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("decided_at", Time, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("mode_since", Time, nullable=False),
        sa.Column("ratio", sa.Float(), nullable=True),
        sa.Column("interval_low", sa.Float(), nullable=True),
        sa.Column("interval_high", sa.Float(), nullable=True),
        sa.Column("sample_size", sa.Integer(), nullable=True),
        sa.Column("pinned_by", sa.String(254), nullable=True),
        sa.Column("pinned_at", Time, nullable=True),
        sa.UniqueConstraint("org_id", "feature", name="uq_delivery_policies_org_feature"),
        sa.CheckConstraint("mode IN ('immediate', 'digest')", name="ck_delivery_policies_mode"),
    )
    op.create_table(
        "delivery_policy_changes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "org_id",
            sa.Integer(),
            sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("feature", sa.String(64), nullable=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=True),
        sa.Column("actor", sa.String(254), nullable=False),
        sa.Column("at", Time, nullable=False),
    )
    op.create_index(
        "ix_delivery_policy_changes_org_id_id", "delivery_policy_changes", ["org_id", "id"]
    )

    # SQLite cannot add a foreign key in place: batch mode copies the table there
    # (on PostgreSQL these are plain ALTERs).
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("delivered_at", Time, nullable=True))
        batch.add_column(sa.Column("deliver_at", Time, nullable=True))
        batch.add_column(sa.Column("digest_id", BigId, nullable=True))
        batch.create_foreign_key(
            "fk_notifications_digest_id",
            "notifications",
            ["digest_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.execute("UPDATE notifications SET delivered_at = created_at")
    op.create_index(
        "ix_notifications_held_due",
        "notifications",
        ["deliver_at", "user_id"],
        postgresql_where=sa.text("delivered_at IS NULL"),
        sqlite_where=sa.text("delivered_at IS NULL"),
    )


def downgrade():
    op.drop_index("ix_notifications_held_due", table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_constraint("fk_notifications_digest_id", type_="foreignkey")
        batch.drop_column("digest_id")
        batch.drop_column("deliver_at")
        batch.drop_column("delivered_at")
    op.drop_index("ix_delivery_policy_changes_org_id_id", table_name="delivery_policy_changes")
    op.drop_table("delivery_policy_changes")
    op.drop_table("delivery_policies")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("policy_enforced_by")
        batch.drop_column("policy_enforced_at")
        batch.drop_column("policy_enforced")
    with op.batch_alter_table("loop_calibrations") as batch:
        batch.drop_column("estimate")
        batch.drop_column("interval_high")
        batch.drop_column("interval_low")
        batch.drop_column("engaged")
