"""Whether a calibration really changed: the new value's 95% interval against the old value. Pure.

The rule, the same for every family: a new value whose 95% interval lies wholly above
the value it replaced is a significant rise, wholly below a significant drop; when the
old value lies inside the interval (a bound counts as inside) the change is "within
noise" — what the tenant's own sampling noise alone could produce week to week.

- Ratios (``engagement-ratio:``) use the run's Wilson score interval of engaged / n.
- Rates (``engagement-rate:``, signals per day) use the Poisson score interval of the
  window's signal count (the Poisson analogue of Wilson's: the values of the mean λ
  with ``(count - λ)² / λ ≤ z²``, in closed form ``count + z²/2 ± z·√(count + z²/4)``),
  divided by the window's days. It stays positive and is not zero-width at a count
  of 0. It assumes signals arrive independently; real engagement clumps (a Monday
  morning, one busy user), so a rate marked significant is a strong hint, not proof.

Consecutive weekly runs share most of their 30-day windows, so a week-on-week change
is usually small; that is exactly what "within noise" says.
"""

from __future__ import annotations

import math
from enum import StrEnum

from loops.stats import DECIMALS, Z_95, wilson_interval


class Change(StrEnum):
    UP = "up"
    DOWN = "down"
    NOISE = "within noise"

    @property
    def significant(self) -> bool:
        return self is not Change.NOISE

    @property
    def label(self) -> str:
        """How the dashboard says it."""
        return {
            Change.UP: "significant rise",
            Change.DOWN: "significant drop",
            Change.NOISE: "within noise",
        }[self]


def interval_change(low: float, high: float, previous: float | None) -> Change | None:
    """The change from ``previous`` to a new value with 95% interval ``[low, high]``.

    None when there is no previous value. ``previous`` exactly at a bound is inside.
    """
    if previous is None or not math.isfinite(previous):
        return None
    if previous < low:
        return Change.UP
    if previous > high:
        return Change.DOWN
    return Change.NOISE


def poisson_interval(count: int, z: float = Z_95) -> tuple[float, float]:
    """The 95% Poisson score interval of a count's mean (unrounded); ``(0, z²)`` at 0."""
    k = max(int(count), 0)
    centre = k + z * z / 2
    half = z * math.sqrt(k + z * z / 4)
    # At 0 the lower bound is 0 exactly; say so rather than a rounding error below it.
    return (0.0 if k == 0 else max(0.0, centre - half), centre + half)


def rate_interval(count: int, days: float) -> tuple[float, float] | None:
    """The 95% interval of a rate of ``count`` signals over ``days`` days, per day, 4 decimals.

    None for a window of no days (the rate itself is then 0.0 and says nothing).
    """
    if not (math.isfinite(days) and days > 0):
        return None
    low, high = poisson_interval(count)
    return (round(low / days, DECIMALS), round(high / days, DECIMALS))


def ratio_interval(
    engaged: int | None, n: int, value: float, low: float | None, high: float | None
) -> tuple[float, float]:
    """A ratio's stored interval, or (rows written before intervals were stored) the same
    Wilson interval from its counts, the numerator recovered from the ratio if need be."""
    if low is not None and high is not None:
        return (low, high)
    k = engaged if engaged is not None else round(value * n)
    return wilson_interval(k, n)


def calibration_change(
    kind: str,
    *,
    value: float,
    sample_size: int,
    window_days: int | None,
    previous: float | None,
    engaged: int | None = None,
    interval_low: float | None = None,
    interval_high: float | None = None,
) -> Change | None:
    """The change of one calibration (``kind`` "rate" or "ratio") from ``previous``.

    None when there is nothing to compare with, or for other kinds of key.
    """
    if previous is None:
        return None
    if kind == "ratio":
        if sample_size <= 0:
            return None
        low, high = ratio_interval(engaged, sample_size, value, interval_low, interval_high)
        return interval_change(low, high, previous)
    if kind == "rate":
        interval = rate_interval(sample_size, window_days or 0)
        return None if interval is None else interval_change(*interval, previous)
    return None


def count_change(current: int, previous: int) -> Change | None:
    """Two counts over windows of equal length: did the rate of events change?

    Were the rate unchanged, each of the ``current + previous`` events would fall in
    either window with even odds; the change is significant when the Wilson interval
    of the current window's share excludes one half. None when both are 0.
    """
    total = max(current, 0) + max(previous, 0)
    if total == 0:
        return None
    low, high = wilson_interval(max(current, 0), total)
    return interval_change(low, high, 0.5)
