"""History and hover chart geometry: pure functions, plain and property-based tests."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard.web import charts
from dashboard.web.feature_page import Flag, flag_of, forest_scale, pooled

START = datetime(2026, 6, 1, tzinfo=UTC)


def test_nice_range_fits_the_data_with_round_steps() -> None:
    assert charts.nice_range(0.731, 0.809, percent=True) == [0.7, 0.725, 0.75, 0.775, 0.8, 0.825]
    # Near zero: the zero is shown.
    assert charts.nice_range(0.02, 0.3, percent=True)[0] == 0.0
    # A flat line gets at least ten points of room, never past 100%.
    flat = charts.nice_range(0.99, 0.99, percent=True)
    assert flat[-1] == 1.0 and flat[-1] - flat[0] >= 0.1 - 1e-9
    assert charts.nice_range(12.7, 14.0, percent=False) == [11.0, 12.0, 13.0, 14.0, 15.0]


@given(st.floats(0, 1, allow_nan=False), st.floats(0, 1, allow_nan=False), st.booleans())
def test_nice_range_covers_its_input(a: float, b: float, percent: bool) -> None:
    low, high = min(a, b), max(a, b)
    ticks = charts.nice_range(low, high, percent=percent)
    assert ticks[0] <= low + 1e-9 and ticks[-1] >= high - 1e-9
    assert ticks == sorted(set(ticks)) and 2 <= len(ticks) <= 12
    assert ticks[0] >= 0 and (not percent or ticks[-1] <= 1.0)


def test_tick_labels_carry_the_decimals_their_step_needs() -> None:
    assert charts._tick_text(0.775, 0.025, True) == "77.5%"
    assert charts._tick_text(0.8, 0.1, True) == "80%"
    assert charts._tick_text(12.5, 2.5, False) == "12.5"
    assert charts._tick_text(1500, 500, False) == "1,500"


def points(values: list[tuple[float, float | None, float | None]]) -> list[charts.TrendPoint]:
    return [
        charts.TrendPoint(START + timedelta(weeks=i), v, lo, hi, text=f"w{i} · {v}")
        for i, (v, lo, hi) in enumerate(values)
    ]


def test_trend_chart_bands_whiskers_and_hover() -> None:
    pts = points([(0.5, 0.4, 0.6), (0.55, 0.45, 0.65), (0.52, None, None), (0.6, 0.5, 0.7)])
    chart = charts.trend_chart(
        "mention", pts, START, START + timedelta(weeks=4), percent=True, y_label="ratio"
    )
    # Two runs with intervals make a band; the last one, alone after a gap, a whisker.
    assert len(chart.bands) == 1 and len(chart.bands[0].split()) == 4
    assert len(chart.whiskers) == 1 and chart.whiskers[0][0] == chart.dots[3].x
    assert [d.x for d in chart.dots] == sorted(d.x for d in chart.dots)
    assert chart.left <= chart.dots[0].x and chart.dots[-1].x <= chart.right
    # Each run has a hit column; columns meet halfway between runs.
    cols = chart.points
    assert len(cols) == 4
    for a, b in itertools.pairwise(cols):
        assert a.hit_x + a.hit_width == pytest.approx(b.hit_x, abs=0.2)
    assert cols[0].lines[0][0] == "w0" and cols[0].lines[1][0] == "0.5"
    assert "4 runs" in chart.label and not chart.empty
    assert chart.scale_note == "own scale"


def test_shared_range_and_time_domain() -> None:
    pts = points([(2.0, None, None)])
    own = charts.trend_chart(
        "x", pts, START, START + timedelta(weeks=1), percent=False, y_label="r"
    )
    shared = charts.trend_chart(
        "x",
        pts,
        START,
        START + timedelta(weeks=1),
        percent=False,
        y_label="r",
        y_range=(0.0, 50.0),
    )
    assert float(shared.y_ticks[-1].label) >= 50 and float(own.y_ticks[-1].label) < 50
    assert shared.scale_note == "same scale as the other charts"
    assert charts.merge_extents([(1.0, 2.0), None, (0.5, 1.5)]) == (0.5, 2.0)
    assert charts.merge_extents([None]) is None
    end = START + timedelta(weeks=52)
    # Two runs in a year's range: the axis starts half a week before the first.
    first = end - timedelta(weeks=2)
    assert charts.time_domain([first, end], START, end) == (first - timedelta(days=3.5), end)
    assert charts.time_domain([], START, end) == (START, end)
    assert charts.time_domain([START - timedelta(weeks=1)], START, end)[0] == START


def test_hover_readout_stays_inside_the_chart() -> None:
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(30)]
    chart = charts.line_chart("x", days, {"ENGAGE": [5] * 30, "DELIVER": [9] * 30})
    for p in chart.points:
        assert p.tip_x >= chart.left - 30 - 0.1
        assert p.tip_x + p.tip_width <= chart.right + 8 + 0.1
    assert chart.points[0].lines[1][0] == "ENGAGE 5 · DELIVER 9"
    assert chart.points[-1].lines[0][0].endswith("(so far)")
    assert chart.table[0] == (days[0], (5, 9))


def test_run_marks_land_on_their_day() -> None:
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(10)]
    chart = charts.line_chart(
        "x",
        days,
        {"ENGAGE": [1] * 10},
        runs=[(days[3], "run #4 succeeded", "succeeded"), (date(2026, 10, 1), "old", "failed")],
    )
    (mark,) = chart.markers
    assert mark.x == chart.points[3].x and mark.label == "run #4 succeeded"


def test_pooled_ratio_and_flags() -> None:
    assert pooled([(30, 100), (10, 100)]) == 0.2
    assert pooled([]) is None
    assert flag_of((0.25, 0.3), 0.2) is Flag.ABOVE
    assert flag_of((0.1, 0.19), 0.2) is Flag.BELOW
    # An interval touching the pooled ratio is not wholly above or below it.
    assert flag_of((0.2, 0.3), 0.2) is None and flag_of((0.1, 0.2), 0.2) is None
    assert flag_of(None, 0.2) is None and flag_of((0.1, 0.3), None) is None


def test_forest_scale_fits_the_intervals() -> None:
    scale = forest_scale([0.5, 0.68], [0.94, 0.81])
    assert scale.low <= 0.5 < 0.94 <= scale.high <= 1.0
    assert scale.x(scale.low) == 6 and scale.x(scale.high) == scale.width - 6
    assert scale.x(2.0) == scale.x(1.0)  # clamped to the track
    assert scale.ticks[0] == (6, f"{scale.low * 100:.0f}%")
    assert forest_scale([], []).low == 0.0
