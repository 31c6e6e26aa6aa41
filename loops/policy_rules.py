"""The delivery policy's rules: the decision per feature, the holdout and the digest hour. Pure."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

# Digests are notifications too (of this feature); they are never held for a digest.
DIGEST_FEATURE = "digest"


class DeliveryMode(StrEnum):
    IMMEDIATE = "immediate"
    DIGEST = "digest"


@dataclass(frozen=True)
class Evidence:
    """A feature's engagement ratio in one run: ``engaged`` of ``n`` delivered, and its interval."""

    ratio: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Decision:
    mode: DeliveryMode
    reason: str


def _bound(value: float, threshold: float) -> str:
    """Two decimals, or four where two would put the bound on the wrong side of the threshold."""
    short = f"{value:.2f}"
    if (float(short) >= threshold) != (value >= threshold):
        return f"{value:.4f}"
    return short


def _evidence_text(e: Evidence, threshold: float) -> tuple[str, str]:
    noun = "delivery" if e.n == 1 else "deliveries"
    bounds = f"[{_bound(e.low, threshold)}, {_bound(e.high, threshold)}]"
    return f"ratio {e.ratio:.2f} {bounds}", f"over {e.n:,} {noun}"


def decide(
    feature: str,
    evidence: Evidence,
    threshold: float,
    current: DeliveryMode | None,
    pinned: bool = False,
) -> Decision:
    """How a feature's notifications are delivered after a run that measured ``evidence``.

    Digest when the whole 95% interval lies below ``threshold`` (confidently low
    engagement), immediate when it lies at or above it; in between the current mode
    stays (hysteresis: one noisy week does not flip a feature back and forth), and a
    feature never decided is immediate. The digest feature is always immediate; a
    pinned feature keeps its mode.
    """
    ratio, over = _evidence_text(evidence, threshold)
    if feature == DIGEST_FEATURE:
        return Decision(DeliveryMode.IMMEDIATE, "digests themselves are always delivered at once")
    if pinned and current is not None:
        return Decision(current, f"pinned to {current.value} by an admin; measured {ratio} {over}")
    if evidence.high < threshold:
        return Decision(DeliveryMode.DIGEST, f"{ratio} < {threshold:.2f} {over}")
    if evidence.low >= threshold:
        return Decision(DeliveryMode.IMMEDIATE, f"{ratio} ≥ {threshold:.2f} {over}")
    keep = current or DeliveryMode.IMMEDIATE
    how = "stays" if current is not None else "starts"
    return Decision(keep, f"{ratio} straddles {threshold:.2f} {over}; {how} {keep.value}")


def in_holdout(org_id: int, user_id: int, holdout_percent: int) -> bool:
    """Whether this user is in the tenant's holdout (always delivered at once).

    Deterministic, so a user stays in (or out of) the holdout across requests,
    processes and releases, and a client app can compute it too.
    """
    bucket = int(hashlib.sha256(f"{org_id}:{user_id}".encode()).hexdigest()[:8], 16) % 100
    return bucket < holdout_percent


def next_digest_time(now: datetime, digest_hour_utc: int) -> datetime:
    """The first ``digest_hour_utc``:00 UTC strictly after ``now`` (``now`` must be aware)."""
    now = now.astimezone(UTC)
    at = now.replace(hour=digest_hour_utc, minute=0, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)
