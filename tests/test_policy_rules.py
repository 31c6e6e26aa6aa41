"""The delivery policy's pure rules: decisions, hysteresis, pins, holdout and the digest hour."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from loops.policy_rules import (
    DeliveryMode,
    Evidence,
    decide,
    in_holdout,
    next_digest_time,
)

LOW = Evidence(ratio=0.08, low=0.0576, high=0.1104, n=412)
HIGH = Evidence(ratio=0.55, low=0.50, high=0.60, n=400)
STRADDLING = Evidence(ratio=0.19, low=0.12, high=0.28, n=90)


def test_confidently_low_engagement_is_digested_with_its_reason() -> None:
    d = decide("report.ready", LOW, 0.2, None)
    assert d.mode is DeliveryMode.DIGEST
    assert d.reason == "ratio 0.08 [0.06, 0.11] < 0.20 over 412 deliveries"


def test_confidently_high_engagement_is_immediate() -> None:
    assert decide("mention", HIGH, 0.2, DeliveryMode.DIGEST).mode is DeliveryMode.IMMEDIATE


def test_lower_bound_exactly_at_threshold_is_immediate() -> None:
    at = Evidence(ratio=0.25, low=0.2, high=0.3, n=500)
    assert decide("x", at, 0.2, DeliveryMode.DIGEST).mode is DeliveryMode.IMMEDIATE


def test_upper_bound_exactly_at_threshold_is_not_digest() -> None:
    at = Evidence(ratio=0.15, low=0.1, high=0.2, n=500)
    assert decide("x", at, 0.2, None).mode is DeliveryMode.IMMEDIATE


@pytest.mark.parametrize("current", [DeliveryMode.DIGEST, DeliveryMode.IMMEDIATE])
def test_straddling_interval_keeps_the_current_mode(current: DeliveryMode) -> None:
    d = decide("x", STRADDLING, 0.2, current)
    assert d.mode is current
    assert "straddles 0.20" in d.reason and f"stays {current.value}" in d.reason


def test_cold_start_is_immediate() -> None:
    assert decide("x", STRADDLING, 0.2, None).mode is DeliveryMode.IMMEDIATE


def test_digest_feature_is_never_digested() -> None:
    assert decide("digest", LOW, 0.2, DeliveryMode.DIGEST).mode is DeliveryMode.IMMEDIATE


def test_pinned_feature_keeps_its_mode() -> None:
    d = decide("x", HIGH, 0.2, DeliveryMode.DIGEST, pinned=True)
    assert d.mode is DeliveryMode.DIGEST and "pinned" in d.reason


def test_holdout_follows_the_published_hash() -> None:
    for org_id, user_id in [(1, 1), (7, 42), (3, 99_999)]:
        bucket = int(hashlib.sha256(f"{org_id}:{user_id}".encode()).hexdigest()[:8], 16) % 100
        assert in_holdout(org_id, user_id, 10) is (bucket < 10)
        assert in_holdout(org_id, user_id, bucket) is False
        assert in_holdout(org_id, user_id, bucket + 1) is True
    assert not any(in_holdout(1, u, 0) for u in range(200))
    assert all(in_holdout(1, u, 100) for u in range(200))
    share = sum(in_holdout(5, u, 10) for u in range(10_000)) / 10_000
    assert 0.08 < share < 0.12


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 11, 29, 8, 59, 59, tzinfo=UTC), datetime(2026, 11, 29, 9, tzinfo=UTC)),
        (datetime(2026, 11, 29, 9, 0, 0, tzinfo=UTC), datetime(2026, 11, 30, 9, tzinfo=UTC)),
        (datetime(2026, 12, 31, 23, 0, tzinfo=UTC), datetime(2027, 1, 1, 9, tzinfo=UTC)),
    ],
)
def test_next_digest_time_is_strictly_after_now(now: datetime, expected: datetime) -> None:
    assert next_digest_time(now, 9) == expected


def test_reason_never_rounds_a_bound_across_the_threshold() -> None:
    near = Evidence(ratio=0.4, low=0.1982, high=0.6358, n=15)
    assert decide("x", near, 0.2, None).reason == (
        "ratio 0.40 [0.1982, 0.64] straddles 0.20 over 15 deliveries; starts immediate"
    )
    one = Evidence(ratio=0.0, low=0.0, high=0.7935, n=1)
    assert decide("x", one, 0.2, None).reason.endswith("over 1 delivery; starts immediate")
