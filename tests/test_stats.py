"""Wilson intervals and the empirical-Bayes estimate: known values and their invariants."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loops.stats import (
    MAX_PRIOR_STRENGTH,
    MIN_PRIOR_STRENGTH,
    BetaPrior,
    RatioMoments,
    fit_beta_prior,
    prior_from_moments,
    shrunk_estimate,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("engaged", "n", "expected"),
    [
        (8, 100, (0.0411, 0.15)),  # textbook value for 8 of 100
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
        (1, 2, (0.0945, 0.9055)),
        (33, 412, (0.0576, 0.1104)),
        (0, 0, (0.0, 1.0)),
    ],
)
def test_wilson_interval_known_values(engaged: int, n: int, expected: tuple[float, float]) -> None:
    assert wilson_interval(engaged, n) == expected


counts = st.integers(min_value=1, max_value=100_000).flatmap(
    lambda n: st.tuples(st.integers(min_value=0, max_value=n), st.just(n))
)


@given(counts)
def test_interval_contains_the_ratio_and_stays_in_unit_range(pair: tuple[int, int]) -> None:
    engaged, n = pair
    low, high = wilson_interval(engaged, n)
    assert 0.0 <= low <= round(engaged / n, 4) <= high <= 1.0


@given(counts, st.integers(min_value=2, max_value=50))
def test_interval_narrows_as_n_grows(pair: tuple[int, int], factor: int) -> None:
    engaged, n = pair
    low, high = wilson_interval(engaged, n)
    big_low, big_high = wilson_interval(engaged * factor, n * factor)
    assert big_high - big_low <= high - low


tenants = st.lists(counts, min_size=1, max_size=30)


@given(tenants, counts)
def test_estimate_lies_between_own_and_pooled_ratio(
    others: list[tuple[int, int]], mine: tuple[int, int]
) -> None:
    prior = fit_beta_prior([*others, mine])
    assert prior is not None
    engaged, n = mine
    own = engaged / n
    estimate = shrunk_estimate(engaged, n, prior)
    assert min(own, prior.mean) - 1e-4 <= estimate <= max(own, prior.mean) + 1e-4


@given(tenants, st.integers(min_value=0, max_value=10))
def test_estimate_approaches_own_ratio_as_n_grows(
    others: list[tuple[int, int]], tenths: int
) -> None:
    prior = fit_beta_prior(others)
    assert prior is not None
    # The same own ratio (tenths / 10) at ever larger samples.
    gaps = []
    for n in (10, 1_000, 100_000, 10_000_000):
        engaged = tenths * n // 10
        gaps.append(abs(shrunk_estimate(engaged, n, prior) - engaged / n))
    assert all(later <= earlier + 1e-4 for earlier, later in pairwise(gaps))
    assert gaps[-1] <= 1e-3


def test_a_handful_of_deliveries_is_pulled_visibly_toward_the_pool() -> None:
    # Many tenants around 0.6; a tiny tenant with 0 of 3 read.
    prior = fit_beta_prior([(60, 100), (58, 100), (62, 100), (0, 3)])
    assert prior is not None and prior.strength >= MIN_PRIOR_STRENGTH
    assert shrunk_estimate(0, 3, prior) >= 0.2


def test_prior_counts_as_at_least_two_observations() -> None:
    # Tenants wildly different: the fitted strength would be below 2 without the floor.
    prior = fit_beta_prior([(0, 1000), (1000, 1000), (500, 1000)])
    assert prior is not None
    assert prior.strength == MIN_PRIOR_STRENGTH
    assert shrunk_estimate(0, 1, BetaPrior(0.5, 2.0)) == pytest.approx(1 / 3, abs=1e-4)


def test_nothing_delivered_fits_no_prior() -> None:
    assert fit_beta_prior([]) is None
    assert fit_beta_prior([(0, 0)]) is None


def _direct_prior(pairs: list[tuple[int, int]]) -> tuple[float, float]:
    """The DerSimonian-Laird fit written out term by term, as the docstring states it."""
    total = sum(n for _, n in pairs)
    mean = sum(e for e, _ in pairs) / total
    spread = mean * (1 - mean)
    q = sum(n * (e / n - mean) ** 2 for e, n in pairs)
    scale = total - sum(n * n for _, n in pairs) / total
    tau2 = max(0.0, (q - (len(pairs) - 1) * spread) / scale)
    strength = MAX_PRIOR_STRENGTH if tau2 <= 0 else spread / tau2 - 1
    return mean, min(MAX_PRIOR_STRENGTH, max(MIN_PRIOR_STRENGTH, strength))


def test_the_prior_from_summed_moments_is_the_prior_of_the_pairs() -> None:
    """Tenants summed apart (the database's share, a batch's) fit the same prior."""
    rng = random.Random(7)
    pairs = []
    for _ in range(300):
        n = rng.choice([3, 40, 900, 25_000, 400_000])
        pairs.append((round(n * rng.uniform(0.05, 0.6)), n))
    stored, batch = pairs[:250], pairs[250:]
    summed = prior_from_moments(RatioMoments.of(stored) + RatioMoments.of(batch))
    assert summed is not None
    mean, strength = _direct_prior(pairs)
    assert summed.mean == pytest.approx(mean, rel=1e-12)
    assert summed.strength == pytest.approx(strength, rel=1e-9)
    assert MIN_PRIOR_STRENGTH < summed.strength < MAX_PRIOR_STRENGTH
    assert RatioMoments.of([]) + RatioMoments.of([(5, 0), (-1, 0)]) == RatioMoments()
