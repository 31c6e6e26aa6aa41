"""The tenant page's Delivery section read model: modes and why, intervals as ranges, lift."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loops import delivery
from loops.delivery import Arm, Lift, PolicySettings
from loops.models import Calibration, DeliveryPolicy, Organization, PolicyChange
from loops.policy_rules import DIGEST_FEATURE, DeliveryMode

# The range bar's geometry, in SVG user units: a 0..1 track with room for the end caps.
BAR_WIDTH = 120
BAR_HEIGHT = 16
_PAD = 4
_TRACK = BAR_WIDTH - 2 * _PAD
# Between the two ends of a range ("2.7%" to "9.0%").
EN_DASH = "\u2013"


def pct(value: float | None) -> str:
    """0.0812 → "8.1%"; None → "—"."""
    return "—" if value is None else f"{value * 100:.1f}%"


@dataclass(frozen=True)
class Interval:
    """A ratio with its 95% interval and sample size, ready to draw as a range."""

    value: float | None
    low: float
    high: float
    n: int
    engaged: int | None = None
    threshold: float | None = None

    @property
    def known(self) -> bool:
        """Something was measured (with no deliveries the interval is all of [0, 1])."""
        return self.n > 0 and self.value is not None

    @property
    def range_text(self) -> str:
        return f"{pct(self.low)}{EN_DASH}{pct(self.high)}"

    @property
    def label(self) -> str:
        if not self.known:
            return "nothing delivered yet: any ratio from 0% to 100% is possible"
        return (
            f"{pct(self.value)}, 95% interval {pct(self.low)} to {pct(self.high)}, "
            f"over {self.n:,} delivered"
        )

    # Positions on the bar (x in SVG units); the template draws, this decides where.
    @staticmethod
    def x(value: float) -> float:
        return round(_PAD + min(max(value, 0.0), 1.0) * _TRACK, 2)

    @property
    def low_x(self) -> float:
        return self.x(self.low)

    @property
    def span(self) -> float:
        # At least a sliver, so a very tight interval is still visible around its point.
        return round(max(self.x(self.high) - self.x(self.low), 1.5), 2)

    @property
    def point_x(self) -> float | None:
        return None if self.value is None else self.x(self.value)

    @property
    def threshold_x(self) -> float | None:
        return None if self.threshold is None else self.x(self.threshold)

    def overlaps(self, other: Interval) -> bool:
        return not (self.high < other.low or other.high < self.low)


def arm_interval(arm: Arm, threshold: float | None = None) -> Interval:
    low, high = arm.interval
    return Interval(arm.ratio, low, high, arm.n, engaged=arm.engaged, threshold=threshold)


def calibration_interval(cal: Calibration, threshold: float | None = None) -> Interval | None:
    """An engagement-ratio calibration's interval (None for rates or rows written before it)."""
    if cal.interval_low is None or cal.interval_high is None:
        return None
    return Interval(
        cal.value, cal.interval_low, cal.interval_high, cal.sample_size, cal.engaged, threshold
    )


@dataclass(frozen=True)
class PolicyRow:
    feature: str
    mode: str
    reason: str
    decided_at: datetime
    mode_since: datetime
    pinned_by: str | None
    pinned_at: datetime | None
    interval: Interval | None

    @property
    def pinned(self) -> bool:
        return self.pinned_by is not None

    @property
    def pin_modes(self) -> list[str]:
        """The modes an admin may pin this feature to (digests are never digested); not the
        one it is already pinned to, which would change nothing."""
        if self.feature == DIGEST_FEATURE:
            modes = [DeliveryMode.IMMEDIATE.value]
        else:
            modes = [m.value for m in DeliveryMode]
        return [m for m in modes if not (self.pinned and m == self.mode)]


def policy_row(p: DeliveryPolicy, threshold: float) -> PolicyRow:
    interval = None
    if p.interval_low is not None and p.interval_high is not None and p.sample_size:
        interval = Interval(
            p.ratio, p.interval_low, p.interval_high, p.sample_size, None, threshold
        )
    return PolicyRow(
        feature=p.feature,
        mode=p.mode,
        reason=p.reason,
        decided_at=p.decided_at,
        mode_since=p.mode_since,
        pinned_by=p.pinned_by,
        pinned_at=p.pinned_at,
        interval=interval,
    )


@dataclass(frozen=True)
class LiftRow:
    """Holdout (always immediate) vs treated (digest) engagement with one feature."""

    feature: str
    since: datetime
    holdout: Interval
    treated: Interval

    @property
    def comparable(self) -> bool:
        return self.holdout.known and self.treated.known

    @property
    def difference(self) -> float | None:
        if not self.comparable:
            return None
        return round((self.treated.value or 0.0) - (self.holdout.value or 0.0), 4)

    @property
    def difference_text(self) -> str:
        d = self.difference
        return "—" if d is None else f"{d * 100:+.1f} points"

    @property
    def overlap(self) -> bool:
        return self.holdout.overlaps(self.treated)

    @property
    def verdict(self) -> str:
        """The comparison in plain words, with how sure it is (from the intervals)."""
        if not self.comparable:
            missing = [
                name
                for name, arm in (("the holdout", self.holdout), ("treated users", self.treated))
                if not arm.known
            ]
            return (
                f"Nothing of {self.feature} delivered to {' or '.join(missing)} since "
                "enforcement began: no comparison yet."
            )
        d = self.difference or 0.0
        points = abs(d) * 100
        if points < 0.5:
            head = f"Treated users read about as much of {self.feature} as the holdout"
        else:
            more = "more" if d > 0 else "less"
            head = (
                f"Treated users read {points:.0f} point{'s' if round(points) != 1 else ''} "
                f"{more} of {self.feature} than the holdout"
            )
        if self.overlap:
            tail = "the intervals overlap, so this is not yet conclusive."
        else:
            tail = "the intervals do not overlap, so the difference is unlikely to be chance."
        return f"{head}; {tail}"


def lift_row(lift: Lift) -> LiftRow:
    return LiftRow(lift.feature, lift.since, arm_interval(lift.holdout), arm_interval(lift.treated))


_CHANGE_WORDS = {
    "pin": "pinned {feature} to {mode}",
    "unpin": "unpinned {feature} (left at {mode} until the next run decides)",
    "enforce": "enforced the policy",
    "shadow": "switched to shadow",
}


def change_text(change: PolicyChange) -> str:
    words = _CHANGE_WORDS.get(change.action, change.action)
    return words.format(feature=change.feature or "", mode=change.mode or "")


@dataclass(frozen=True)
class DeliverySection:
    org: Organization
    settings: PolicySettings
    loops_enabled: bool
    policies: list[PolicyRow]
    lifts: list[LiftRow]
    changes: list[PolicyChange]

    @property
    def enforced(self) -> bool:
        return bool(self.org.policy_enforced)

    @property
    def applied(self) -> bool:
        """Notifications are really being held (enforced, and the loop is on)."""
        return self.enforced and self.loops_enabled

    @property
    def digest_features(self) -> list[str]:
        return [p.feature for p in self.policies if p.mode == DeliveryMode.DIGEST.value]

    @property
    def threshold_text(self) -> str:
        return pct(self.settings.digest_below)

    @property
    def digest_time_text(self) -> str:
        return f"{self.settings.digest_hour_utc:02d}:00 UTC"


def load(
    org: Organization, now: datetime, config: Mapping[str, Any], loops_enabled: bool
) -> DeliverySection:
    settings = PolicySettings.from_config(config)
    policies = delivery.policies_of(org.id)
    digest = [p.feature for p in policies if p.mode == DeliveryMode.DIGEST.value]
    lifts = delivery.lift(org, digest, settings.holdout_percent, now)
    return DeliverySection(
        org=org,
        settings=settings,
        loops_enabled=loops_enabled,
        policies=[policy_row(p, settings.digest_below) for p in policies],
        lifts=[lift_row(x) for x in lifts],
        changes=delivery.recent_changes(org.id),
    )
