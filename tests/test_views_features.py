"""Insight views: features across tenants, a tenant's history, readable charts, the overview's
period comparison, and the small things (plurals, aria-sort, the styled preview)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from dashboard.web import charts
from loops.database import db
from loops.models import Role
from loops.stats import wilson_interval
from loops.timeutil import utcnow
from tests.support.dashboard import add_calibration, add_daily, add_run, login
from tests.support.insight import add_history


@pytest.fixture
def viewer(client: FlaskClient, make: Any) -> FlaskClient:
    login(client, make.user("viewer@example.com", Role.VIEWER))
    return client


@contextmanager
def count_queries(app: Flask) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def ratio(org: Any, feature: str, engaged: int, n: int, when: datetime, **kw: Any) -> None:
    low, high = wilson_interval(engaged, n)
    add_calibration(
        org,
        f"engagement-ratio:{feature}",
        round(engaged / n, 4),
        when,
        sample_size=n,
        engaged=engaged,
        interval_low=low,
        interval_high=high,
        **kw,
    )


def section(html: str, marker: str) -> str:
    """The table row holding ``marker``."""
    start = html.rindex("<tr", 0, html.index(marker))
    return html[start : html.index("</tr>", start)]


# --- /features ---------------------------------------------------------------------


def test_features_list_tenant_counts_pooled_ratio_and_volume(
    viewer: FlaskClient, make: Any
) -> None:
    now = utcnow()
    a, b = make.org("acme", "Acme"), make.org("globex", "Globex")
    ratio(a, "mention", 30, 100, now)
    ratio(b, "mention", 10, 100, now)
    add_calibration(a, "engagement-rate:mention", 2.0, now, sample_size=60)
    add_calibration(b, "engagement-rate:mention", 1.0, now, sample_size=30)
    add_calibration(a, "engagement-rate:digest", 0.1, now, sample_size=3)

    html = viewer.get("/features").get_data(as_text=True)
    mention = section(html, 'data-feature="mention"')
    assert 'href="/features/mention"' in mention
    assert "20.0%" in mention  # (30 + 10) / (100 + 100)
    assert ">90<" in mention  # 60 + 30 ENGAGE in the latest windows
    assert ">2 tenants<" in mention
    assert html.index('data-feature="mention"') < html.index('data-feature="digest"')
    digest = section(html, 'data-feature="digest"')  # a rate only: no ratio to pool
    assert '<td class="num">1</td>' in digest and '<td class="num strong">—' in digest
    assert "2 features." in html
    # The nav links to it.
    assert 'href="/features" aria-current="page"' in html


def test_features_empty_state_says_the_schedule(viewer: FlaskClient) -> None:
    html = viewer.get("/features").get_data(as_text=True)
    assert "No feature has a calibration yet." in html
    assert "every Monday at 05:30 UTC" in html


# --- /features/<feature> -----------------------------------------------------------


@pytest.fixture
def tenants(make: Any) -> dict[str, Any]:
    """Four tenants on mention: one clearly high, one clearly low, one noisy, one stale."""
    now = utcnow()
    orgs = {
        "high": make.org("high", "High Co"),
        "low": make.org("low", "Low Co"),
        "small": make.org("small", "Small Co"),
        "stale": make.org("stale", "Stale Co"),
    }
    ratio(orgs["high"], "mention", 800, 1000, now, previous_value=0.6)
    ratio(orgs["low"], "mention", 200, 1000, now, previous_value=0.21)
    ratio(orgs["small"], "mention", 3, 6, now, estimate=0.5)
    ratio(orgs["stale"], "mention", 90, 100, now - timedelta(days=90))
    add_calibration(orgs["high"], "engagement-rate:mention", 26.7, now, sample_size=800)
    add_calibration(orgs["low"], "engagement-rate:mention", 6.7, now, sample_size=200)
    return orgs


def test_feature_view_shows_every_tenant_against_the_pooled_ratio(
    viewer: FlaskClient, tenants: dict[str, Any]
) -> None:
    html = viewer.get("/features/mention").get_data(as_text=True)
    # Pooled over fresh tenants only: (800 + 200 + 3) / (1000 + 1000 + 6).
    assert "50.0%" in html and "2,006 delivered across 3 tenants" in html
    assert "1 tenant not measured in the last 30 days is left out" in html
    order = [m for m in re.findall(r'<tr data-slug="([^"]+)"', html)]
    assert order == ["stale", "high", "small", "low"]  # by ratio, highest first
    high, low, small = (section(html, f'data-slug="{s}"') for s in ("high", "low", "small"))
    assert 'data-flag="above"' in high and "badge-flag-above" in high
    assert 'data-flag="below"' in low and "badge-flag-below" in low
    assert 'data-flag=""' in small  # its interval straddles the pooled ratio
    assert "badge-stale" in section(html, 'data-slug="stale"')
    # Interval as text and on the forest track, the pooled ratio as a line on every row.
    assert "77.4%\u201382.4%" in high and 'class="forest-pooled"' in high
    assert "26.70/day" in high
    # Each tenant's change at its last run: 60% → 80% is a significant rise.
    assert "significant rise" in high and "within noise" in low
    assert "first run" in small
    assert '1<span class="visually-hidden"> significant rise<' in html
    assert '0<span class="visually-hidden"> significant drops' in html
    # Counts above and below link to the filter.
    assert 'href="/features/mention?flag=above"' in html
    assert 'href="/tenants/high"' in high


def test_feature_view_sorts_searches_filters_and_pages(
    app: Flask, viewer: FlaskClient, tenants: dict[str, Any], make: Any
) -> None:
    def slugs(url: str, **kw: Any) -> list[str]:
        return re.findall(r'<tr data-slug="([^"]+)"', viewer.get(url, **kw).get_data(as_text=True))

    assert slugs("/features/mention?sort=name") == ["high", "low", "small", "stale"]
    assert slugs("/features/mention?sort=rate")[:2] == ["high", "low"]
    assert slugs("/features/mention?sort=sample")[:2] == ["high", "low"]
    assert slugs("/features/mention?q=lo") == ["low"]
    assert slugs("/features/mention?flag=above") == ["high"]
    assert slugs("/features/mention?flag=below") == ["low"]
    assert slugs("/features/mention?sort=bogus&flag=bogus") == ["stale", "high", "small", "low"]
    html = viewer.get("/features/mention?sort=name").get_data(as_text=True)
    assert 'aria-sort="ascending"' in html and html.count("aria-sort=") == 1
    assert 'aria-sort="descending"' in viewer.get("/features/mention").get_data(as_text=True)
    partial = viewer.get(
        "/features/mention?q=hi", headers={"HX-Request": "true", "HX-Target": "feature-table"}
    ).get_data(as_text=True)
    assert partial.lstrip().startswith('<div id="feature-table">') and "<html" not in partial
    empty = viewer.get("/features/mention?q=zzz").get_data(as_text=True)
    assert "No tenant matches “zzz”" in empty

    now = utcnow()
    for i in range(30):
        ratio(make.org(f"t{i:02d}"), "mention", 50, 100, now)
    first = viewer.get("/features/mention?sort=name").get_data(as_text=True)
    assert "Page 1 of 2 · 34 tenants" in first and 'rel="next"' in first
    second = slugs("/features/mention?sort=name&page=2")
    assert len(second) == 9 and second[-1] == "t29"


def test_a_swapped_feature_table_brings_the_export_and_range_links_along(
    viewer: FlaskClient, tenants: dict[str, Any]
) -> None:
    """A search, a flag or a sort swaps the table alone; the export (which applies the
    search and flag), the history range links and the form's hidden sort come out of band
    in the same response, so they act on what the table now shows."""
    partial = viewer.get(
        "/features/mention?q=hi&flag=above&sort=rate&weeks=52",
        headers={"HX-Request": "true", "HX-Target": "feature-table"},
    ).get_data(as_text=True)
    export = partial[partial.index('<a id="feature-export"') :].split(">", 1)[0]
    assert 'href="/features/mention/tenants.csv?q=hi&amp;flag=above"' in export
    assert 'hx-swap-oob="true"' in export
    weeks = partial[partial.index('<div id="feature-weeks"') :]
    assert weeks.startswith('<div id="feature-weeks" class="range" role="group"')
    assert 'hx-swap-oob="true"' in weeks.split(">", 1)[0]
    assert 'href="/features/mention?q=hi&amp;sort=rate&amp;flag=above#trend-h"' in weeks
    fields = partial[partial.index('<span id="feature-form-state"') :]
    assert fields.startswith('<span id="feature-form-state" hidden hx-swap-oob="true">')
    assert '<input type="hidden" name="sort" value="rate">' in fields
    assert '<input type="hidden" name="weeks" value="52">' in fields
    # The page itself renders the same controls in place.
    page = viewer.get("/features/mention?q=hi").get_data(as_text=True)
    assert (
        '<a id="feature-export" class="btn btn-ghost" href="/features/mention/tenants.csv?q=hi"'
        in page
    )
    assert "hx-swap-oob" not in page


def test_feature_view_query_count_does_not_grow_with_tenants_or_history(
    app: Flask, viewer: FlaskClient, make: Any
) -> None:
    orgs: list[Any] = []

    def queries(n: int) -> int:
        now = utcnow()
        while len(orgs) < n:
            org = make.org()
            orgs.append(org)
            ratio(org, "mention", 10, 40, now)
            add_calibration(org, "engagement-rate:mention", 1.0, now)
            for week in range(1, 6):
                when = now - timedelta(weeks=week)
                add_history(org, "engagement-ratio:mention", 0.25, when, engaged=10, sample_size=40)
        with count_queries(app) as statements:
            assert viewer.get("/features/mention").status_code == 200
        return len(statements)

    assert queries(3) == queries(12) <= 10


def test_tenant_page_query_count_does_not_grow_with_history(
    app: Flask, viewer: FlaskClient, make: Any
) -> None:
    org = make.org("acme")
    now = utcnow()
    add_daily(org, "ENGAGE", "mention", now.date(), 3)
    weeks = 0

    def queries(n: int) -> int:
        nonlocal weeks
        while weeks < n:
            weeks += 1
            when = now - timedelta(weeks=weeks)
            run = add_run(org, "succeeded", when)
            for feature in ("mention", "report.ready"):
                if weeks == 1:
                    add_calibration(org, f"engagement-rate:{feature}", 1.0, when)
                add_history(org, f"engagement-rate:{feature}", 1.0, when, run_id=run.id)
                add_history(
                    org,
                    f"engagement-ratio:{feature}",
                    0.5,
                    when,
                    engaged=20,
                    sample_size=40,
                    run_id=run.id,
                )
        with count_queries(app) as statements:
            assert viewer.get("/tenants/acme?weeks=52").status_code == 200
        return len(statements)

    assert queries(2) == queries(20)


def test_feature_view_pooled_ratio_week_by_week(viewer: FlaskClient, make: Any) -> None:
    now = utcnow()
    a, b = make.org("acme"), make.org("globex")
    ratio(a, "mention", 10, 40, now)
    for week, (ea, eb) in enumerate([(10, 30), (20, 40)]):
        when = now - timedelta(weeks=2 - week)
        add_history(a, "engagement-ratio:mention", ea / 100, when, engaged=ea, sample_size=100)
        add_history(b, "engagement-ratio:mention", eb / 100, when, engaged=eb, sample_size=100)
    html = viewer.get("/features/mention").get_data(as_text=True)
    assert 'class="trend-chart"' in html
    assert "pooled 20.0% · 2 tenants, n=200" in html and "pooled 30.0% · 2 tenants, n=200" in html
    assert 'aria-current="true">26 weeks' in html
    assert viewer.get("/features/mention?weeks=52").status_code == 200


def test_pooled_weeks_are_summed_again_once_a_run_writes_history(
    app: Flask, viewer: FlaskClient, make: Any
) -> None:
    now = utcnow()
    org = make.org("acme")
    ratio(org, "mention", 10, 40, now)
    add_history(
        org, "engagement-ratio:mention", 0.1, now - timedelta(weeks=1), engaged=10, sample_size=100
    )

    def page() -> tuple[str, list[str]]:
        with count_queries(app) as statements:
            html = viewer.get("/features/mention").get_data(as_text=True)
        return html, [s for s in statements if "sum(" in s and "loop_calibration_history" in s]

    first, summed = page()
    assert "pooled 10.0% · 1 tenant, n=100" in first and len(summed) == 1
    # Nothing written since: the weeks are not summed again.
    again, summed = page()
    assert summed == [] and "pooled 10.0% · 1 tenant, n=100" in again
    # A run writes this week's value: the next view shows it.
    add_history(org, "engagement-ratio:mention", 0.5, now, engaged=50, sample_size=100)
    fresh, summed = page()
    assert len(summed) == 1 and "pooled 50.0% · 1 tenant, n=100" in fresh


def test_feature_view_404s_and_csv(viewer: FlaskClient, tenants: dict[str, Any]) -> None:
    assert viewer.get("/features/nope").status_code == 404
    assert viewer.get("/features/NOT%20A%20FEATURE").status_code == 404
    response = viewer.get("/features/mention/tenants.csv?flag=above")
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["tenant"] for r in rows] == ["high"]
    assert rows[0]["vs_pooled"] == "above" and rows[0]["ratio_change"] == "up"
    assert float(rows[0]["interval_low"]) == 0.7741


def test_feature_names_link_to_the_feature_view(viewer: FlaskClient, make: Any) -> None:
    org = make.org("acme")
    now = utcnow()
    add_calibration(org, "engagement-rate:mention", 1.0, now)
    add_daily(org, "ENGAGE", "mention", now.date(), 3)
    add_history(org, "engagement-rate:mention", 1.0, now)
    html = viewer.get("/tenants/acme").get_data(as_text=True)
    calibrations = html[html.index('id="calibrations"') : html.index('id="trends-h"')]
    assert 'href="/features/mention"' in calibrations
    assert html.count('href="/features/mention"') >= 3  # calibrations, history, daily chart


# --- significance on the tenant page and in the CSV -------------------------------


def test_calibrations_say_whether_a_change_is_significant(viewer: FlaskClient, make: Any) -> None:
    org = make.org("acme")
    now = utcnow()
    ratio(org, "mention", 80, 100, now, previous_value=0.6)  # [0.71, 0.87] excludes 0.6
    ratio(org, "report.ready", 40, 100, now, previous_value=0.45)  # inside [0.31, 0.50]
    # 300 in 30 days: 10/day, Poisson interval about [8.9, 11.2]; 12/day before is above it.
    add_calibration(org, "engagement-rate:mention", 10.0, now, sample_size=300, previous_value=12)
    html = viewer.get("/tenants/acme").get_data(as_text=True)
    assert 'data-change="up"' in section(html, 'data-key="engagement-ratio:mention"')
    assert "significant rise" in section(html, 'data-key="engagement-ratio:mention"')
    noisy = section(html, 'data-key="engagement-ratio:report.ready"')
    assert 'data-change="within noise"' in noisy and "within noise" in noisy
    rate = section(html, 'data-key="engagement-rate:mention"')
    assert "significant drop" in rate and "8.93\u201311.20/day" in rate

    rows = {
        r["key"]: r
        for r in csv.DictReader(
            io.StringIO(viewer.get("/tenants/acme/calibrations.csv").get_data(as_text=True))
        )
    }
    assert rows["engagement-ratio:mention"]["change"] == "up"
    assert rows["engagement-ratio:report.ready"]["change"] == "within noise"
    assert rows["engagement-rate:mention"]["change"] == "down"
    assert rows["engagement-ratio:mention"]["interval_low"] == "0.7112"
    assert rows["engagement-ratio:mention"]["engaged"] == "80"


# --- the tenant's history ----------------------------------------------------------


def test_tenant_page_charts_each_features_history_with_its_band(
    viewer: FlaskClient, make: Any
) -> None:
    org = make.org("acme")
    now = utcnow()
    ratio(org, "mention", 80, 100, now)
    for week, engaged in enumerate([50, 52, 80]):
        when = now - timedelta(weeks=2 - week)
        run = add_run(org, "succeeded", when)
        add_history(
            org,
            "engagement-ratio:mention",
            engaged / 100,
            when,
            engaged=engaged,
            sample_size=100,
            run_id=run.id,
        )
        add_history(org, "engagement-rate:mention", 2.0 + week, when, sample_size=60 + 30 * week)
    add_history(
        org, "engagement-ratio:mention", 0.1, now - timedelta(weeks=40), engaged=1, sample_size=10
    )

    html = viewer.get("/tenants/acme").get_data(as_text=True)
    trends = html[html.index('id="trends"') : html.index('id="delivery"')]
    assert trends.count('class="trend-chart"') == 2  # the ratio and the rate
    assert trends.count('class="trend-band"') == 2  # each with its 95% interval
    # Every run's exact values on hover, and the third run's rise marked significant.
    assert "52.0% [42.3%\u201361.5%] · n=100 delivered · within noise" in trends
    assert "80.0% [71.1%\u201386.7%] · n=100 delivered · significant rise" in trends
    assert 'class="trend-dot trend-dot-up"' in trends
    assert "4.00/day [3.35\u20134.78/day] · n=120 signals" in trends
    assert "10.0%" not in trends  # 40 weeks ago: outside the default 26 weeks
    # The same numbers as a table, newest first, each run linked to its page.
    assert "View as table" in trends and "/runs/" in trends
    assert "3 runs" in trends
    long = viewer.get("/tenants/acme?weeks=52").get_data(as_text=True)
    assert "[1.8%\u201340.4%]" in long
    assert 'aria-current="true">26 weeks</a>' in trends and ">52 weeks</a>" in trends
    partial = viewer.get(
        "/tenants/acme/trends?feature=mention&weeks=12", headers={"HX-Request": "true"}
    ).get_data(as_text=True)
    assert 'aria-current="true">12 weeks</a>' in partial
    assert partial.lstrip().startswith('<div id="trends"') and "<html" not in partial
    shared = viewer.get("/tenants/acme?scale=shared").get_data(as_text=True)
    shared_trends = shared[shared.index('id="trends"') : shared.index('id="delivery"')]
    assert "same scale as the other charts" in shared_trends
    assert "own scale" not in shared_trends
    assert "engagement ratio · own scale" in trends


def feature_history(org: Any, features: list[str], weeks: int, now: datetime) -> None:
    """Each feature's current rate (the first the busiest) and ratio, and a run a week of
    both in the history."""
    for i, feature in enumerate(features):
        ratio(org, feature, 10 + i, 40, now)
        add_calibration(org, f"engagement-rate:{feature}", 10.0 - i, now)
    for week in range(weeks):
        when = now - timedelta(weeks=week)
        for i, feature in enumerate(features):
            add_history(
                org,
                f"engagement-ratio:{feature}",
                (10 + i) / 40,
                when,
                engaged=10 + i,
                sample_size=40,
            )
            add_history(org, f"engagement-rate:{feature}", 1.0 + i + week / 10, when)


def trends_of(html: str) -> str:
    return html[html.index('<div id="trends"') : html.index('id="delivery"')]


def test_tenant_page_charts_one_feature_at_a_time_with_a_selector(
    app: Flask, viewer: FlaskClient, make: Any
) -> None:
    org = make.org("acme")
    now = utcnow()
    feature_history(org, ["mention", "billing", "report.ready"], 3, now)

    # The busiest feature by default, the others one link away, busiest first.
    html = trends_of(viewer.get("/tenants/acme").get_data(as_text=True))
    assert html.count('class="trend-chart"') == 2  # mention's ratio and rate only
    assert '<article class="trend" data-feature="mention"' in html
    assert 'data-feature="billing"' not in html
    picker = html[
        html.index('aria-label="Feature charted"') : html.index('aria-label="History range"')
    ]
    assert re.findall(r">([\w.]+)</a>", picker) == ["mention", "billing", "report.ready"]
    assert 'aria-current="true">mention</a>' in picker
    # Without JavaScript a feature is a plain link to the page showing it ...
    assert 'href="/tenants/acme?trend=report.ready#trends-h"' in picker
    # ... which htmx turns into a swap of this section alone, pushing the page's URL.
    assert 'hx-get="/tenants/acme/trends?feature=report.ready"' in picker
    assert 'hx-push-url="/tenants/acme?trend=report.ready"' in picker

    page = trends_of(viewer.get("/tenants/acme?trend=report.ready").get_data(as_text=True))
    assert '<article class="trend" data-feature="report.ready"' in page
    assert page.count('class="trend-chart"') == 2
    assert 'aria-current="true">report.ready</a>' in page
    # The range links keep the feature; the first feature needs no ?trend=.
    assert 'href="/tenants/acme?trend=report.ready&amp;weeks=52#trends-h"' in page
    assert 'href="/tenants/acme?weeks=52#trends-h"' in html
    full = viewer.get("/tenants/acme?trend=report.ready&days=60").get_data(as_text=True)
    charts_part = full[full.index('<div id="charts">') :]
    assert "/tenants/acme?trend=report.ready&amp;days=90" in charts_part

    # The fragment: the section alone for htmx, the page for anyone else.
    fragment = viewer.get(
        "/tenants/acme/trends?feature=billing&weeks=52&scale=shared",
        headers={"HX-Request": "true"},
    )
    body = fragment.get_data(as_text=True)
    assert fragment.status_code == 200 and "<html" not in body
    assert body.lstrip().startswith('<div id="trends"')
    assert '<article class="trend" data-feature="billing"' in body
    assert 'aria-current="true">52 weeks</a>' in body
    assert "same scale as the other charts" in body and "own scale" not in body
    # Its own reload (after a run) asks for the same feature and range.
    assert 'hx-get="/tenants/acme/trends?feature=billing&amp;weeks=52&amp;scale=shared"' in body
    plain = viewer.get("/tenants/acme/trends?feature=mention&weeks=12")
    assert plain.status_code == 302
    assert plain.headers["Location"].endswith("/tenants/acme?trend=mention&weeks=12")
    assert viewer.get("/tenants/acme/trends", headers={"HX-Request": "true"}).status_code == 200


def test_a_swapped_history_or_chart_section_brings_the_others_links_along(
    viewer: FlaskClient, make: Any
) -> None:
    """Each of the tenant page's two htmx sections carries the other's state in its links:
    the daily charts the feature charted and the weeks, the history the days. A swap of one
    brings the other's links (out of band) with the state just picked."""
    org = make.org("acme")
    feature_history(org, ["mention", "billing", "report.ready"], 3, utcnow())

    # Picking a feature in the history: the charts' range links carry it.
    body = viewer.get(
        "/tenants/acme/trends?feature=billing&weeks=52&days=60", headers={"HX-Request": "true"}
    ).get_data(as_text=True)
    charts = body[body.index('<div id="charts-range"') :]
    assert 'hx-swap-oob="true"' in charts.split(">", 1)[0]
    assert 'hx-get="/tenants/acme?trend=billing&amp;days=90&amp;weeks=52"' in charts
    assert (
        'href="/tenants/acme?trend=billing&amp;days=60&amp;weeks=52&amp;scale=shared#charts-h"'
        in charts
    )
    # The first feature is the default: its links need no ?trend=.
    first = viewer.get(
        "/tenants/acme/trends?feature=mention", headers={"HX-Request": "true"}
    ).get_data(as_text=True)
    assert 'hx-get="/tenants/acme?days=90"' in first[first.index('<div id="charts-range"') :]

    # Picking a range of days in the charts: the history's links and its own reload carry it.
    part = viewer.get(
        "/tenants/acme?trend=billing&days=60&weeks=52",
        headers={"HX-Request": "true", "HX-Target": "charts"},
    ).get_data(as_text=True)
    assert part.lstrip().startswith('<div id="charts">')
    nav = part[part.index('<div id="trends-nav"') :]
    assert nav.startswith('<div id="trends-nav" hx-swap-oob="true">')
    assert (
        'hx-get="/tenants/acme/trends?feature=billing&amp;weeks=52&amp;days=60"'
        ' hx-target="#trends" hx-trigger="runs-finished from:body"'
    ) in nav
    picker = nav[
        nav.index('aria-label="Feature charted"') : nav.index('aria-label="History range"')
    ]
    assert 'aria-current="true">billing</a>' in picker
    assert 'hx-push-url="/tenants/acme?trend=report.ready&amp;weeks=52&amp;days=60"' in picker
    assert 'href="/tenants/acme?trend=billing&amp;weeks=12&amp;days=60#trends-h"' in nav
    # The whole page renders both in place, none out of band.
    page = viewer.get("/tenants/acme?trend=billing&days=60").get_data(as_text=True)
    assert page.count('<div id="trends-nav">') == 1 and page.count('<div id="charts-range"') == 1
    assert "hx-swap-oob" not in page


def test_unknown_trend_feature_and_weeks(viewer: FlaskClient, make: Any) -> None:
    org = make.org("acme")
    now = utcnow()
    feature_history(org, ["mention", "report.ready"], 2, now)
    other = make.org("globex")
    feature_history(other, ["digest"], 1, now)
    # A feature this tenant does not have: the fragment is not found ...
    for feature in ("nope", "digest", "<b>x</b>"):
        response = viewer.get(
            f"/tenants/acme/trends?feature={feature}", headers={"HX-Request": "true"}
        )
        assert response.status_code == 404, feature
    assert viewer.get("/tenants/nope/trends?feature=mention").status_code == 404
    # ... and the page says so, showing the first feature instead (escaped).
    html = viewer.get("/tenants/acme?trend=%3Cb%3Ex%3C/b%3E").get_data(as_text=True)
    assert "no calibration of the feature “&lt;b&gt;x&lt;/b&gt;”: showing mention" in html
    assert '<article class="trend" data-feature="mention"' in html
    # Weeks as before: anything but 12, 26 or 52 is 26.
    for raw in ("7", "x", "-1", "99999999999999"):
        body = viewer.get(
            f"/tenants/acme/trends?feature=mention&weeks={raw}", headers={"HX-Request": "true"}
        ).get_data(as_text=True)
        assert 'aria-current="true">26 weeks</a>' in body, raw


def test_tenant_page_does_not_grow_with_features(
    app: Flask, viewer: FlaskClient, make: Any
) -> None:
    now = utcnow()

    def page(slug: str, features: int) -> tuple[int, int, int]:
        org = make.org(slug)
        feature_history(org, [f"f{i:02d}" for i in range(features)], 12, now)
        with count_queries(app) as statements:
            html = viewer.get(f"/tenants/{slug}?weeks=52").get_data(as_text=True)
        trends = trends_of(html)
        return len(statements), trends.count('class="pt"'), trends.count("<tr>")

    few, many = page("few", 2), page("many", 12)
    # The same queries, and one feature's points and table rows, whatever the features.
    assert few == many
    assert few[1] == 2 * 12


def test_tenant_page_without_history_says_when_runs_add_points(
    viewer: FlaskClient, make: Any
) -> None:
    make.org("acme")
    html = viewer.get("/tenants/acme").get_data(as_text=True)
    assert "No tune runs wrote calibrations in the last 26 weeks." in html


def test_history_csv_has_every_run_with_its_change(viewer: FlaskClient, make: Any) -> None:
    org = make.org("acme")
    now = utcnow()
    add_history(
        org, "engagement-ratio:mention", 0.5, now - timedelta(weeks=1), engaged=50, sample_size=100
    )
    add_history(
        org, "engagement-ratio:mention", 0.8, now, engaged=80, sample_size=100, mode="immediate"
    )
    response = viewer.get("/tenants/acme/history.csv")
    assert response.headers["Content-Disposition"].startswith(
        'attachment; filename="acme-history-26w'
    )
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(r["value"], r["change"]) for r in rows] == [("0.5", ""), ("0.8", "up")]
    assert rows[1]["previous_value"] == "0.5" and rows[1]["mode"] == "immediate"


# --- charts you can read exactly ---------------------------------------------------


def contrast(hex_color: str, background: str = "#ffffff") -> float:
    def luminance(color: str) -> float:
        channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    a, b = sorted((luminance(hex_color), luminance(background)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def test_every_chart_line_has_at_least_3_to_1_contrast() -> None:
    for color in (charts.ENGAGE_COLOR, charts.DELIVER_COLOR, charts.RATE_COLOR):
        assert contrast(color) >= 3, color
    assert contrast("#94a3b8") < 3  # the old dashed DELIVER line, for the record


def test_daily_charts_carry_values_runs_scale_and_a_table(viewer: FlaskClient, make: Any) -> None:
    org = make.org("acme")
    now = utcnow()
    today = now.date()
    add_daily(org, "ENGAGE", "mention", today - timedelta(days=2), 1234)
    add_daily(org, "DELIVER", "mention", today - timedelta(days=2), 5678)
    add_daily(org, "ENGAGE", "report.ready", today, 2)
    run = add_run(org, "succeeded", now - timedelta(days=2))

    html = viewer.get("/tenants/acme").get_data(as_text=True)
    charts_html = html[html.index('<div id="charts">') :]
    day = (today - timedelta(days=2)).strftime("%a %-d %b")
    # The exact values of the day under the pointer, and in the chart's table.
    assert f'class="pt-tip-head">{day}</text>' in charts_html
    assert ">ENGAGE 1,234 · DELIVER 5,678</text>" in charts_html
    cells = '<td class="num">1,234</td><td class="num">5,678</td>'
    stamp = (today - timedelta(days=2)).isoformat()
    assert f'<time datetime="{stamp}">{day}</time></th>{cells}' in charts_html
    # The tune run on the time axis, named.
    assert (
        f"run #{run.id} succeeded" in charts_html
        and 'class="run-mark run-mark-succeeded"' in charts_html
    )
    assert 'stroke="#64748b"' in charts_html and '#94a3b8" stroke-width="1.75"' not in charts_html
    assert "signals / day · own scale" in charts_html
    shared = viewer.get("/tenants/acme?scale=shared").get_data(as_text=True)
    assert "signals / day · same scale as the other charts" in shared
    # The small chart follows the big one's scale: its axis reaches the big peak.
    small = shared[shared.index('<figure class="chart" data-feature="report.ready"') :]
    assert ">6000</text>" in small[: small.index("</figure>")]
    own = html[html.index('<figure class="chart" data-feature="report.ready"') :]
    assert ">6000</text>" not in own[: own.index("</figure>")]

    response = viewer.get("/tenants/acme/signals.csv?days=30")
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 60  # two features x 30 days, zeros included
    busy = [r for r in rows if r["ENGAGE"] == "1234"]
    assert busy == [
        {
            "day": (today - timedelta(days=2)).isoformat(),
            "feature": "mention",
            "ENGAGE": "1234",
            "DELIVER": "5678",
        }
    ]
    one = viewer.get("/tenants/acme/signals.csv?feature=report.ready")
    assert 'filename="acme-signals-30d-report.ready-' in one.headers["Content-Disposition"]
    assert one.get_data(as_text=True).count("\r\n") == 31


# --- the overview's period comparison ----------------------------------------------


def test_overview_compares_with_the_period_before_and_switches_range(
    viewer: FlaskClient, make: Any
) -> None:
    today = utcnow().date()
    grow, flat = make.org("grow", "Grow"), make.org("flat", "Flat")
    for d in range(1, 8):
        add_daily(grow, "ENGAGE", "x", today - timedelta(days=d), 200)  # last 7 days
        add_daily(grow, "ENGAGE", "x", today - timedelta(days=d + 7), 100)  # the 7 before
        add_daily(flat, "ENGAGE", "x", today - timedelta(days=d), 10)
        add_daily(flat, "ENGAGE", "x", today - timedelta(days=d + 7), 11)
    add_daily(grow, "ENGAGE", "x", today, 5)  # today, still filling up: not compared

    html = viewer.get("/?days=7").get_data(as_text=True)
    assert "ENGAGE, 7 days" in html
    g, f = section(html, 'data-slug="grow"'), section(html, 'data-slug="flat"')
    assert ">1,205<" in g  # the last 7 days, today included
    assert 'data-change="up"' in g and "+100%" in g and "▲" in g
    assert 'data-change="within noise"' in f and "-9.1%" in f and "▼" not in f
    assert 'aria-current="true">7 days' in html
    # The other ranges, and the default (the tune's lookback) without a parameter.
    thirty = viewer.get("/").get_data(as_text=True)
    assert "ENGAGE, 30 days" in thirty and 'href="/?days=90"' in thirty
    assert viewer.get("/?days=13").status_code == 200  # not offered: the default
    sorted_links = viewer.get("/?days=90").get_data(as_text=True)
    assert 'href="/?sort=volume&amp;days=90"' in sorted_links


def test_overview_sort_headers_use_aria_sort(viewer: FlaskClient, make: Any) -> None:
    make.org("acme")
    html = viewer.get("/").get_data(as_text=True)
    assert 'aria-sort="ascending"' in html and html.count("aria-sort=") == 1
    assert 'aria-current="true" class="sorted"' not in html
    by_volume = viewer.get("/?sort=volume").get_data(as_text=True)
    head = by_volume[by_volume.index("<thead>") : by_volume.index("</thead>")]
    assert re.search(
        r'<th scope="col" class="num" aria-sort="descending"><a [^>]*sort=volume', head
    )


# --- small things --------------------------------------------------------------------


def test_counts_are_pluralised(viewer: FlaskClient, make: Any) -> None:
    org = make.org("acme")
    add_calibration(org, "engagement-rate:mention", 0.1, utcnow(), sample_size=1, distinct_users=1)
    html = viewer.get("/tenants/acme").get_data(as_text=True)
    row = section(html, 'data-key="engagement-rate:mention"')
    assert (
        "1 user<" in row
        and "1 users" not in row
        and '1 <span class="muted small">signal</span>' in row
    )
    overview = viewer.get("/").get_data(as_text=True)
    assert "1 tenant." in overview and "1 tenants" not in overview


def test_rq_dashboard_links_back_to_the_app(client: FlaskClient, make: Any) -> None:
    login(client, make.user("a@example.com", Role.ADMIN))
    html = client.get("/admin/rq/").get_data(as_text=True)
    assert 'class="navbar-brand" href="/"' in html and "engagement-loops" in html


def test_insight_pages_never_read_raw_signals(app: Flask, viewer: FlaskClient, make: Any) -> None:
    org = make.org("acme")
    now = utcnow()
    ratio(org, "mention", 10, 40, now)
    add_history(org, "engagement-ratio:mention", 0.25, now, engaged=10, sample_size=40)
    run = add_run(org, "succeeded", now)
    urls = ("/features", "/features/mention", f"/runs/{run.id}", "/tenants/acme?weeks=52")
    for url in urls:
        with count_queries(app) as statements:
            assert viewer.get(url).status_code == 200
        assert not [s for s in statements if "loop_signals." in s or "FROM loop_signals " in s]
