"""The Delivery section in real Chromium: an admin enforces and pins in place, viewers only read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ADMIN, SCREENSHOTS, VIEWER, Session

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TENANT = "initech"
FEATURE = "report.ready"

FORGED_POST = """async ([path, token]) => {
  const r = await fetch(path, {method: "POST", credentials: "same-origin",
    headers: {"HX-Request": "true", "X-CSRFToken": token,
              "Content-Type": "application/x-www-form-urlencoded"},
    body: "enforced=on&mode=digest"});
  return r.status;
}"""
CSRF_FROM_BODY = "() => JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken']"
NAVIGATIONS = "() => performance.getEntriesByType('navigation').length"


def _shoot_section(session: Session, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    session.page.locator("#delivery").screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def _no_sideways_scroll(page: Any) -> None:
    # Nothing wider than the screen: wide tables scroll inside their own box.
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px"


def test_admin_enforces_a_tenant_and_pins_a_feature_without_a_reload(
    open_session: Callable[..., Session],
) -> None:
    s = open_session(1280, 900)
    s.login(*ADMIN)
    s.goto(f"/tenants/{TENANT}")
    page = s.page
    section = page.locator("#delivery")
    expect(section.locator("[data-state='shadow']")).to_have_count(1)
    expect(section.locator("tbody tr[data-feature]").first).to_be_visible()
    page.evaluate("() => { window.__stay = 1; }")
    page.on("dialog", lambda dialog: dialog.accept())  # "Enforce …'s policy?"

    section.get_by_role("button", name="Enforce").click()
    expect(section.locator("[data-state='enforced']")).to_have_count(1)
    expect(section.get_by_role("status")).to_contain_text("is enforced.")
    expect(section.get_by_role("button", name="Switch to shadow")).to_be_visible()
    # Focus stays on the toggle across the swap, so a keyboard user is not thrown to the top.
    expect(page.locator("#delivery-enforce")).to_be_focused()

    row = section.locator(f"tr[data-feature='{FEATURE}']")
    row.get_by_role("button", name=f"Pin {FEATURE} to digest").click()
    expect(row.locator(".badge-pinned")).to_be_visible()
    expect(row).to_have_attribute("data-mode", "digest")
    expect(row.get_by_role("button", name=f"Unpin {FEATURE}")).to_be_visible()
    # Digest mode on an enforced tenant: its holdout vs treated comparison appears.
    lift = section.locator(f".lift[data-feature='{FEATURE}']")
    expect(lift.locator(".lift-verdict")).to_contain_text("no comparison yet")
    changes = section.locator(".changes li")
    expect(changes.first).to_contain_text(f"{ADMIN[0]} pinned {FEATURE} to digest")
    expect(changes.nth(1)).to_contain_text(f"{ADMIN[0]} enforced the policy")

    assert page.evaluate("() => window.__stay") == 1  # the page was never reloaded
    assert page.evaluate(NAVIGATIONS) == 1
    _shoot_section(s, "delivery-admin-1280")

    # The same section on a phone, controls and all.
    phone = open_session(390, 844)
    phone.login(*ADMIN)
    phone.goto(f"/tenants/{TENANT}")
    expect(
        phone.page.locator(f"#delivery tr[data-feature='{FEATURE}'] .badge-pinned")
    ).to_be_visible()
    _no_sideways_scroll(phone.page)
    _shoot_section(phone, "delivery-admin-390")

    # Back as it was: unpinned, in shadow, still in place.
    row.get_by_role("button", name=f"Unpin {FEATURE}").click()
    expect(row.locator(".badge-pinned")).to_have_count(0)
    section.get_by_role("button", name="Switch to shadow").click()
    expect(section.locator("[data-state='shadow']")).to_have_count(1)
    assert page.evaluate("() => window.__stay") == 1
    s.watch.assert_clean()
    phone.watch.assert_clean()


def test_viewer_sees_the_section_but_no_controls(open_session: Callable[..., Session]) -> None:
    s = open_session(390, 844)
    s.login(*VIEWER)
    s.goto(f"/tenants/{TENANT}")
    section = s.page.locator("#delivery")
    expect(section.locator("tbody tr[data-feature]").first).to_be_visible()
    expect(section.locator(".range-bar").first).to_be_visible()
    assert section.locator("form").count() == 0
    assert section.locator("button").count() == 0
    _no_sideways_scroll(s.page)
    _shoot_section(s, "delivery-viewer-390")

    token = s.page.evaluate(CSRF_FROM_BODY)
    for path in (
        f"/tenants/{TENANT}/policy/enforce",
        f"/tenants/{TENANT}/policy/{FEATURE}/pin",
        f"/tenants/{TENANT}/policy/{FEATURE}/unpin",
    ):
        assert s.page.evaluate(FORGED_POST, [path, token]) == 403
    s.watch.allow("status of 403")

    desktop = open_session(1280, 900)
    desktop.login(*VIEWER)
    desktop.goto(f"/tenants/{TENANT}")
    desktop.page.locator("#delivery").wait_for()
    _shoot_section(desktop, "delivery-viewer-1280")
