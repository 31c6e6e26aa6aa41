"""/api/v1/docs in Debian's Chromium: Swagger UI from static/, under the app's CSP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from tests.browser.conftest import SECRET, Stack
from tests.conftest import TEST_REDIS_URL
from tests.support.browser import arrive
from tests.support.live_server import start_gunicorn

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The docs need only the web server (no demo data, worker or scheduler)."""
    logs: Path = tmp_path_factory.mktemp("docs-browser-logs")
    env = {"DATABASE_URL": database_url, "REDIS_URL": TEST_REDIS_URL, "SECRET_KEY": SECRET}
    server = start_gunicorn(env, logs / "gunicorn.log", workers=1, threads=4)
    try:
        yield Stack(server, env)
    finally:
        server.stop()
        Redis.from_url(TEST_REDIS_URL).flushdb()


def test_the_docs_render_and_try_a_call_under_the_csp(open_session: Any) -> None:
    session = open_session()
    response = session.goto("/api/v1/docs")
    assert response.status == 200
    csp = response.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    page = session.page
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    assert page.locator(".swagger-ui .title").first.inner_text().strip()
    assert page.locator("[data-path='/api/v1/notifications/{id}/read']").count() >= 1

    # Interactive: open the health check, try it out, and see the server's answer.
    health = page.locator(".opblock", has=page.locator("[data-path='/healthz']")).first
    health.locator(".opblock-summary").click()
    health.locator("button.try-out__btn").click()
    health.locator("button.execute").click()
    code = health.locator(".live-responses-table tr.response .response-col_status").first
    code.wait_for(timeout=20_000)
    assert code.inner_text().strip() == "200"
    session.screenshot("api-docs")

    # Every asset came from this server: the vendored bundle, no CDN.
    assert any("/static/vendor/swagger-ui-" in url for url in session.watch.requests)
    session.watch.assert_clean()


def test_the_dashboard_footer_links_to_the_docs(open_session: Any) -> None:
    session = open_session()
    session.goto("/login")
    session.page.click("footer >> text=API documentation")
    arrive(session.page, session.base + "/api/v1/docs")
    session.page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    session.watch.assert_clean()
