"""Server-side SVG chart geometry: pure functions from numbers to coordinates and labels."""

# Templates draw the SVG from these values (Jinja escapes every label), so charts need
# no JavaScript and no inline style, and read without hovering: axes, ticks and units.
# Hovering a day (or a run) shows its exact values in a readout drawn here and revealed
# by CSS; keyboard and screen-reader users get the same numbers as a table beside it.

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from markupsafe import Markup, escape

from dashboard.web.formatting import plural

# Series colours (SVG presentation attributes, allowed by a strict CSP). Every line is at
# least 3:1 against the white chart (WCAG's non-text contrast): ENGAGE 5.2:1, DELIVER
# (dashed) 4.8:1, the rate's line 7.1:1.
ENGAGE_COLOR = "#2563eb"
DELIVER_COLOR = "#64748b"
RATE_COLOR = "#0f766e"
# The hover readout: SVG text is drawn without measuring it, so its box is sized from
# an average glyph width at the readout's font size (and the text is fitted to it).
READOUT_FONT = 10.0
GLYPH_WIDTH = 5.6


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
class Dot:
    x: float
    y: float
    color: str


@dataclass(frozen=True)
class HoverPoint:
    """One day (or run) of a chart: a hit column, its markers and its readout text."""

    x: float
    hit_x: float
    hit_width: float
    dots: tuple[Dot, ...]
    text: str
    tip_x: float
    tip_width: float
    # The readout's lines (the day or run on the first), each with its fitted width.
    lines: tuple[tuple[str, float], ...] = ()

    @property
    def tip_height(self) -> float:
        return 5 + 12 * len(self.lines)


@dataclass(frozen=True)
class Marker:
    """A tune run on a time axis."""

    x: float
    label: str
    state: str


class _HoverChart:
    """What every chart with a hover layer derives from its frame and points."""

    top: float
    bottom: float
    points: tuple[HoverPoint, ...]
    shared_scale: bool

    @property
    def scale_note(self) -> str:
        return scale_note(self.shared_scale)

    @property
    def tip_y(self) -> float:
        return self.top - 20

    @property
    def hover(self) -> Markup:
        return hover_svg(self.points, self.top, self.bottom, self.tip_y)


@dataclass(frozen=True)
class LineChart(_HoverChart):
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
    points: tuple[HoverPoint, ...] = ()
    markers: tuple[Marker, ...] = ()
    shared_scale: bool = False
    # The numbers drawn: (day, one value per series), for the chart's table view.
    table: tuple[tuple[date, tuple[int, ...]], ...] = ()

    @property
    def empty(self) -> bool:
        return all(s.total == 0 for s in self.series)

    @property
    def table_rows(self) -> Markup:
        """The table view's rows, newest day first, as one string (like the hover layer:
        a page holds some hundreds of them)."""
        rows = []
        for day, values in reversed(self.table):
            cells = "".join(f'<td class="num">{v:,}</td>' for v in values)
            rows.append(
                f'<tr><th scope="row"><time datetime="{day.isoformat()}">{day_text(day)}</time>'
                f"</th>{cells}</tr>"
            )
        return Markup("".join(rows))


def hover_svg(points: Sequence[HoverPoint], top: float, bottom: float, tip_y: float) -> Markup:
    """The hover layer of a chart as one SVG string (every text escaped).

    A page draws hundreds of these small groups; written one template expression at a
    time they cost more than the rest of the page, so they are built here in one go.
    On hover, CSS shows a group's column, markers and readout (see app.css).
    """
    # A point's numbers are rounded to 0.1 when it is made, so ":g" prints them as _fmt
    # would (no trailing ".0"), without a call per number.
    y_top, y_bottom, height, tip_top = _fmt(top), _fmt(bottom), _fmt(bottom - top), _fmt(tip_y)
    baselines = [_fmt(tip_y + 12 + 12 * i) for i in range(2)]
    out = []
    for p in points:
        x = f"{p.x:g}"
        parts = [
            f'<g class="pt"><rect class="pt-hit" x="{p.hit_x:g}" y="{y_top}" '
            f'width="{p.hit_width:g}" height="{height}"/>'
            f'<line class="pt-guide" x1="{x}" y1="{y_top}" x2="{x}" y2="{y_bottom}"/>'
        ]
        for d in p.dots:
            parts.append(f'<circle class="pt-dot" cx="{x}" cy="{d.y:g}" r="3.5" fill="{d.color}"/>')
        parts.append(
            f'<g class="pt-tip"><rect x="{p.tip_x:g}" y="{tip_top}" width="{p.tip_width:g}" '
            f'height="{p.tip_height:g}" rx="3"/>'
        )
        text_x = f"{p.tip_x + 5:g}"
        head = ' class="pt-tip-head"' if len(p.lines) > 1 else ""
        for i, (line, width) in enumerate(p.lines):
            y = baselines[i] if i < 2 else _fmt(tip_y + 12 + 12 * i)
            parts.append(
                f'<text x="{text_x}" y="{y}" textLength="{width}"{head if i == 0 else ""}>'
                f"{escape(line)}</text>"
            )
        parts.append("</g></g>")
        out.append("".join(parts))
    return Markup("".join(out))


def scale_note(shared: bool) -> str:
    """What the y axis says about comparing charts side by side."""
    return "same scale as the other charts" if shared else "own scale"


def _fmt(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


@functools.lru_cache(maxsize=1024)
def day_text(day: date) -> str:
    """ "Fri 6 Nov": a day as the charts' readouts and tables name it (the same few days
    recur on every chart of a page, so each is formatted once)."""
    return day.strftime("%a %-d %b")


def hover_point(
    x: float,
    hit_x: float,
    hit_width: float,
    dots: Sequence[Dot],
    text: str,
    left: float,
    right: float,
) -> HoverPoint:
    """A readout box centred on ``x`` and kept inside [left, right]: the day or run on its
    first line, the values on the second (``text`` reads "when · values")."""
    head, _sep, rest = text.partition(" · ")
    return _hover(x, hit_x, hit_width, tuple(dots), head, rest, left, right)


def _hover(
    x: float,
    hit_x: float,
    hit_width: float,
    dots: tuple[Dot, ...],
    head: str,
    rest: str,
    left: float,
    right: float,
) -> HoverPoint:
    head_width = round(len(head) * GLYPH_WIDTH, 1)
    lines: tuple[tuple[str, float], ...] = ((head, head_width),)
    tip_width = head_width + 10
    if rest:
        rest_width = round(len(rest) * GLYPH_WIDTH, 1)
        lines += ((rest, rest_width),)
        tip_width = max(head_width, rest_width) + 10
    tip_x = min(max(x - tip_width / 2, left), max(right - tip_width, left))
    return HoverPoint(
        round(x, 1),
        round(hit_x, 1),
        round(hit_width, 1),
        dots,
        f"{head} · {rest}" if rest else head,
        round(tip_x, 1),
        round(tip_width, 1),
        lines,
    )


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
    label = f"{plural(total, 'signal')} in {plural(n, 'day')}, peak {peak:,} a day"
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
    y_max: float | None = None,
    runs: Sequence[tuple[date, str, str]] = (),
) -> LineChart:
    """Daily lines sharing one y axis; the x axis is ``days`` (one point a day).

    With ``partial_last`` the last day is today, still filling up: drawn as a dot.
    ``y_max`` puts several charts on one scale (each chart's own peak otherwise);
    ``runs`` (day, label, state) are marked on the time axis.
    """
    left, right, top, bottom = 40.0, width - 10.0, 30.0, height - 24.0
    peak = max((max(v, default=0) for v in series.values()), default=0)
    ticks = nice_ticks(max(peak, y_max or 0))
    y_top = ticks[-1] or 1
    n = len(days)
    step = (right - left) / max(n - 1, 1)

    def y_of(value: float) -> float:
        return bottom - (value / y_top) * (bottom - top)

    # Each day's x and each value's y once: the lines, the dots and the hover layer
    # share them (a page draws several charts of 30 to 90 days each).
    xs = [left + i * step for i in range(n)]
    x_text = [_fmt(x) for x in xs]
    ys = {name: [y_of(v) for v in values] for name, values in series.items()}
    drawn = []
    for name, values in series.items():
        coords = [f"{xt},{_fmt(y)}" for xt, y in zip(x_text, ys[name], strict=False)]
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
        x = [Tick(_round(xs[i]), days[i].strftime("%b %-d")) for i in idx]
    totals = ", ".join(f"{s.name} {s.total}" for s in drawn)
    span = f"{days[0].isoformat()} to {days[-1].isoformat()}" if n else "no days"
    label = f"{title}: daily {y_label} from {span}; totals {totals}"
    hover = _daily_hover(days, xs, step, drawn, series, ys, left - 30, right + 8, partial_last)
    counts = [[int(v) for v in series[s.name]] for s in drawn]
    by_day = zip(*counts, strict=False) if counts else itertools.repeat(())
    table = tuple(zip(days, by_day, strict=False))
    index = {d: i for i, d in enumerate(days)}
    markers = tuple(
        Marker(_round(xs[index[d]]), text, state) for d, text, state in runs if d in index
    )
    return LineChart(
        title,
        width,
        height,
        left,
        top,
        right,
        bottom,
        tuple(drawn),
        y,
        tuple(x),
        y_label,
        label,
        hover,
        markers,
        y_max is not None,
        table,
    )


def _daily_hover(
    days: Sequence[date],
    xs: Sequence[float],
    step: float,
    drawn: Sequence[Series],
    series: Mapping[str, Sequence[int]],
    ys: Mapping[str, Sequence[float]],
    left: float,
    right: float,
    partial_last: bool,
) -> tuple[HoverPoint, ...]:
    """hover_point for every day of a daily chart, written out: with several charts of up
    to 90 days on a page, a call or two less per day is most of their cost."""
    n = len(days)
    hit_width = round(step, 1)
    columns = [(s.name, series[s.name], [round(y, 1) for y in ys[s.name]], s.color) for s in drawn]
    out = []
    for i, day in enumerate(days):
        cx = xs[i]
        x = round(cx, 1)
        head = day_text(day)
        if partial_last and i == n - 1 and n > 1:
            head += " (so far)"
        readout = " · ".join([f"{name} {values[i]:,}" for name, values, _ys, _c in columns])
        head_width = round(len(head) * GLYPH_WIDTH, 1)
        readout_width = round(len(readout) * GLYPH_WIDTH, 1)
        tip_width = max(head_width, readout_width) + 10
        tip_x = min(max(cx - tip_width / 2, left), max(right - tip_width, left))
        out.append(
            HoverPoint(
                x,
                round(cx - step / 2, 1),
                hit_width,
                tuple([Dot(x, ys_[i], color) for _n, _v, ys_, color in columns]),
                f"{head} · {readout}",
                round(tip_x, 1),
                round(tip_width, 1),
                ((head, head_width), (readout, readout_width)),
            )
        )
    return tuple(out)


def _round(value: float) -> float:
    return round(value, 1)


# --- history: one point per run over weeks ------------------------------------------


def _tick_text(value: float, step: float, percent: bool) -> str:
    """A tick label with as many decimals as the step needs (72.5%, not a rounded 72%)."""
    scaled_step = step * 100 if percent else step
    digits = next(
        (d for d in range(4) if abs(round(scaled_step * 10**d) - scaled_step * 10**d) < 1e-6), 3
    )
    scaled = value * 100 if percent else value
    return f"{scaled:,.{digits}f}" + ("%" if percent else "")


@dataclass(frozen=True)
class TrendPoint:
    """One run's value of a calibration, its 95% interval (if any) and its change."""

    at: datetime
    value: float
    low: float | None = None
    high: float | None = None
    change: str | None = None  # "up" | "down" | "within noise" | None
    text: str = ""  # the readout


@dataclass(frozen=True)
class TrendDot:
    x: float
    y: float
    change: str | None


@dataclass(frozen=True)
class TrendChart(_HoverChart):
    """A calibration over the last weeks: a line through each run, its interval a band."""

    title: str
    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    line: str
    bands: tuple[str, ...]  # polygons over runs that have an interval
    whiskers: tuple[tuple[float, float, float], ...]  # (x, y_low, y_high) of lone points
    dots: tuple[TrendDot, ...]
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    y_label: str
    label: str
    color: str
    points: tuple[HoverPoint, ...]
    shared_scale: bool = False

    @property
    def empty(self) -> bool:
        return not self.dots


def trend_extent(points: Sequence[TrendPoint]) -> tuple[float, float] | None:
    """The lowest and highest values a trend chart must show (its band included)."""
    if not points:
        return None
    low = min(min(p.value, p.low if p.low is not None else p.value) for p in points)
    high = max(max(p.value, p.high if p.high is not None else p.value) for p in points)
    return low, high


def nice_range(low: float, high: float, *, percent: bool, count: int = 4) -> list[float]:
    """Ticks a round step apart covering [low, high]: the axis fits the data, starts at 0
    when the data comes near it, and a ratio stays in [0, 1]. It spans at least 10 points
    of a ratio (20% of a rate), so a flat line stays flat instead of a magnified wobble."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    low, high = min(low, high), max(low, high)
    min_span = 0.1 if percent else max(abs(high) * 0.2, 0.1)
    if high - low < min_span:
        centre = (low + high) / 2
        low, high = centre - min_span / 2, centre + min_span / 2
        if percent and high > 1.0:
            low, high = 1.0 - min_span, 1.0
        if low < 0:
            low, high = 0.0, min_span
    if low >= 0 and low < (high - low) / 2:
        low = 0.0  # close to zero anyway: show the zero
    low = max(low, 0.0)
    if percent:
        high = min(high, 1.0)
    raw = (high - low) / count
    exponent = math.floor(math.log10(raw))
    step = 10.0 ** (exponent + 1)
    for mult in (1, 2, 2.5, 5, 10):
        if mult * 10.0**exponent >= raw * (1 - 1e-9):
            step = mult * 10.0**exponent
            break
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    ticks = [round(i * step, 10) for i in range(first, max(last, first + 1) + 1)]
    if percent:
        ticks = [t for t in ticks if t <= 1.0] or [1.0]
        if len(ticks) < 2:
            ticks = [round(1.0 - step, 10), 1.0]
    return ticks


def trend_chart(
    title: str,
    points: Sequence[TrendPoint],
    start: datetime,
    end: datetime,
    *,
    percent: bool,
    y_label: str,
    color: str = ENGAGE_COLOR,
    y_range: tuple[float, float] | None = None,
    width: int = 360,
    height: int = 170,
    x_ticks: int = 4,
) -> TrendChart:
    """Runs placed by time on [start, end]; the y axis fits the values and their bands
    (``y_range`` instead puts several charts on one scale)."""
    left, right, top, bottom = 44.0, width - 12.0, 30.0, height - 24.0
    extent = y_range or trend_extent(points) or (0.0, 1.0)
    ticks = nice_range(*extent, percent=percent)
    y_low, y_high = ticks[0], ticks[-1]
    y_span = (y_high - y_low) or 1.0
    span = max((end - start).total_seconds(), 1.0)

    def x_of(at: datetime) -> float:
        return left + (at - start).total_seconds() / span * (right - left)

    def y_of(value: float) -> float:
        return bottom - (min(max(value, y_low), y_high) - y_low) / y_span * (bottom - top)

    xs = [x_of(p.at) for p in points]
    ys = [y_of(p.value) for p in points]
    xr, yr = [round(x, 1) for x in xs], [round(y, 1) for y in ys]
    line = " ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in zip(xr, yr, strict=True))
    # Bands over consecutive runs with an interval; a lone one is a whisker.
    bands: list[str] = []
    whiskers: list[tuple[float, float, float]] = []
    run: list[int] = []
    for i, p in enumerate([*points, None]):
        if p is not None and p.low is not None and p.high is not None:
            run.append(i)
            continue
        if len(run) >= 2:
            upper = [f"{_fmt(xs[j])},{_fmt(y_of(points[j].high or 0.0))}" for j in run]
            lower = [f"{_fmt(xs[j])},{_fmt(y_of(points[j].low or 0.0))}" for j in reversed(run)]
            bands.append(" ".join(upper + lower))
        elif len(run) == 1:
            j = run[0]
            whiskers.append(
                (
                    _round(xs[j]),
                    _round(y_of(points[j].low or 0.0)),
                    _round(y_of(points[j].high or 0.0)),
                )
            )
        run = []
    dots = tuple(TrendDot(x, y, p.change) for x, y, p in zip(xr, yr, points, strict=True))
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    y = tuple(Tick(_round(y_of(t)), _tick_text(t, step, percent)) for t in ticks)
    x = []
    for i in range(x_ticks + 1):
        at = start + (end - start) * (i / max(x_ticks, 1))
        x.append(Tick(_round(x_of(at)), at.strftime("%b %-d")))
    # Hit columns reach halfway to the neighbouring runs.
    hover = []
    for i, (cx, p) in enumerate(zip(xs, points, strict=True)):
        lo = (xs[i - 1] + cx) / 2 if i > 0 else max(cx - 12, left - 4)
        hi = (xs[i + 1] + cx) / 2 if i + 1 < len(xs) else min(cx + 12, right + 4)
        dot = Dot(xr[i], yr[i], color)
        head, _sep, rest = p.text.partition(" · ")
        hover.append(_hover(cx, lo, max(hi - lo, 2.0), (dot,), head, rest, left - 34, right + 10))
    first, last = start.date().isoformat(), end.date().isoformat()
    label = f"{title}: {y_label} at each run from {first} to {last}, {len(points)} runs"
    if points:
        label += f"; latest {points[-1].text}"
    return TrendChart(
        title,
        width,
        height,
        left,
        top,
        right,
        bottom,
        line,
        tuple(bands),
        tuple(whiskers),
        dots,
        y,
        tuple(x),
        y_label,
        label,
        color,
        tuple(hover),
        y_range is not None,
    )


def time_domain(
    times: Sequence[datetime], start: datetime, end: datetime
) -> tuple[datetime, datetime]:
    """The x axis: the chosen range, narrowed to the runs when they cover less of it (with
    half a week of room before the first), so a short history is not a speck at the end."""
    if not times:
        return start, end
    first = min(times) - timedelta(days=3.5)
    return max(start, min(first, end - timedelta(days=7))), end


def merge_extents(extents: Sequence[tuple[float, float] | None]) -> tuple[float, float] | None:
    """One y range for several charts (a shared scale)."""
    known = [e for e in extents if e is not None]
    if not known:
        return None
    return min(e[0] for e in known), max(e[1] for e in known)
