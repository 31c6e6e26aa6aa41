"""Engagement ratios with their uncertainty: Wilson intervals and empirical-Bayes shrinkage.

Pure functions, no I/O. A ratio here is ``engaged / n``: of ``n`` delivered notifications,
``engaged`` were read at least once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

# The 97.5th percentile of the standard normal: a two-sided 95% interval.
Z_95 = 1.959964
DECIMALS = 4

# The prior counts as at least this many observations, so a tenant with a handful of
# deliveries is visibly pulled toward its feature's pooled ratio ...
MIN_PRIOR_STRENGTH = 2.0
# ... and as at most this many, so a large tenant is never drowned by the pool when
# every tenant happens to look alike (the between-tenant spread then estimates as 0).
MAX_PRIOR_STRENGTH = 1000.0


def wilson_interval(engaged: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of ``engaged / n``, 4 decimals; ``(0.0, 1.0)`` when n is 0.

    Unlike the normal ("Wald") interval it stays inside [0, 1] and is not zero-width at
    0 or n successes, which matters for small tenants.
    """
    if n <= 0:
        return (0.0, 1.0)
    k = min(max(engaged, 0), n)
    p = k / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    low = max(0.0, centre - half)
    high = min(1.0, centre + half)
    # At the edges the formula lands on 0 or 1 up to rounding error; say it exactly.
    if k == 0:
        low = 0.0
    if k == n:
        high = 1.0
    return (round(low, DECIMALS), round(high, DECIMALS))


@dataclass(frozen=True)
class BetaPrior:
    """A Beta(mean·strength, (1 - mean)·strength) prior for one feature's ratio."""

    mean: float
    strength: float

    @property
    def alpha(self) -> float:
        return self.mean * self.strength

    @property
    def beta(self) -> float:
        return (1 - self.mean) * self.strength


@dataclass(frozen=True)
class RatioMoments:
    """What the prior needs of many tenants' ``(engaged, n)``: five sums, which add up.

    So the tenants not in a batch can be summed by the database (``count``, ``sum``)
    and the batch's fresh counts added here, instead of fetching every tenant's pair.
    Pairs with ``n <= 0`` are left out; ``engaged`` is held within [0, n].
    """

    tenants: int = 0
    n: int = 0
    engaged: int = 0
    engaged_sq_over_n: float = 0.0  # sum of engaged² / n
    n_sq: float = 0.0  # sum of n²

    @classmethod
    def of(cls, counts: Iterable[tuple[int, int]]) -> RatioMoments:
        pairs = [(min(max(e, 0), n), n) for e, n in counts if n > 0]
        return cls(
            tenants=len(pairs),
            n=sum(n for _, n in pairs),
            engaged=sum(e for e, _ in pairs),
            engaged_sq_over_n=sum(e * e / n for e, n in pairs),
            n_sq=float(sum(n * n for _, n in pairs)),
        )

    def __add__(self, other: RatioMoments) -> RatioMoments:
        return RatioMoments(
            self.tenants + other.tenants,
            self.n + other.n,
            self.engaged + other.engaged,
            self.engaged_sq_over_n + other.engaged_sq_over_n,
            self.n_sq + other.n_sq,
        )


def fit_beta_prior(counts: Iterable[tuple[int, int]]) -> BetaPrior | None:
    """Fit a feature's prior to every tenant's ``(engaged, n)`` by the method of moments.

    The mean is the pooled ratio (all engaged over all delivered). The strength comes
    from how much tenants' ratios differ beyond what their sample sizes explain (the
    DerSimonian-Laird estimate of the between-tenant variance ``tau²``): a Beta with
    mean ``m`` and strength ``s`` has variance ``m(1 - m)/(s + 1)``, so
    ``s = m(1 - m)/tau² - 1``, held within [MIN_PRIOR_STRENGTH, MAX_PRIOR_STRENGTH].
    None when nothing was delivered.
    """
    return prior_from_moments(RatioMoments.of(counts))


def prior_from_moments(m: RatioMoments) -> BetaPrior | None:
    """``fit_beta_prior`` from the tenants' sums (``RatioMoments``)."""
    if m.n <= 0:
        return None
    mean = m.engaged / m.n
    spread = mean * (1 - mean)
    k = m.tenants
    if k < 2 or spread == 0:
        # One tenant tells nothing about how tenants differ; identical all-0/all-1
        # ratios have no spread to measure. Either way: the weakest allowed prior.
        strength = MIN_PRIOR_STRENGTH if k < 2 else MAX_PRIOR_STRENGTH
        return BetaPrior(mean, strength)
    # Cochran's Q, sum of n·(e/n - mean)², expanded into the sums; never below 0.
    q = max(0.0, m.engaged_sq_over_n - 2 * mean * m.engaged + mean * mean * m.n)
    scale = m.n - m.n_sq / m.n
    tau2 = max(0.0, (q - (k - 1) * spread) / scale) if scale > 0 else 0.0
    strength = MAX_PRIOR_STRENGTH if tau2 <= 0 else spread / tau2 - 1
    return BetaPrior(mean, min(MAX_PRIOR_STRENGTH, max(MIN_PRIOR_STRENGTH, strength)))


def shrunk_estimate(engaged: int, n: int, prior: BetaPrior) -> float:
    """The posterior mean ``(engaged + alpha) / (n + alpha + beta)``, 4 decimals.

    A weighted average of the tenant's own ratio (weight n) and the pooled ratio
    (weight = the prior's strength): it always lies between the two and moves toward
    the tenant's own ratio as n grows.
    """
    k = min(max(engaged, 0), max(n, 0))
    return round((k + prior.alpha) / (max(n, 0) + prior.strength), DECIMALS)
