"""Delivery policies: decided by the tune, pinned or enforced by admins, applied at creation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, literal_column, select
from sqlalchemy.orm import aliased

from loops.database import db, insert_rows
from loops.models import DeliveryPolicy, LoopSignal, Organization, PolicyChange, SignalKind
from loops.policy_rules import (
    DIGEST_FEATURE,
    DeliveryMode,
    Evidence,
    decide,
    in_holdout,
    next_digest_time,
)
from loops.settings import (
    DEFAULT_DIGEST_HOUR_UTC,
    DEFAULT_POLICY_DIGEST_BELOW,
    DEFAULT_POLICY_HOLDOUT_PERCENT,
)
from loops.signals import primary_org_id
from loops.stats import wilson_interval
from loops.timeutil import iso


class PolicyError(ValueError):
    """A request to change a policy that cannot be honoured; the message is for people."""


@dataclass(frozen=True)
class PolicySettings:
    """The policy's knobs (POLICY_DIGEST_BELOW, POLICY_HOLDOUT_PERCENT, DIGEST_HOUR_UTC)."""

    digest_below: float = DEFAULT_POLICY_DIGEST_BELOW
    holdout_percent: int = DEFAULT_POLICY_HOLDOUT_PERCENT
    digest_hour_utc: int = DEFAULT_DIGEST_HOUR_UTC

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PolicySettings:
        # Typed and range-checked once, at start (loops.settings).
        return cls(
            digest_below=config["POLICY_DIGEST_BELOW"],
            holdout_percent=config["POLICY_HOLDOUT_PERCENT"],
            digest_hour_utc=config["DIGEST_HOUR_UTC"],
        )


# --- decided by the tune ------------------------------------------------------


def policies_of(org_id: int) -> list[DeliveryPolicy]:
    return list(
        db.session.execute(
            select(DeliveryPolicy)
            .where(DeliveryPolicy.org_id == org_id)
            .order_by(DeliveryPolicy.feature)
        ).scalars()
    )


@dataclass(frozen=True)
class Decided:
    """A feature's mode as a tune run decided it (what the history keeps of it)."""

    feature: str
    mode: str
    reason: str
    mode_since: datetime


def _on_conflict_decide(insert: Any) -> Any:
    """A decision made again: ON CONFLICT (org_id, feature) DO UPDATE."""
    decided = ("mode", "reason", "decided_at", "run_id", "mode_since", "ratio")
    measured = ("interval_low", "interval_high", "sample_size")
    return insert.on_conflict_do_update(
        index_elements=["org_id", "feature"],
        set_={name: insert.excluded[name] for name in (*decided, *measured)},
    )


def decide_for_tenants(
    measured: Mapping[int, tuple[int | None, Sequence[tuple[str, Evidence]]]],
    threshold: float,
    now: datetime,
) -> dict[int, dict[str, Decided]]:
    """Decide each measured feature's mode, per tenant, in the caller's transaction (the tune's).

    ``measured`` maps each tenant to (its run id, its (feature, evidence) pairs). One
    read and one upsert for all of them; a pinned feature keeps its mode, and
    ``mode_since`` moves only when the mode changes.
    """
    out: dict[int, dict[str, Decided]] = {org_id: {} for org_id in measured}
    if not measured:
        return out
    p = DeliveryPolicy
    current = {
        (int(org_id), str(feature)): (str(mode), pinned_by, mode_since)
        for org_id, feature, mode, pinned_by, mode_since in db.session.execute(
            select(p.org_id, p.feature, p.mode, p.pinned_by, p.mode_since).where(
                p.org_id.in_(list(measured))
            )
        )
    }
    rows = []
    for org_id, (run_id, evidence) in measured.items():
        for feature, ev in evidence:
            row = current.get((org_id, feature))
            mode_now = DeliveryMode(row[0]) if row is not None else None
            decision = decide(feature, ev, threshold, mode_now, pinned=bool(row and row[1]))
            unchanged = row is not None and row[0] == decision.mode.value
            since = row[2] if row is not None and unchanged else now
            out[org_id][feature] = Decided(feature, decision.mode.value, decision.reason, since)
            rows.append(
                {
                    "org_id": org_id,
                    "feature": feature,
                    "mode": decision.mode.value,
                    "reason": decision.reason,
                    "decided_at": now,
                    "run_id": run_id,
                    "mode_since": since,
                    "ratio": ev.ratio,
                    "interval_low": ev.low,
                    "interval_high": ev.high,
                    "sample_size": ev.n,
                }
            )
    insert_rows(DeliveryPolicy.__table__, rows, _on_conflict_decide)
    return out


# --- changed by admins --------------------------------------------------------


def _record(org_id: int, action: str, actor: str, now: datetime, **fields: Any) -> None:
    db.session.add(PolicyChange(org_id=org_id, action=action, actor=actor, at=now, **fields))


def pin(org: Organization, feature: str, mode: DeliveryMode, actor: str, now: datetime) -> None:
    """Hold a feature's mode until unpinned, whatever the measurements say."""
    if feature == DIGEST_FEATURE and mode is DeliveryMode.DIGEST:
        raise PolicyError("the digest feature is always delivered immediately")
    row = db.session.execute(
        select(DeliveryPolicy).where(
            DeliveryPolicy.org_id == org.id, DeliveryPolicy.feature == feature
        )
    ).scalar_one_or_none()
    if row is None:
        row = DeliveryPolicy(org_id=org.id, feature=feature, decided_at=now, mode_since=now)
        db.session.add(row)
    elif row.mode != mode.value:
        row.mode_since = now
    row.mode = mode.value
    row.reason = f"pinned to {mode.value} by {actor}"
    row.pinned_by, row.pinned_at = actor, now
    _record(org.id, "pin", actor, now, feature=feature, mode=mode.value)


def unpin(org: Organization, feature: str, actor: str, now: datetime) -> None:
    """Hand the feature back to the measurements (the next run decides; the mode stays until)."""
    row = db.session.execute(
        select(DeliveryPolicy).where(
            DeliveryPolicy.org_id == org.id, DeliveryPolicy.feature == feature
        )
    ).scalar_one_or_none()
    if row is None or row.pinned_by is None:
        raise PolicyError(f"{feature} is not pinned for {org.slug}")
    row.pinned_by, row.pinned_at = None, None
    row.reason = f"unpinned by {actor}; the next tune run decides"
    _record(org.id, "unpin", actor, now, feature=feature, mode=row.mode)


def set_enforced(org: Organization, enforced: bool, actor: str, now: datetime) -> bool:
    """Switch a tenant between shadow and enforced; False when it already was."""
    if org.policy_enforced == enforced:
        return False
    org.policy_enforced = enforced
    org.policy_enforced_at, org.policy_enforced_by = now, actor
    _record(org.id, "enforce" if enforced else "shadow", actor, now)
    return True


def recent_changes(org_id: int, limit: int = 10) -> list[PolicyChange]:
    return list(
        db.session.execute(
            select(PolicyChange)
            .where(PolicyChange.org_id == org_id)
            .order_by(PolicyChange.id.desc())
            .limit(limit)
        ).scalars()
    )


# --- applied when a notification is created ------------------------------------


@dataclass(frozen=True)
class Delivery:
    """How one new notification is delivered."""

    mode: DeliveryMode
    deliver_at: datetime | None
    shadow: bool
    holdout: bool

    @property
    def held(self) -> bool:
        return self.deliver_at is not None

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "deliver_at": iso(self.deliver_at),
            "shadow": self.shadow,
            "holdout": self.holdout,
        }


def plan_delivery(
    user_id: int, feature: str, now: datetime, settings: PolicySettings, loops_enabled: bool
) -> Delivery:
    """What the recipient's primary tenant's policy says for this feature, and whether to hold.

    Held (delivered at the next digest hour) only when the mode is digest, the tenant
    is enforced, the loop is enabled and the user is not in the tenant's holdout.
    """
    org_id = primary_org_id(user_id)
    if org_id is None:
        return Delivery(DeliveryMode.IMMEDIATE, None, shadow=True, holdout=False)
    row = db.session.execute(
        select(DeliveryPolicy.mode, Organization.policy_enforced)
        .select_from(Organization)
        .outerjoin(
            DeliveryPolicy,
            (DeliveryPolicy.org_id == Organization.id) & (DeliveryPolicy.feature == feature),
        )
        .where(Organization.id == org_id)
    ).one()
    mode = DeliveryMode(row.mode) if row.mode else DeliveryMode.IMMEDIATE
    if feature == DIGEST_FEATURE:
        mode = DeliveryMode.IMMEDIATE
    enforced = bool(row.policy_enforced) and loops_enabled
    holdout = in_holdout(org_id, user_id, settings.holdout_percent)
    held = mode is DeliveryMode.DIGEST and enforced and not holdout
    deliver_at = next_digest_time(now, settings.digest_hour_utc) if held else None
    return Delivery(mode, deliver_at, shadow=not enforced, holdout=holdout)


# --- did it help? ---------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """Engagement of one group of users: ``engaged`` of ``n`` delivered, with its interval."""

    engaged: int
    n: int

    @property
    def ratio(self) -> float | None:
        return round(self.engaged / self.n, 4) if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.engaged, self.n)

    def as_json(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "interval": list(self.interval),
            "engaged": self.engaged,
            "sample_size": self.n,
        }


@dataclass(frozen=True)
class Lift:
    """Holdout vs treated users' engagement with one feature since enforcement began."""

    feature: str
    since: datetime
    holdout: Arm
    treated: Arm

    @property
    def difference(self) -> float | None:
        if self.holdout.ratio is None or self.treated.ratio is None:
            return None
        return round(self.treated.ratio - self.holdout.ratio, 4)


def _engagement_by_user(org_id: int, feature: str, since: datetime, now: datetime) -> Any:
    delivered = aliased(LoopSignal)
    read = aliased(LoopSignal)
    first_read = (
        select(literal_column("1"))
        .where(
            read.kind == SignalKind.ENGAGE.value,
            read.subject_id == delivered.subject_id,
            read.created_at < now,
        )
        .exists()
    )
    return db.session.execute(
        select(delivered.user_id, func.count(), func.count(case((first_read, 1))))
        .where(
            delivered.org_id == org_id,
            delivered.kind == SignalKind.DELIVER.value,
            delivered.feature == feature,
            delivered.created_at >= since,
            delivered.created_at < now,
        )
        .group_by(delivered.user_id)
    ).all()


def lift(
    org: Organization, features: Sequence[str], holdout_percent: int, now: datetime
) -> list[Lift]:
    """For an enforced tenant, each feature's holdout vs treated engagement since enforcement."""
    if not org.policy_enforced or org.policy_enforced_at is None:
        return []
    since = org.policy_enforced_at
    out = []
    for feature in features:
        arms = {True: [0, 0], False: [0, 0]}
        for user_id, n, engaged in _engagement_by_user(org.id, feature, since, now):
            arm = arms[user_id is not None and in_holdout(org.id, int(user_id), holdout_percent)]
            arm[0] += int(engaged)
            arm[1] += int(n)
        out.append(Lift(feature, since, Arm(*arms[True]), Arm(*arms[False])))
    return out


def digest_features(org_id: int) -> list[str]:
    return [p.feature for p in policies_of(org_id) if p.mode == DeliveryMode.DIGEST.value]


def policy_json(p: DeliveryPolicy) -> dict[str, Any]:
    return {
        "feature": p.feature,
        "mode": p.mode,
        "pinned": p.pinned_by is not None,
        "pinned_by": p.pinned_by,
        "pinned_at": iso(p.pinned_at),
        "reason": p.reason,
        "ratio": p.ratio,
        "interval": (
            [p.interval_low, p.interval_high] if p.interval_low is not None else [0.0, 1.0]
        ),
        "sample_size": p.sample_size or 0,
        "decided_at": iso(p.decided_at),
        "mode_since": iso(p.mode_since),
    }


def digest_counts(org_ids: Sequence[int]) -> dict[int, int]:
    """How many features each tenant delivers as digests (the overview's column)."""
    if not org_ids:
        return {}
    rows = db.session.execute(
        select(DeliveryPolicy.org_id, func.count())
        .where(
            DeliveryPolicy.org_id.in_(list(org_ids)),
            DeliveryPolicy.mode == DeliveryMode.DIGEST.value,
        )
        .group_by(DeliveryPolicy.org_id)
    ).all()
    return {int(org_id): int(n) for org_id, n in rows}
