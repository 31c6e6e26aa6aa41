"""The significance rule: a new interval against the value it replaced, at its edges."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loops.significance import (
    Change,
    calibration_change,
    count_change,
    interval_change,
    poisson_interval,
    rate_interval,
    ratio_interval,
)
from loops.stats import Z_95, wilson_interval


@pytest.mark.parametrize(
    ("previous", "expected"),
    [
        (None, None),
        (0.0999, Change.UP),  # just below the interval: the new value is higher
        (0.1, Change.NOISE),  # exactly at the lower bound counts as inside
        (0.15, Change.NOISE),
        (0.2, Change.NOISE),  # exactly at the upper bound counts as inside
        (0.2001, Change.DOWN),
        (math.nan, None),
    ],
)
def test_interval_change_edges(previous: float | None, expected: Change | None) -> None:
    assert interval_change(0.1, 0.2, previous) is expected


def test_change_labels_say_whether_it_is_significant() -> None:
    assert Change.UP.significant and Change.DOWN.significant
    assert not Change.NOISE.significant
    assert Change.UP.label == "significant rise"
    assert Change.DOWN.label == "significant drop"
    assert Change.NOISE.value == Change.NOISE.label == "within noise"


def test_ratio_change_uses_the_stored_wilson_interval() -> None:
    # 41 of 100 read: Wilson [0.3182, 0.5085].
    low, high = wilson_interval(41, 100)
    common = {"value": 0.41, "sample_size": 100, "window_days": 30}
    common |= {"engaged": 41, "interval_low": low, "interval_high": high}
    assert calibration_change("ratio", previous=0.30, **common) is Change.UP
    assert calibration_change("ratio", previous=low, **common) is Change.NOISE
    assert calibration_change("ratio", previous=high, **common) is Change.NOISE
    assert calibration_change("ratio", previous=0.52, **common) is Change.DOWN
    assert calibration_change("ratio", previous=None, **common) is None


def test_ratio_without_a_stored_interval_recovers_it_from_its_counts() -> None:
    # Written before intervals were stored: 0.41 of 100 → 41 engaged, the same interval.
    assert ratio_interval(None, 100, 0.41, None, None) == wilson_interval(41, 100)
    assert (
        calibration_change("ratio", value=0.41, sample_size=100, window_days=30, previous=0.30)
        is Change.UP
    )
    # Nothing delivered: no interval worth comparing.
    assert (
        calibration_change("ratio", value=0.0, sample_size=0, window_days=30, previous=0.5) is None
    )


def test_poisson_interval_matches_its_closed_form_and_starts_at_zero() -> None:
    assert poisson_interval(0) == (0.0, pytest.approx(Z_95**2))
    low, high = poisson_interval(100)
    # (100 - λ)² / λ = z² at both bounds.
    for bound in (low, high):
        assert (100 - bound) ** 2 / bound == pytest.approx(Z_95**2)
    assert low < 100 < high
    # Wider in absolute terms, narrower relative to the count, as counts grow.
    lo2, hi2 = poisson_interval(10_000)
    assert hi2 - lo2 > high - low
    assert (hi2 - lo2) / 10_000 < (high - low) / 100


def test_rate_interval_is_per_day_and_none_without_days() -> None:
    low, high = rate_interval(300, 30)  # 10/day
    assert low < 10 < high
    assert (low, high) == (
        round(poisson_interval(300)[0] / 30, 4),
        round(poisson_interval(300)[1] / 30, 4),
    )
    assert rate_interval(300, 0) is None
    assert rate_interval(300, math.inf) is None


def test_rate_change_from_the_poisson_interval() -> None:
    # 300 signals in 30 days: 10.0/day, interval about [8.9, 11.2].
    low, high = rate_interval(300, 30) or (0.0, 0.0)
    kwargs = {"value": 10.0, "sample_size": 300, "window_days": 30}
    assert calibration_change("rate", previous=8.0, **kwargs) is Change.UP
    assert calibration_change("rate", previous=low, **kwargs) is Change.NOISE
    assert calibration_change("rate", previous=9.5, **kwargs) is Change.NOISE
    assert calibration_change("rate", previous=high, **kwargs) is Change.NOISE
    assert calibration_change("rate", previous=12.0, **kwargs) is Change.DOWN
    # A zero-day window says nothing; unknown kinds are never judged.
    assert calibration_change("rate", value=0.0, sample_size=3, window_days=0, previous=1.0) is None
    assert (
        calibration_change("other", value=1.0, sample_size=3, window_days=30, previous=9.0) is None
    )


def test_count_change_between_two_equal_windows() -> None:
    assert count_change(0, 0) is None
    assert count_change(100, 100) is Change.NOISE
    assert count_change(120, 100) is Change.NOISE  # +20% on ~100 a window: noise
    assert count_change(1200, 1000) is Change.UP  # the same +20% on ten times more
    assert count_change(800, 1000) is Change.DOWN
    assert count_change(5, 0) is Change.UP
    assert count_change(0, 5) is Change.DOWN
    assert count_change(1, 0) is Change.NOISE  # one event says nothing


@given(
    st.floats(0, 1, allow_nan=False),
    st.floats(0, 1, allow_nan=False),
    st.floats(0, 1, allow_nan=False),
)
def test_interval_change_is_up_down_or_noise_by_position(a: float, b: float, p: float) -> None:
    low, high = min(a, b), max(a, b)
    change = interval_change(low, high, p)
    assert change is (Change.UP if p < low else Change.DOWN if p > high else Change.NOISE)


@given(st.integers(0, 10_000), st.integers(1, 10_000))
def test_a_ratio_never_differs_significantly_from_itself(engaged: int, extra: int) -> None:
    n = engaged + extra
    low, high = wilson_interval(engaged, n)
    value = round(engaged / n, 4)
    change = calibration_change(
        "ratio",
        value=value,
        sample_size=n,
        window_days=30,
        previous=value,
        engaged=engaged,
        interval_low=low,
        interval_high=high,
    )
    assert change is Change.NOISE
