"""Hostile names, features, errors and titles render as text in a real Chromium: no XSS anywhere."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from loops.database import db
from loops.models import Calibration, Role, TuneRun
from loops.timeutil import utcnow
from tests.support.browser import arrive
from tests.support.dashboard import TEST_PASSWORD
from tests.support.live_server import LiveServer

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
NAME = "<script>window.__xss='name'</script><img src=x onerror=\"window.__xss='img'\">"
FEATURE = "f<svg/onload=window.__xss='feature'>"
ERROR = "boom </td><script>window.__xss='error'</script>"
TITLE = "<script>window.__xss='title'</script>"
PAGES = (
    "/",
    "/?q=%3Cscript%3Ewindow.__xss%3D%27q%27%3C%2Fscript%3E",
    "/tenants/evil",
    "/tenants/evil?days=%3Cscript%3E",
    "/runs",
    "/runs?state=%3Cscript%3Ewindow.__xss%3D1%3C%2Fscript%3E",
    "/tune/status?cells=%3Cscript%3E",
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
]


def _seed(make: Any, api_as: Any) -> str:
    admin = make.user(email="admin@example.com", role=Role.ADMIN)
    org = make.org(slug="evil", name=NAME)
    make.member(admin, org)
    now = utcnow()
    db.session.add(
        Calibration(
            org_id=org.id,
            key=f"engagement-rate:{FEATURE}",
            value=1.5,
            sample_size=45,
            window_days=30,
            computed_at=now,
        )
    )
    db.session.add(
        TuneRun(
            org_id=org.id,
            trigger="manual",
            requested_by=NAME,
            state="failed",
            enqueued_at=now - timedelta(minutes=2),
            started_at=now - timedelta(minutes=2),
            finished_at=now - timedelta(minutes=1),
            error=ERROR,
        )
    )
    db.session.commit()
    created = api_as(admin).post(
        "/api/v1/notifications",
        json={"user_id": admin.id, "feature": "mention", "title": TITLE},
    )
    assert created.status_code == 201
    return str(admin.email)


def test_no_page_runs_injected_script(
    app: Flask, make: Any, api_as: Any, gunicorn: Any, database_url: str
) -> None:
    from playwright.sync_api import sync_playwright

    email = _seed(make, api_as)
    server: LiveServer = gunicorn({"DATABASE_URL": database_url}, workers=1, threads=4)
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page()
        page.on("dialog", lambda d: problems.append(f"dialog: {d.message}"))
        page.on(
            "console",
            lambda m: (
                problems.append(f"console {m.type}: {m.text}")
                if m.type == "error" and "Content Security Policy" in m.text
                else None
            ),
        )
        page.goto(f"{server.url}/login")
        page.fill("#email", email)
        page.fill("#password", TEST_PASSWORD)
        page.click("button[type=submit]")
        arrive(page, re.compile(r".*/$"))
        seen_text = ""
        for path in PAGES:
            page.goto(server.url + path)
            page.wait_for_load_state("networkidle")
            executed = page.evaluate("() => window.__xss === undefined ? null : window.__xss")
            injected = page.evaluate(
                "() => [...document.querySelectorAll('script')]"
                ".filter(s => s.textContent.includes('__xss')).length"
                " + document.querySelectorAll('[onerror],[onload]').length"
            )
            assert executed is None, (path, executed)
            assert injected == 0, (path, injected)
            seen_text += page.inner_text("body")
        browser.close()
    assert problems == []
    # Rendered as text, not dropped: people see exactly what was stored.
    assert NAME in seen_text
    assert FEATURE in seen_text
    assert "window.__xss='error'" in seen_text
