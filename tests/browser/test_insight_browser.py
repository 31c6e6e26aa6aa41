"""Insight in real Chromium: a feature across tenants, a tenant's history, exact values on
hover and from the keyboard, a run's page; nothing leaves localhost, no console errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ADMIN, VIEWER, Session
from tests.support.browser import arrive

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RUN_TIMEOUT_MS = 45_000
NAVIGATIONS = "() => performance.getEntriesByType('navigation').length"


def _no_sideways_scroll(page: Any) -> None:
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow} px"


def _visible(locator: Any) -> bool:
    return bool(locator.evaluate("e => getComputedStyle(e).visibility === 'visible'"))


def test_viewer_compares_a_feature_across_tenants(open_session: Callable[..., Session]) -> None:
    s = open_session()
    s.login(*VIEWER)
    page = s.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Features").click()
    arrive(page, re.compile(r"/features$"))
    mention = page.locator("tr[data-feature='mention']")
    # Every demo tenant but the one whose tuning always fails.
    expect(mention).to_contain_text("5 tenants")
    mention.get_by_role("link", name="mention").click()
    arrive(page, re.compile(r"/features/mention$"))

    rows = page.locator("#feature-table tbody tr")
    expect(rows).to_have_count(5)
    # Sorted by ratio, highest first, each with its interval on the shared track.
    ratios = [
        float(t.rstrip("%"))
        for t in page.locator("#feature-table tbody td.num strong").all_inner_texts()
    ]
    assert ratios == sorted(ratios, reverse=True)
    expect(page.locator("#feature-table svg.forest")).to_have_count(5)
    expect(page.locator("#feature-table thead th[aria-sort='descending']")).to_have_count(1)
    pooled = page.locator(".summary .stat-value").first.inner_text()
    assert re.fullmatch(r"\d+\.\d%", pooled)
    # The pooled ratio week by week, one point per week of runs.
    assert page.locator(".feature-trend svg.trend-chart .pt").count() >= 4

    # Search and sort swap the table in place.
    page.evaluate("() => { window.__stay = 1; }")
    page.fill("#q", "glob")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Globex")
    page.fill("#q", "")
    expect(rows).to_have_count(5)
    page.locator("#feature-table thead a", has_text="Tenant").click()
    expect(page.locator("#feature-table thead th[aria-sort='ascending']")).to_contain_text("Tenant")
    names = page.locator("#feature-table tbody th a").all_inner_texts()
    assert names == sorted(names)
    # A search after the sort keeps the order just picked; the export follows the search.
    page.fill("#q", "o")
    expect(page).to_have_url(re.compile(r"/features/mention\?q=o&flag=&sort=name$"))
    expect(page.locator("#feature-table thead th[aria-sort='ascending']")).to_contain_text("Tenant")
    expect(page.locator("#feature-export")).to_have_attribute("href", re.compile(r"\?q=o$"))
    page.fill("#q", "")
    expect(rows).to_have_count(5)
    assert page.evaluate("() => window.__stay") == 1

    # A tenant's name leads to its page.
    rows.first.get_by_role("link").first.click()
    arrive(page, re.compile(r"/tenants/"))
    s.watch.assert_clean()


def test_each_tenant_section_keeps_what_was_picked_in_the_other(
    open_session: Callable[..., Session],
) -> None:
    """The history and the daily charts swap apart; each one's links carry the other's
    choice, so picking in one never undoes what was picked in the other."""
    s = open_session()
    s.login(*VIEWER)
    s.goto("/tenants/acme")
    page = s.page
    page.evaluate("() => { window.__stay = 1; }")
    history = page.get_by_role("group", name="History range")
    charts = page.get_by_role("group", name="Chart range")
    page.get_by_role("group", name="Feature charted").get_by_role(
        "link", name="comment.reply"
    ).click()
    expect(page).to_have_url(re.compile(r"/tenants/acme\?trend=comment\.reply$"))
    charts.get_by_role("link", name="60 days").click()
    expect(page).to_have_url(re.compile(r"/tenants/acme\?trend=comment\.reply&days=60$"))
    expect(charts.get_by_role("link", name="60 days")).to_have_attribute("aria-current", "true")
    history.get_by_role("link", name="52 weeks").click()
    expect(page).to_have_url(re.compile(r"\?trend=comment\.reply&weeks=52&days=60$"))
    expect(page.locator("#trends article[data-feature='comment.reply']")).to_have_count(1)
    expect(history.get_by_role("link", name="52 weeks")).to_have_attribute("aria-current", "true")
    # And the charts' next range keeps both.
    charts.get_by_role("link", name="90 days").click()
    expect(page).to_have_url(re.compile(r"\?trend=comment\.reply&days=90&weeks=52$"))
    assert page.evaluate("() => window.__stay") == 1  # all of it without a page load
    # The URL pushed is the page: reloaded, it shows the same three choices.
    page.reload()
    expect(page.locator("#trends article[data-feature='comment.reply']")).to_have_count(1)
    expect(history.get_by_role("link", name="52 weeks")).to_have_attribute("aria-current", "true")
    expect(charts.get_by_role("link", name="90 days")).to_have_attribute("aria-current", "true")
    s.watch.assert_clean()


def test_history_chart_and_daily_chart_show_exact_values(
    open_session: Callable[..., Session],
) -> None:
    s = open_session()
    s.login(*VIEWER)
    s.goto("/tenants/acme")
    page = s.page
    # One feature's history at a time: the busiest first, the others one link away.
    picker = page.get_by_role("group", name="Feature charted")
    expect(picker.get_by_role("link", name="mention")).to_have_attribute("aria-current", "true")
    expect(page.locator("#trends article.trend")).to_have_count(1)
    page.evaluate("() => { window.__stay = 1; }")
    # From the keyboard: htmx swaps in that feature's section and pushes its URL.
    picker.get_by_role("link", name="comment.reply").focus()
    page.keyboard.press("Enter")
    arrive(page, re.compile(r"/tenants/acme\?trend=comment\.reply$"))
    other = page.locator("#trends article[data-feature='comment.reply']")
    expect(other.locator("svg.trend-chart")).to_have_count(2)
    expect(picker.get_by_role("link", name="comment.reply")).to_have_attribute(
        "aria-current", "true"
    )
    assert page.evaluate("() => window.__stay") == 1  # no page load
    # Back to the first feature, as the browser's history has it.
    page.go_back()
    arrive(page, s.base + "/tenants/acme")
    trend = page.locator("#trends article[data-feature='mention']")
    expect(trend.locator("svg.trend-chart")).to_have_count(2)  # ratio and rate
    expect(trend.locator("polygon.trend-band")).to_have_count(2)
    points = trend.locator("svg.trend-chart").first.locator(".pt")
    assert points.count() == 5  # four past weeks and the seed's own run

    # Hover a run: its exact values appear at once, nothing shown before.
    tip = points.nth(2).locator(".pt-tip")
    assert not _visible(tip)
    points.nth(2).locator(".pt-hit").hover()
    assert _visible(tip)
    text = " ".join(tip.locator("text").all_text_contents())
    assert re.search(r"\d+\.\d% \[\d+\.\d%.\d+\.\d%\] · n=[\d,]+ delivered · within noise", text)

    # The daily chart: hover a day for its ENGAGE and DELIVER counts.
    chart = page.locator("#charts figure[data-feature='mention']")
    day = chart.locator(".pt").nth(10)
    day.locator(".pt-hit").hover()
    readout = " ".join(day.locator(".pt-tip text").all_text_contents())
    match = re.search(r"ENGAGE ([\d,]+) · DELIVER ([\d,]+)", readout)
    assert match and _visible(day.locator(".pt-tip"))
    # Tune runs are marked on the time axis, each named.
    assert chart.locator("path.run-mark").count() >= 4

    # The same numbers without a mouse: Tab to "View as table", Enter opens it.
    summary = chart.locator("summary")
    summary.focus()
    page.keyboard.press("Enter")
    table = chart.locator("details table")
    expect(table).to_be_visible()
    day_label = readout.split(" ", 3)
    cells = table.locator("tbody tr").all_inner_texts()
    wanted = f"{match.group(1)}\t{match.group(2)}"
    assert any(row.startswith(" ".join(day_label[:3])) and row.endswith(wanted) for row in cells)

    # One scale for all: the y axis says so.
    page.get_by_role("link", name="One scale for all").first.click()
    arrive(page, re.compile(r"scale=shared"))
    assert (
        "same scale as the other charts"
        in page.locator("#charts svg.line-chart").first.inner_html()
    )
    s.watch.assert_clean()


def test_run_page_from_a_run_row_and_rq_dashboard_and_back(
    open_session: Callable[..., Session],
) -> None:
    s = open_session()
    s.login(*ADMIN)
    page = s.page
    s.goto("/tenants/initech")
    page.locator(".page-head button", has_text="Run now").click()
    panel = page.locator("#run-status")
    panel.locator("tr[data-state='succeeded']").first.wait_for(timeout=RUN_TIMEOUT_MS)
    # The status row links to the run's page.
    panel.locator("tr[data-state='succeeded'] a[href^='/runs/']").first.click()
    arrive(page, re.compile(r"/runs/\d+$"))
    expect(page.locator("h1")).to_contain_text("Initech Payroll")
    expect(page.locator(".facts")).to_contain_text("manual")
    expect(page.locator(".facts")).to_contain_text("admin@example.com")
    changes = page.locator("table.run-changes tbody tr")
    assert changes.count() >= 10
    # Each value against the one before it, with its significance.
    assert page.locator("table.run-changes .badge-change").count() == changes.count()
    expect(page.locator("table.run-decisions tbody tr").first).to_be_visible()
    rq = page.get_by_role("link", name="open in rq-dashboard")
    expect(rq).to_be_visible()

    # From every row of the runs page too.
    run_url = page.url
    s.goto("/runs")
    page.locator("#runs-table tbody tr a[href^='/runs/']").first.click()
    arrive(page, run_url)

    # Into rq-dashboard's page of the job, and back to the app from its navbar.
    page.get_by_role("link", name="open in rq-dashboard").click()
    arrive(page, re.compile(r"/admin/rq/0/view/job/"))
    page.get_by_role("link", name=re.compile("engagement-loops")).click()
    arrive(page, s.base + "/")
    s.watch.assert_clean()


def test_screenshots_of_the_insight_pages(open_session: Callable[..., Session]) -> None:
    pages = {
        "insight-overview": ("/?days=7", "table.tenants"),
        "insight-tenant": ("/tenants/acme", "#trends svg.trend-chart"),
        "insight-features": ("/features", "table.features"),
        "insight-feature": ("/features/mention", "#feature-table svg.forest"),
    }
    for width, height, suffix in ((1280, 900, "desktop"), (390, 844, "mobile")):
        s = open_session(width, height)
        s.login(*ADMIN if suffix == "desktop" else VIEWER)
        for name, (path, ready) in pages.items():
            s.goto(path)
            s.page.locator(ready).first.wait_for()
            _no_sideways_scroll(s.page)
            s.screenshot(f"{name}-{suffix}")
        s.goto("/runs")
        s.page.locator("#runs-table a[href^='/runs/']").first.click()
        arrive(s.page, re.compile(r"/runs/\d+$"))
        _no_sideways_scroll(s.page)
        s.screenshot(f"insight-run-{suffix}")
        # The no-JavaScript preview is a page of its own, in the layout.
        s.goto("/tenants/acme/preview")
        expect(s.page.locator("h1")).to_contain_text("what a run now would change")
        assert s.page.locator("link[rel=stylesheet]").count() >= 1
        assert s.page.evaluate(NAVIGATIONS) == 1
        s.watch.assert_clean()
