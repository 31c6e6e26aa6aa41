"""The dashboard in real Chromium: viewers read, admins run, statuses update live, nothing leaks."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ADMIN, FAILING_TENANT, VIEWER, Session
from tests.support.browser import arrive

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RUN_TIMEOUT_MS = 45_000

FORGED_POST = """async ([path, token]) => {
  const headers = {"HX-Request": "true"};
  if (token) headers["X-CSRFToken"] = token;
  const r = await fetch(path, {method: "POST", headers, credentials: "same-origin"});
  return r.status;
}"""

CSRF_FROM_BODY = "() => JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken']"


def _shoot_pages(session: Session, suffix: str) -> None:
    session.goto("/")
    session.page.wait_for_selector("table.tenants")
    session.screenshot(f"overview-{suffix}")
    session.goto("/tenants/acme")
    session.page.wait_for_selector("svg.line-chart")
    session.screenshot(f"tenant-{suffix}")
    session.screenshot(f"tenant-{suffix}-first-screen", full_page=False)
    session.goto("/runs")
    session.page.wait_for_selector("#runs-table")
    session.screenshot(f"runs-{suffix}")


def test_viewer_reads_tenants_calibrations_and_charts(
    open_session: Callable[..., Session],
) -> None:
    s = open_session()
    s.login(*VIEWER)
    page = s.page
    rows = page.locator("table.tenants tbody tr")
    assert rows.count() == 6
    assert page.locator("table.tenants svg.spark").count() == 6
    # Viewers see no Run buttons anywhere.
    assert page.locator("button", has_text=re.compile(r"^Run")).count() == 0

    page.click("text=Acme Analytics")
    arrive(page, re.compile(r"/tenants/acme$"))
    cal_rows = page.locator("#calibrations tbody tr")
    assert cal_rows.count() >= 6
    assert page.locator("#calibrations").get_by_text(re.compile(r"/day$")).first.is_visible()
    assert page.locator("#calibrations").get_by_text(re.compile(r"%$")).first.is_visible()
    charts = page.locator("#charts svg.line-chart")
    assert charts.count() >= 6
    assert charts.first.is_visible()
    assert page.locator("#charts figcaption").first.inner_text().strip() != ""
    assert page.locator("button", has_text=re.compile(r"^Run")).count() == 0

    # The dry run loads on demand, in place.
    page.click("text=Preview what a run now would change")
    page.locator("#preview table tbody tr").first.wait_for(timeout=10_000)
    assert "nothing was written" in page.locator("#preview").inner_text()

    # Range switch swaps the charts in place (htmx) and updates the URL.
    page.evaluate("window.__stay = 1")
    page.click("#charts a.range-btn:has-text('90 days')")
    arrive(page, re.compile(r"days=90"))
    page.wait_for_selector("#charts a.range-btn[aria-current='true']:has-text('90 days')")
    assert page.evaluate("window.__stay") == 1

    # Search as you type.
    s.goto("/")
    page.fill("#q", "glob")
    # (a locator wait: wait_for_function would need eval, which the CSP forbids)
    expect(page.locator("table.tenants tbody tr")).to_have_count(1)
    assert "Globex" in page.locator("table.tenants tbody").inner_text()
    s.watch.assert_clean()


def test_viewer_forged_run_post_is_403(open_session: Callable[..., Session]) -> None:
    s = open_session()
    s.login(*VIEWER)
    token = s.page.evaluate(CSRF_FROM_BODY)
    assert s.page.evaluate(FORGED_POST, ["/tenants/acme/tune", token]) == 403
    assert s.page.evaluate(FORGED_POST, ["/tune/run", token]) == 403
    s.watch.allow("status of 403")


def test_forged_post_without_csrf_token_is_400(open_session: Callable[..., Session]) -> None:
    s = open_session()
    s.login(*ADMIN)
    assert s.page.evaluate(FORGED_POST, ["/tenants/acme/tune", None]) == 400
    assert s.page.evaluate(FORGED_POST, ["/tune/run", "not-the-token"]) == 400
    s.watch.allow("status of 400")


def test_admin_runs_one_tenant_and_watches_it_succeed_without_reload(
    open_session: Callable[..., Session],
) -> None:
    s = open_session()
    s.login(*ADMIN)
    page = s.page
    page.evaluate("window.__stay = 1")
    row = page.locator("tr[data-slug='globex']")
    cell = row.locator(".run-cell")
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/tune/status" in r.url else None)

    # Keyboard only: focus the row's Run button and press Enter.
    row.locator("button", has_text="Run").focus()
    page.keyboard.press("Enter")
    # The status panel appears in place and the row's own cell follows the run.
    page.wait_for_selector("#run-status.is-active", timeout=10_000)
    cell.locator(".badge-succeeded").wait_for(timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector("#run-status:not(.is-active) .badge-succeeded", timeout=10_000)
    assert page.evaluate("window.__stay") == 1  # never reloaded
    assert polls, "the partial never polled"
    assert page.locator("#run-status").get_by_text("No longer updating.").is_visible()
    s.screenshot("overview-after-run-desktop", full_page=False)

    # Polling has stopped: no status request for a while.
    seen = len(polls)
    time.sleep(3)
    assert len(polls) == seen
    s.watch.assert_clean()


def test_failing_tenant_shows_failed_and_its_error(open_session: Callable[..., Session]) -> None:
    s = open_session()
    # Sign in with the keyboard alone: the email field has focus, Tab, Enter.
    s.goto("/login")
    # autofocus lands a moment after "load": typing before it would go nowhere.
    expect(s.page.locator("#email")).to_be_focused()
    s.page.keyboard.type(ADMIN[0])
    s.page.keyboard.press("Tab")
    s.page.keyboard.type(ADMIN[1])
    s.page.keyboard.press("Enter")
    arrive(s.page, s.base + "/")
    s.goto(f"/tenants/{FAILING_TENANT}")
    page = s.page
    page.locator(".page-head button", has_text="Run now").click()
    panel = page.locator("#run-status")
    panel.locator("tr[data-state='failed'] .badge-failed").wait_for(timeout=RUN_TIMEOUT_MS)
    assert f"tuning of {FAILING_TENANT} fails" in panel.inner_text()
    # The run history reloads itself when the runs finish (HX-Trigger: runs-finished).
    page.locator("#history tr[data-state='failed']").first.wait_for(timeout=10_000)
    assert f"tuning of {FAILING_TENANT} fails" in page.locator("#history").inner_text()
    s.screenshot("tenant-failed-run-desktop", full_page=False)
    page.locator(f"#last-run-{_org_id(page)} .badge-failed").wait_for(timeout=10_000)

    # Overview: the failed tenant is offered for a re-run, its row says failed.
    s.goto("/")
    assert page.locator("button", has_text="Re-run failed tenants").is_visible()
    assert page.locator(f"tr[data-slug='{FAILING_TENANT}'] .badge-failed").is_visible()
    s.watch.assert_clean()


def _org_id(page: Any) -> str:
    value = page.locator("#visible-tenants").get_attribute("value")
    assert value
    return str(value)


def test_screenshots_desktop_and_mobile(open_session: Callable[..., Session]) -> None:
    desktop = open_session(1280, 900)
    desktop.goto("/login")
    desktop.screenshot("login-desktop", full_page=False)
    desktop.login(*ADMIN)
    _shoot_pages(desktop, "desktop")
    mobile = open_session(390, 844)
    mobile.login(*VIEWER)
    _shoot_pages(mobile, "mobile")
    # Nothing wider than the phone: tables scroll inside their own box.
    overflow = mobile.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    mobile.goto("/login")  # signed in: redirected to the overview
    desktop.watch.assert_clean()
    mobile.watch.assert_clean()


def test_admin_reaches_rq_dashboard_from_the_runs_page(
    open_session: Callable[..., Session],
) -> None:
    s = open_session()
    s.login(*ADMIN)
    s.goto("/runs")
    s.page.click("text=Queues & workers (rq-dashboard)")
    arrive(s.page, re.compile(r"/admin/rq/"))
    s.page.get_by_role("heading", name="Queues").wait_for(timeout=10_000)
    # Its client-side templates rendered (they need the relaxed CSP of /admin/rq).
    s.page.locator("table tbody tr").first.wait_for(timeout=10_000)
    s.screenshot("rq-dashboard-desktop", full_page=False)
    s.watch.assert_clean()


def test_admin_runs_all_tenants_then_reruns_the_failed_one(
    open_session: Callable[..., Session],
) -> None:
    s = open_session()
    s.login(*ADMIN)
    page = s.page
    page.click("button:has-text('Run now — all tenants')")
    page.wait_for_selector("#run-status.is-active", timeout=10_000)
    page.wait_for_selector("#run-status:not(.is-active) .run-status-head", timeout=RUN_TIMEOUT_MS)
    # Every row was updated in place, without a reload.
    expect(page.locator("table.tenants .run-cell .badge-succeeded")).to_have_count(5)
    expect(page.locator(f"tr[data-slug='{FAILING_TENANT}'] .badge-failed")).to_have_count(1)
    status = page.locator("#run-status")
    assert "failed" in status.locator(".counts").inner_text()

    page.click("button:has-text('Re-run failed tenants')")
    # Only the failed tenant is re-run, and it fails again, with its error.
    expect(status.locator("tbody tr")).to_have_count(1, timeout=10_000)
    rerun = status.locator(f"tbody tr:has-text('{FAILING_TENANT.title()}')")
    expect(rerun.locator(".badge-failed")).to_have_count(1, timeout=RUN_TIMEOUT_MS)
    assert f"tuning of {FAILING_TENANT} fails" in rerun.inner_text()
    s.watch.assert_clean()
