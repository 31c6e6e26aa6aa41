"""Server-side SVG chart geometry: pure functions from numbers to coordinates and labels."""

# Templates draw the SVG from these values (Jinja escapes every label), so charts need
# no JavaScript and no inline style, and read without hovering: axes, ticks and units.

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

# Series colours (SVG presentation attributes, allowed by a strict CSP).
ENGAGE_COLOR = "#2563eb"
DELIVER_COLOR = "#94a3b8"


@dataclass(frozen=True)
class Sparkline:
    width: int
    height: int
    points: str  # polyline "x,y x,y …" over the complete days
    area: str  # polygon closing the line down to the baseline
    total: int
    peak: int
    days: int
    label: str  # accessible text: the numbers the picture shows
    # The last day (today, still filling up) is a dot, not the end of the line:
    # a line would show every afternoon's half-day as a collapse.
    last: tuple[float, float] | None = None

    @property
    def empty(self) -> bool:
        return self.total == 0


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class Series:
    name: str
    color: str
    points: str  # the complete days
    total: int
    dashed: bool = False
    last: tuple[float, float] | None = None  # today so far, drawn as a dot
    last_value: int = 0


@dataclass(frozen=True)
class LineChart:
    title: str
    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    series: tuple[Series, ...]
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    y_label: str
    label: str

    @property
    def empty(self) -> bool:
        return all(s.total == 0 for s in self.series)


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def nice_step(raw: float) -> int:
    """The smallest integer 1/2/5 x 10^k step at or above ``raw`` (at least 1)."""
    if not math.isfinite(raw) or raw <= 1:
        return 1
    exponent = math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        step = mult * 10**exponent
        if step >= raw:
            return int(step)
    return int(10 ** (exponent + 1))  # pragma: no cover - the loop always returns


def nice_ticks(max_value: float, count: int = 4) -> list[int]:
    """Integer ticks from 0, a round step apart, the last at or just above ``max_value``."""
    if not math.isfinite(max_value) or max_value <= 0:
        return [0, 1]
    step = nice_step(max_value / count)
    top = max(math.ceil(max_value / step), 1) * step
    return list(range(0, top + 1, step))


def _split_partial(coords: list[str], partial_last: bool) -> tuple[str, tuple[float, float] | None]:
    if not partial_last or len(coords) < 2:
        return " ".join(coords), None
    x, y = coords[-1].split(",")
    return " ".join(coords[:-1]), (float(x), float(y))


def sparkline(
    values: Sequence[int], width: int = 120, height: int = 28, *, partial_last: bool = True
) -> Sparkline:
    """A small daily chart: oldest day on the left, a 0 baseline at the bottom."""
    n = len(values)
    peak = max(values, default=0)
    total = int(sum(values))
    pad = 2.0
    usable_h = height - 2 * pad
    if n == 0:
        return Sparkline(width, height, "", "", 0, 0, 0, "no data")
    step = (width - 2 * pad) / max(n - 1, 1)
    coords = []
    for i, value in enumerate(values):
        x = pad + i * step
        y = height - pad - (value / peak * usable_h if peak else 0.0)
        coords.append(f"{_fmt(x)},{_fmt(y)}")
    points, last = _split_partial(coords, partial_last)
    baseline = _fmt(height - pad)
    end_x = _fmt(pad + (n - (2 if last else 1)) * step)
    area = f"{_fmt(pad)},{baseline} {points} {end_x},{baseline}"
    label = f"{total} signals in {n} days, peak {peak} a day"
    if last:
        label += f", {values[-1]} today so far"
    return Sparkline(width, height, points, area, total, peak, n, label, last)


def line_chart(
    title: str,
    days: Sequence[date],
    series: Mapping[str, Sequence[int]],
    *,
    colors: Mapping[str, str] | None = None,
    dashed: Sequence[str] = (),
    width: int = 360,
    height: int = 180,
    y_label: str = "signals / day",
    x_ticks: int = 4,
    partial_last: bool = True,
) -> LineChart:
    """Daily lines sharing one y axis; the x axis is ``days`` (one point a day).

    With ``partial_last`` the last day is today, still filling up: drawn as a dot.
    """
    left, right, top, bottom = 40.0, width - 10.0, 22.0, height - 24.0
    peak = max((max(v, default=0) for v in series.values()), default=0)
    ticks = nice_ticks(peak)
    y_top = ticks[-1] or 1
    n = len(days)
    step = (right - left) / max(n - 1, 1)

    def y_of(value: float) -> float:
        return bottom - (value / y_top) * (bottom - top)

    drawn = []
    for name, values in series.items():
        coords = [f"{_fmt(left + i * step)},{_fmt(y_of(v))}" for i, v in enumerate(values)]
        points, last = _split_partial(coords, partial_last)
        drawn.append(
            Series(
                name=name,
                color=(colors or {}).get(name, ENGAGE_COLOR),
                points=points,
                total=int(sum(values)),
                dashed=name in dashed,
                last=last,
                last_value=int(values[-1]) if len(values) else 0,
            )
        )
    y = tuple(Tick(_round(y_of(t)), str(t)) for t in ticks)
    x: list[Tick] = []
    if n:
        idx = sorted({round(i * (n - 1) / max(x_ticks, 1)) for i in range(x_ticks + 1)})
        x = [Tick(_round(left + i * step), days[i].strftime("%b %-d")) for i in idx]
    totals = ", ".join(f"{s.name} {s.total}" for s in drawn)
    span = f"{days[0].isoformat()} to {days[-1].isoformat()}" if n else "no days"
    label = f"{title}: daily {y_label} from {span}; totals {totals}"
    return LineChart(
        title, width, height, left, top, right, bottom, tuple(drawn), y, tuple(x), y_label, label
    )


def _round(value: float) -> float:
    return round(value, 1)
