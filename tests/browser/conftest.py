"""Browser fixtures: demo data, real gunicorn, RQ worker and scheduler, Debian's Chromium."""

# Everything runs against the suite's own database and Redis db index (TEST_REDIS_URL).
# Every request the browser makes is recorded; anything not aimed at 127.0.0.1/localhost
# is aborted and reported, and console errors are collected, so each test can assert
# "no request left localhost, no console errors".

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis import Redis

from tests.conftest import TEST_REDIS_URL
from tests.support.browser import arrive
from tests.support.live_server import ROOT, LiveServer, start_gunicorn
from tests.support.procs import kill_group

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# A demo tenant whose tuning raises (jobs' TEST-ONLY hook), to show a failed run.
FAILING_TENANT = "vandelay"
SECRET = "browser-test-secret"

ADMIN = ("admin@example.com", "demo-admin-pass")
VIEWER = ("viewer@example.com", "demo-viewer-pass")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not Path(CHROMIUM).exists():
        skip = pytest.mark.skip(reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(skip)


@dataclass
class Stack:
    server: LiveServer
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _seed(env: dict[str, str], log: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "demo", "seed"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        timeout=600,
    )
    log.write_bytes(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr.decode(errors="replace")


# Module scope: the worker must be gone before other test modules enqueue jobs on the
# same Redis db (and it listens on a queue of its own besides).
@pytest.fixture(scope="module")
def stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("browser-logs")
    redis = Redis.from_url(TEST_REDIS_URL)
    redis.flushdb()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": TEST_REDIS_URL,
        "SECRET_KEY": SECRET,
        "LOOPS_ENABLED": "true",
        "TUNE_TEST_FAIL_TENANTS": FAILING_TENANT,
        "TUNE_TEST_DELAY_S": "0.5",
        "TZ": "UTC",
        "RQ_QUEUE": "engagement-browser-tests",
        "LOG_LEVEL": "INFO",
    }
    # The suite's database is shared with the other tests, which empty it first thing:
    # start from a clean slate too, then seed.
    _truncate(database_url)
    _seed(env, logs / "seed.log")
    processes = [
        _start(["rq", "worker"], env, logs / "worker.log"),
        _start(["rq", "scheduler"], env, logs / "scheduler.log"),
    ]
    server = start_gunicorn(env, logs / "gunicorn.log", workers=2, threads=8)
    stack = Stack(server, env, processes)
    try:
        _wait_for_worker(redis, processes)
        yield stack
    finally:
        server.stop()
        for process in processes:
            kill_group(process)
        redis.flushdb()
        redis.close()
        if os.environ.get("BROWSER_KEEP_LOGS"):
            shutil.copytree(logs, ROOT / "test-artifacts" / "browser-logs", dirs_exist_ok=True)


def _truncate(database_url: str) -> None:
    from dashboard import create_app
    from tests.conftest import _truncate_all

    app = create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": TEST_REDIS_URL}
    )
    with app.app_context():
        from dashboard.extensions import db

        _truncate_all(app)
        db.engine.dispose()


def _wait_for_worker(redis: Redis, processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise RuntimeError("the worker or scheduler exited early")
        if redis.keys("rq:worker:*") and redis.exists("engagement-loops:scheduler:alive"):
            return
        time.sleep(0.2)
    raise RuntimeError("no RQ worker / scheduler registered within 30 s")


# --- the browser ----------------------------------------------------------------------


# Module scope: Playwright's sync API runs an event loop while it is open, and another
# module's sync_playwright() (the XSS test in tests/reliability) refuses to start inside it.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@dataclass
class Watch:
    """What one browser context did: every URL requested, external ones, console errors."""

    requests: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def allow(self, text: str) -> None:
        """Drop console errors a test provoked on purpose (a forged request's 4xx)."""
        self.errors = [e for e in self.errors if text not in e]

    def assert_clean(self) -> None:
        assert self.external == [], f"requests left localhost: {self.external}"
        assert self.errors == [], f"console errors: {self.errors}"


@dataclass
class Session:
    page: Any
    watch: Watch
    base: str

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def login(self, email: str, password: str) -> None:
        self.goto("/login")
        self.page.fill("#email", email)
        self.page.fill("#password", password)
        self.page.click("button[type=submit]")
        arrive(self.page, self.base + "/")

    def screenshot(self, name: str, full_page: bool = True) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


@pytest.fixture
def open_session(browser: Any, stack: Stack) -> Iterator[Any]:
    contexts: list[Any] = []
    watches: list[Watch] = []

    def make(width: int = 1280, height: int = 900) -> Session:
        context = browser.new_context(viewport={"width": width, "height": height})
        watch = Watch()

        def route(route: Any) -> None:
            url = route.request.url
            watch.requests.append(url)
            host = urlsplit(url).hostname or ""
            if url.startswith(("data:", "blob:", "about:")) or host in LOCAL_HOSTS:
                route.continue_()
            else:
                watch.external.append(url)
                route.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on(
            "console",
            lambda msg: watch.errors.append(msg.text) if msg.type == "error" else None,
        )
        page.on("pageerror", lambda exc: watch.errors.append(f"pageerror: {exc}"))
        contexts.append(context)
        watches.append(watch)
        return Session(page, watch, stack.url)

    yield make
    for context in contexts:
        context.close()
    for watch in watches:
        watch.assert_clean()
