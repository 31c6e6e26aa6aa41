"""Processes for tests: waiting, killing process groups, redis-server, PostgreSQL, plain HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))

# The suite's Redis dbs: each variable names one URL, or (pytest-xdist, `make test
# PYTEST_WORKERS=n`) a comma-separated list with one URL a worker, gw0 taking the first.
# A worker may use the same db for the suite and the reliability tests (it runs one test
# at a time), never a db another worker uses.
REDIS_DEFAULTS = {
    "TEST_REDIS_URL": "redis://127.0.0.1:6379/13",
    "RELIABILITY_REDIS_URL": "redis://127.0.0.1:6379/9",
    # Only tests/test_bench_smoke.py uses it, and a module runs on one worker (--dist
    # loadfile): one URL may serve every worker.
    "TEST_SCALE_REDIS_URL": "redis://127.0.0.1:6379/11",
}


def _worker_redis_urls() -> dict[str, str]:
    """This process's URL of each variable; in an xdist worker also written to the
    environment, for the modules and the processes that read it there."""
    given = {
        variable: [url.strip() for url in (os.environ.get(variable) or default).split(",")]
        for variable, default in REDIS_DEFAULTS.items()
    }
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ...: set before conftest
    # A process a worker started (bench, flask) inherits the worker's own URLs.
    if worker is None or os.environ.get("TESTS_REDIS_OF_WORKER") == worker:
        return {variable: urls[0] for variable, urls in given.items()}
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    owner: dict[str, int] = {}
    for variable in ("TEST_REDIS_URL", "RELIABILITY_REDIS_URL"):
        if len(given[variable]) < count:
            raise RuntimeError(
                f"{variable} lists {len(given[variable])} Redis URL(s) for {count} pytest-xdist"
                " workers: give one a worker, comma-separated"
            )
        for index, url in enumerate(given[variable][:count]):
            if owner.setdefault(url, index) != index:
                raise RuntimeError(f"{url} is given to two pytest-xdist workers ({variable})")
    index = int(worker.removeprefix("gw"))
    mine = {variable: urls[min(index, len(urls) - 1)] for variable, urls in given.items()}
    os.environ.update(mine, TESTS_REDIS_OF_WORKER=worker)
    return mine


WORKER_REDIS_URLS = _worker_redis_urls()
RELIABILITY_REDIS_URL = WORKER_REDIS_URLS["RELIABILITY_REDIS_URL"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll until ``predicate()`` is truthy and return its value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def server_env() -> dict[str, str]:
    """The environment for a server of our own (redis-server, PostgreSQL): the real clock,
    even when the suite itself runs under faketime to try another date."""
    return {
        k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")
    }


def kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


# --- Redis -------------------------------------------------------------------


@dataclass
class RedisServer:
    """A redis-server of our own that a test may kill and start again on the same port."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
            ],
            env=server_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_until(self.up, 10, what="redis-server to answer")
        except AssertionError:
            kill_group(self.process, signal.SIGKILL)  # never left behind by a failed start
            raise

    def up(self) -> bool:
        conn = Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            return bool(conn.ping())
        except Exception:
            return False
        finally:
            conn.close()

    def kill(self) -> None:
        if self.process is not None:
            kill_group(self.process, signal.SIGKILL)
        wait_until(lambda: not self.up(), 5, what="redis-server to stop")


# --- PostgreSQL ----------------------------------------------------------------


def as_postgres(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *args],
        env=server_env(),
        check=check,
        capture_output=True,
        text=True,
        timeout=120,
    )


@dataclass
class PgCluster:
    """A throwaway PostgreSQL 15 cluster (run as the postgres OS user) that tests may stop."""

    directory: Path
    port: int

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/loops"

    def start(self) -> None:
        as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop(self, mode: str = "immediate") -> None:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (
            as_postgres(
                str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status", check=False
            ).returncode
            == 0
        )


# --- HTTP helper ---------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    token: str | None = None,
    *,
    body: Any = None,
    timeout: float = 30,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """One plain HTTP request (urllib: no retries, no pooling), errors returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(
                response.status, dict(response.headers), response.read(), time.monotonic() - started
            )
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read(), time.monotonic() - started)


# --- overrides of the shared fixtures: our own Redis db index ------------------


def migrate(database_url: str) -> None:
    env = dict(os.environ, DATABASE_URL=database_url, SECRET_KEY="migrate", LOG_LEVEL="WARNING")
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
