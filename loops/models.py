"""The data model. Table names are part of the product contract: operators query them."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from flask_login import UserMixin
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from loops.database import db
from loops.timeutil import UTCDateTime, utcnow

# BIGINT on PostgreSQL, but INTEGER on SQLite so the id stays the rowid alias
# (SQLite only autoincrements "INTEGER PRIMARY KEY").
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Role(StrEnum):
    MEMBER = "member"
    VIEWER = "viewer"
    ADMIN = "admin"


class SignalKind(StrEnum):
    ENGAGE = "ENGAGE"
    DELIVER = "DELIVER"


# Kinds recorded at most once per subject (notification); the database guarantees
# it whatever the code path (SQLite: a partial unique index; PostgreSQL: the
# loop_signal_once guard, see loops/partitions.py).
ONCE_PER_SUBJECT_KINDS = (SignalKind.ENGAGE.value, SignalKind.DELIVER.value)


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def active(self) -> bool:
        return self in (RunState.QUEUED, RunState.RUNNING)


ACTIVE_RUN_STATES = (RunState.QUEUED.value, RunState.RUNNING.value)


class RunTrigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    CLI = "cli"


class Organization(db.Model):  # type: ignore[name-defined]
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Shadow (False, the default): delivery policies are decided and shown but not
    # applied. Enforced: notifications of digest-mode features are held for a digest.
    policy_enforced: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # When the current enforced/shadow state began, and who set it (lift is measured
    # over notifications delivered since enforcement began).
    policy_enforced_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    policy_enforced_by: Mapped[str | None] = mapped_column(String(254), nullable=True)

    # Ordering and prefix search by name on the dashboard.
    __table_args__ = (Index("ix_organizations_name", "name"),)


class User(UserMixin, db.Model):  # type: ignore[name-defined]
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    role: Mapped[str] = mapped_column(String(16), default=Role.MEMBER.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Bumped at logout / password change so every old session cookie stops working.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    memberships: Mapped[list[OrgMembership]] = relationship(back_populates="user")

    __table_args__ = (
        CheckConstraint("role IN ('member', 'viewer', 'admin')", name="ck_users_role"),
    )

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN.value

    @property
    def can_view_dashboard(self) -> bool:
        return self.role in (Role.VIEWER.value, Role.ADMIN.value)


class OrgMembership(db.Model):  # type: ignore[name-defined]
    __tablename__ = "org_memberships"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(back_populates="memberships")
    organization: Mapped[Organization] = relationship()

    __table_args__ = (
        UniqueConstraint("user_id", "org_id", name="uq_org_memberships_user_org"),
        # The primary-org lookup on every first read: memberships of one user in
        # (joined_at, org_id) order — served entirely from this index.
        Index("ix_org_memberships_primary", "user_id", "joined_at", "org_id"),
    )


class ApiToken(db.Model):  # type: ignore[name-defined]
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100), default="default")
    # SHA-256 of the token. Tokens are 256-bit random, so a fast hash is safe and
    # lets the lookup be an index probe; the token itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    user: Mapped[User] = relationship()


class Notification(db.Model):  # type: ignore[name-defined]
    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    feature: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set once, on the first read, and never cleared by mark-unread: it is what
    # makes "first read" a fact about the notification rather than its current state.
    first_read_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # NULL while held for a digest; then the time it was delivered (created_at for
    # notifications delivered at once). A held notification is invisible to its user.
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When a held notification is due (the next digest hour after it was created).
    deliver_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The digest notification that delivered it.
    digest_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("notifications.id", ondelete="SET NULL", name="fk_notifications_digest_id"),
        nullable=True,
    )

    __table_args__ = (
        # Listing a user's notifications newest first (by id), optionally unread
        # only, and counting unread: both are range scans on this index.
        Index("ix_notifications_user_id_id", "user_id", "id"),
        Index(
            "ix_notifications_user_unread",
            "user_id",
            "id",
            postgresql_where=text("read_at IS NULL"),
            sqlite_where=text("read_at IS NULL"),
        ),
        # The digest job's "what is due": held notifications by due time.
        Index(
            "ix_notifications_held_due",
            "deliver_at",
            "user_id",
            postgresql_where=text("delivered_at IS NULL"),
            sqlite_where=text("delivered_at IS NULL"),
        ),
    )


class LoopSignal(db.Model):  # type: ignore[name-defined]
    """One signal. On PostgreSQL the table is partitioned by month of created_at
    (migration 0007, loops/partitions.py): its primary key there is (id, created_at),
    and exactly-once ENGAGE/DELIVER is kept by the loop_signal_once guard instead of
    the unique index below, which SQLite keeps."""

    __tablename__ = "loop_signals"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    feature: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    subject_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        # The weekly aggregation is "WHERE org_id IN (…) AND kind = ? AND created_at
        # in [since, now) GROUP BY org_id, feature": org and kind are equality
        # columns, created_at the range, and feature, user_id (distinct users) and
        # subject_id (the first-read probe) ride along, so both databases answer
        # from the index alone (index-only scan) without touching the table.
        Index(
            "ix_loop_signals_org_kind_time",
            "org_id",
            "kind",
            "created_at",
            "feature",
            "user_id",
            "subject_id",
        ),
        # SQLite: exactly-once ENGAGE/DELIVER per notification, enforced by the
        # database. (PostgreSQL: a partitioned table's unique index must include
        # created_at, so the loop_signal_once guard does this there.)
        Index(
            "uq_loop_signals_once_per_subject",
            "kind",
            "subject_id",
            unique=True,
            sqlite_where=text("kind IN ('ENGAGE', 'DELIVER')"),
        ).ddl_if(dialect="sqlite"),
        # SQLite only (migration 0004): the first-read probe, index-only.
        Index(
            "ix_loop_signals_engage_subject",
            "subject_id",
            "created_at",
            sqlite_where=text("kind = 'ENGAGE'"),
        ).ddl_if(dialect="sqlite"),
    )


class SignalPrune(db.Model):  # type: ignore[name-defined]
    """One prune of old signals. The highest cutoff is where complete raw signals begin:
    days before it are never recounted into the daily counts."""

    __tablename__ = "loop_signal_prunes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Signals created before this instant were (or are being) removed.
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    signals_removed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    partitions_dropped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class SignalDailyCount(db.Model):  # type: ignore[name-defined]
    """Per-day signal counts, so dashboard pages never scan raw signals."""

    __tablename__ = "loop_signal_daily"

    org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    feature: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_loop_signal_daily_day", "day", "kind"),
        # A page of tenants' days since a date, index-only (migration 0009; on SQLite
        # the included columns are trailing key columns).
        Index(
            "ix_loop_signal_daily_org_day",
            "org_id",
            "day",
            postgresql_include=["kind", "feature", "count"],
        ),
    )


class Calibration(db.Model):  # type: ignore[name-defined]
    __tablename__ = "loop_calibrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)
    sample_size: Mapped[int] = mapped_column(Integer)
    window_days: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Explains the number: distinct users behind it, the run that wrote it, and
    # what it replaced.
    distinct_users: Mapped[int | None] = mapped_column(Integer, nullable=True)
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    previous_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    previous_sample_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    previous_computed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    previous_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # engagement-ratio keys only: the numerator (delivered notifications first-read),
    # the 95% Wilson interval of engaged / sample_size, and the value shrunk toward
    # the feature's pooled ratio across tenants (empirical Bayes).
    engaged: Mapped[int | None] = mapped_column(Integer, nullable=True)
    interval_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    interval_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    estimate: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        UniqueConstraint("org_id", "key", name="uq_loop_calibrations_org_key"),
        # Every tenant's calibration of one feature, for its page (migration 0010).
        Index("ix_loop_calibrations_key", "key"),
    )


class CalibrationHistory(db.Model):  # type: ignore[name-defined]
    """Every value a run wrote, kept: one row per calibration per run (loop_calibrations
    holds only the latest). Ratio rows also carry the delivery mode the run decided."""

    __tablename__ = "loop_calibration_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)
    sample_size: Mapped[int] = mapped_column(Integer)
    window_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    engaged: Mapped[int | None] = mapped_column(Integer, nullable=True)
    interval_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    interval_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    estimate: Mapped[float | None] = mapped_column(Float, nullable=True)
    # No foreign key: run rows may be cleaned up while the values they wrote are kept.
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The delivery decision the same run made for the feature (ratio rows only), and
    # whether it changed the mode.
    mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    mode_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    mode_changed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)

    __table_args__ = (
        # A tenant's history of each key (the tenant page's charts, a run's "before").
        Index("ix_loop_calibration_history_org_key_time", "org_id", "key", "computed_at"),
        # A feature's pooled ratio week by week across tenants, from the index alone.
        Index(
            "ix_loop_calibration_history_key_time",
            "key",
            "computed_at",
            "engaged",
            "sample_size",
        ),
        # What one run wrote (the run page).
        Index("ix_loop_calibration_history_run_id", "run_id"),
    )


class DeliveryPolicy(db.Model):  # type: ignore[name-defined]
    """How one tenant's notifications of one feature are delivered, and why."""

    __tablename__ = "delivery_policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    feature: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Since when the mode has been what it is (a decision that keeps the mode keeps this).
    mode_since: Mapped[datetime] = mapped_column(UTCDateTime)
    # The evidence of the last decision.
    ratio: Mapped[float | None] = mapped_column(Float, nullable=True)
    interval_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    interval_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    sample_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # An admin's override: the mode stays what they pinned until unpinned.
    pinned_by: Mapped[str | None] = mapped_column(String(254), nullable=True)
    pinned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        UniqueConstraint("org_id", "feature", name="uq_delivery_policies_org_feature"),
        CheckConstraint("mode IN ('immediate', 'digest')", name="ck_delivery_policies_mode"),
    )


class PolicyChange(db.Model):  # type: ignore[name-defined]
    """An admin's change to a tenant's delivery: pin, unpin, enforce, shadow — who and when."""

    __tablename__ = "delivery_policy_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    feature: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    actor: Mapped[str] = mapped_column(String(254))
    at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_delivery_policy_changes_org_id_id", "org_id", "id"),)


class TuneRun(db.Model):  # type: ignore[name-defined]
    __tablename__ = "tune_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    trigger: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[str | None] = mapped_column(String(254), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=RunState.QUEUED.value)
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    calibrations_written: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Liveness: the job bumps this while it works; a running row whose heartbeat
    # is stale is swept to failed ("abandoned").
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rq_job_id: Mapped[str | None] = mapped_column(String(128), nullable=True)

    organization: Mapped[Organization] = relationship()

    __table_args__ = (
        CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'failed', 'skipped')",
            name="ck_tune_runs_state",
        ),
        CheckConstraint("trigger IN ('schedule', 'manual', 'cli')", name="ck_tune_runs_trigger"),
        # Last run per tenant (overview) and a tenant's run history.
        Index("ix_tune_runs_org_id_id", "org_id", "id"),
        # At most one active run per tenant: the de-duplication guard is a
        # database constraint, so two racing "Run now" clicks cannot both enqueue.
        Index(
            "uq_tune_runs_one_active_per_org",
            "org_id",
            unique=True,
            postgresql_where=text("state IN ('queued', 'running')"),
            sqlite_where=text("state IN ('queued', 'running')"),
        ),
        Index("ix_tune_runs_state", "state"),
    )
