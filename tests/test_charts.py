"""Chart geometry and dashboard formatting: pure functions, plain and property-based tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard.web import charts, formatting
from loops.calibrations import split_key


def test_nice_max_and_ticks() -> None:
    assert charts.nice_step(0.3) == 1
    assert charts.nice_step(7) == 10
    assert charts.nice_step(11) == 20
    assert charts.nice_step(42.5) == 50
    assert charts.nice_ticks(0) == [0, 1]
    assert charts.nice_ticks(3) == [0, 1, 2, 3]
    assert charts.nice_ticks(9) == [0, 5, 10]
    assert charts.nice_ticks(29) == [0, 10, 20, 30]
    assert charts.nice_ticks(170) == [0, 50, 100, 150, 200]


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_ticks_cover_the_value_and_rise(value: float) -> None:
    ticks = charts.nice_ticks(value)
    assert ticks[0] == 0 and ticks[-1] >= value
    assert ticks == sorted(set(ticks))
    assert 2 <= len(ticks) <= 6
    assert ticks[-1] <= max(value * 2.5, 1) + 1


def test_sparkline_geometry() -> None:
    line = charts.sparkline([0, 5, 10], width=100, height=20, partial_last=False)
    assert line.total == 15 and line.peak == 10 and line.days == 3
    points = [tuple(map(float, p.split(","))) for p in line.points.split()]
    assert points[0] == (2.0, 18.0)  # zero sits on the baseline
    assert points[-1] == (98.0, 2.0)  # the peak touches the top
    assert line.label == "15 signals in 3 days, peak 10 a day"
    assert line.last is None


def test_today_is_a_dot_not_the_end_of_the_line() -> None:
    line = charts.sparkline([4, 4, 1], width=100, height=20)
    assert len(line.points.split()) == 2
    assert line.last == (98.0, 14.0)
    assert line.label.endswith("1 today so far")
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(3)]
    chart = charts.line_chart("x", days, {"ENGAGE": [4, 4, 1]})
    (series,) = chart.series
    assert len(series.points.split()) == 2 and series.last is not None
    assert series.last_value == 1 and series.total == 9


def test_sparkline_of_nothing_is_flat_and_empty() -> None:
    assert charts.sparkline([0, 0, 0]).empty
    assert charts.sparkline([]).points == ""


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=120))
def test_sparkline_points_stay_inside_the_box(values: list[int]) -> None:
    line = charts.sparkline(values, width=120, height=28)
    for point in line.points.split():
        x, y = map(float, point.split(","))
        assert 0 <= x <= 120 and 0 <= y <= 28


def test_line_chart_axes_and_labels() -> None:
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(30)]
    chart = charts.line_chart(
        "mention", days, {"ENGAGE": [i for i in range(30)], "DELIVER": [0] * 30}, dashed=["DELIVER"]
    )
    assert [t.label for t in chart.y_ticks] == ["0", "10", "20", "30"]
    assert chart.x_ticks[0].label == "Nov 1" and chart.x_ticks[-1].label == "Nov 30"
    assert chart.y_label == "signals / day"
    engage, deliver = chart.series
    assert engage.total == 435 and not engage.dashed and deliver.dashed
    assert "ENGAGE 435" in chart.label and "2026-11-01 to 2026-11-30" in chart.label
    assert not chart.empty


def test_formatting_values_and_changes() -> None:
    assert split_key("engagement-rate:mention") == ("rate", "mention")
    assert split_key("engagement-ratio:a.b") == ("ratio", "a.b")
    assert split_key("custom") == ("other", "custom")
    assert formatting.format_value("rate", 2.13333) == "2.13/day"
    assert formatting.format_value("ratio", 0.6412) == "64.1%"
    assert formatting.format_value("rate", None) == "—"
    assert formatting.change_pct(2.13, 1.8) is not None
    assert formatting.format_change(formatting.change_pct(2.13, 1.8)) == "+18%"
    assert formatting.format_change(formatting.change_pct(1.0, 1.05)) == "-4.8%"
    assert formatting.change_pct(1.0, 0.0) is None and formatting.format_change(None) == ""


def test_ago_and_durations() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert formatting.ago(now - timedelta(seconds=10), now) == "just now"
    assert formatting.ago(now - timedelta(minutes=5), now) == "5 minutes ago"
    assert formatting.ago(now - timedelta(hours=1), now) == "1 hour ago"
    assert formatting.ago(now - timedelta(days=3), now) == "3 days ago"
    assert formatting.ago(now - timedelta(days=8), now) == "8 days ago"
    assert formatting.ago(now - timedelta(days=21), now) == "3 weeks ago"
    assert formatting.ago(now + timedelta(days=3), now) == "in 3 days"
    assert formatting.ago(None, now) == "never"
    assert formatting.duration(now, now + timedelta(milliseconds=183)) == "183 ms"
    assert formatting.duration(now, now + timedelta(seconds=4.2)) == "4.2 s"
    assert formatting.duration(now, now + timedelta(seconds=185)) == "3 min 5 s"
    assert formatting.duration(now, None) == ""
    assert formatting.weekday_text(datetime(2026, 11, 30, 5, 30, tzinfo=UTC)) == (
        "Mon 30 Nov, 05:30 UTC"
    )
    assert (
        formatting.state_label("failed") == "failed" and formatting.state_label(None) == "never run"
    )


@pytest.mark.parametrize(
    ("cron", "text"),
    [
        ("30 5 * * 1", "every Monday at 05:30 UTC"),
        ("0 6 * * *", "every day at 06:00 UTC"),
        ("15 7 * * 1,3,5", "every Monday, Wednesday and Friday at 07:15 UTC"),
        ("0 6 * * sun,7,6", "every Sunday and Saturday at 06:00 UTC"),
        ("0 9 * * FRI", "every Friday at 09:00 UTC"),
        ("*/5 * * * *", "on the cron schedule */5 * * * * (UTC)"),
        ("0 6 1 * *", "on the cron schedule 0 6 1 * * (UTC)"),
        ("0 25 * * 1", "on the cron schedule 0 25 * * 1 (UTC)"),
    ],
)
def test_cron_text_says_the_schedule_in_words(cron: str, text: str) -> None:
    assert formatting.cron_text(cron) == text
