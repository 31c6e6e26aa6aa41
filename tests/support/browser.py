"""Waiting in Chromium for a page the test navigated to."""

from __future__ import annotations

import re
import time
from typing import Any

# How often the document's readiness is read (ms).
POLL_MS = 100
# As long as page.wait_for_url waits by default.
TIMEOUT_MS = 30_000


def arrive(page: Any, url: str | re.Pattern[str]) -> None:
    """Wait until the page shows ``url`` and its document has loaded, as
    ``page.wait_for_url`` does, without Playwright's load-event bookkeeping: in CI,
    Playwright 1.65.3 once missed a page's "load" and waited out its 30 s although the
    network had gone idle. The URL is polled, then document.readyState, so an htmx
    push (the same document) passes at once and a navigation waits for its load.

    The readiness is read with page.evaluate from Python: wait_for_function's polling
    evaluates a string in the page, which the app's CSP (no 'unsafe-eval') refuses."""
    from playwright.sync_api import Error, expect

    expect(page).to_have_url(url, timeout=TIMEOUT_MS)
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        try:
            if page.evaluate("() => document.readyState") == "complete":
                return
        except Error as exc:  # the document went away mid-read: read the next one
            if "context was destroyed" not in str(exc):
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"{page.url} did not finish loading in {TIMEOUT_MS} ms")
        page.wait_for_timeout(POLL_MS)
