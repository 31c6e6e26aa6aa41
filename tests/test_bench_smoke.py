"""The benchmark suite at a tiny scale: the scripts run and write well-formed results.

No timing thresholds — benchmarks are not timed tests; this only keeps them from rotting.
Needs PostgreSQL (``DATABASE_URL``), Redis and wrk; uses a database, a Redis db and
ports of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
# bench.scale's smoke run has a Redis db of its own, so it can run beside the suite's.
SCALE_REDIS_URL = os.environ.get("TEST_SCALE_REDIS_URL", "redis://127.0.0.1:6379/11")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server() -> str | None:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres", "postgresql")) else None


@contextmanager
def _isolated_bench(
    tmp_path: Path, redis_url: str, scales: tuple[str, ...], tools: tuple[tuple[str, str], ...]
) -> Iterator[dict[str, str]]:
    """The environment of a bench run with databases, a Redis db, ports and results of its
    own; the databases of ``scales`` are dropped afterwards."""
    server = _server()
    if server is None:
        pytest.skip("the benchmarks run on PostgreSQL (set DATABASE_URL)")
    for tool, package in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install -y {package})")
    base = sa.make_url(server.replace("postgresql+psycopg://", "postgresql://"))
    prefix = f"el_bench_t{os.getpid()}_{uuid.uuid4().hex[:6]}"
    server_part = base.set(database=None, drivername="postgresql").render_as_string(
        hide_password=False
    )
    env = dict(os.environ)
    env.update(
        {
            "BENCH_PG_SERVER": server_part,
            "BENCH_DB_PREFIX": prefix,
            "BENCH_RESULTS_DIR": str(tmp_path / "results"),
            "BENCH_SQLITE_DIR": str(tmp_path / "sqlite"),
            # A Redis db of the run's own (the tune bench flushes it).
            "BENCH_REDIS_URL": redis_url,
            "BENCH_PRODUCT_PORT": str(_free_port()),
            "BENCH_BASELINE_PORT": str(_free_port()),
            "BENCH_FIVEROUND_PORT": str(_free_port()),
            "BENCH_FLASK_PORT": str(_free_port()),
            "BENCH_SQLITE_PORT": str(_free_port()),
        }
    )
    env.pop("DATABASE_URL", None)
    yield env
    admin = sa.create_engine(
        base.set(drivername="postgresql+psycopg", database="postgres"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        for scale in scales:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{prefix}_{scale}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def bench_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    tools = (("wrk", "wrk"), ("h2load", "nghttp2-client"))
    with _isolated_bench(tmp_path, TEST_REDIS_URL, ("smoke",), tools) as env:
        yield env


@pytest.fixture
def scale_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    scales = ("smoke", "history-smoke")
    with _isolated_bench(tmp_path, SCALE_REDIS_URL, scales, (("wrk", "wrk"),)) as env:
        yield env


def test_bench_suite_runs_at_smoke_scale(bench_env: dict[str, str], tmp_path: Path) -> None:
    run = subprocess.run(
        # --force: the suite runs beside other tests, so the machine is never quiet.
        [sys.executable, "-m", "bench.run", "--scale", "smoke", "--force"],
        cwd=ROOT,
        env=bench_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    results = tmp_path / "results"
    names = {p.name for p in results.glob("*.json")}
    assert names >= {
        "markread-smoke.json",
        "tune-smoke.json",
        "dashboard-smoke.json",
        "sqlite-smoke.json",
        "summary-smoke.json",
    }
    for path in results.glob("*.json"):
        doc = json.loads(path.read_text())
        assert doc["scale"]["name"] == "smoke"
        assert "machine" in doc and "finished_at" in doc

    markread = json.loads((results / "markread-smoke.json").read_text())
    sides = ("product", "two_statement", "five_round_trip", "minimal_flask")
    for mode in ("first", "repeat"):
        for side in sides:
            figures = markread["results"][mode][side]
            assert figures["rps"] > 0
            assert all(r["non200"] == 0 for r in figures["runs"])
    # Open loop: the product and the two-statement baseline at half the baseline's rate.
    open_loop = markread["results"]["open_loop"]
    expected_rate = 0.5 * markread["results"]["repeat"]["two_statement"]["rps"]
    assert open_loop["rate_rps"] == pytest.approx(expected_rate, rel=0.05)
    for side in ("product", "two_statement"):
        for r in open_loop[side]["runs"]:
            assert r["requests"] > 0 and r["non200"] == 0 and r["failed"] == 0
            assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
    # The load average was recorded before the part and each of its phases.
    assert len(markread["load"]["start"]["load_avg"]) == 3
    assert [p["part"] for p in markread["load"]["parts"]] == [
        "first reads",
        "repeat reads",
        "open loop",
    ]
    # Every first read of the walk wrote exactly one ENGAGE, on every side.
    for side in sides:
        for r in markread["results"]["first"][side]["runs"]:
            if r["wrapped"] == 0:
                # Requests still in flight when wrk stops are answered but not counted.
                in_flight = markread["connections"]
                assert r["requests"] <= r["engage_written"] <= r["requests"] + in_flight

    tune = json.loads((results / "tune-smoke.json").read_text())
    for runs in tune["product"].values():
        for r in runs:
            assert r["succeeded"] == r["tenants"] > 0
            assert r["peak_rss_mb"] > 0
    assert tune["baseline"]["full_statement_s"] > 0

    summary = json.loads((results / "summary-smoke.json").read_text())
    figures = {row["figure"] for row in summary["rows"]}
    assert "mark-read first reads vs two_statement (req/s)" in figures
    assert "mark-read repeat reads vs minimal_flask (req/s)" in figures
    assert any(f.startswith("mark-read open loop") for f in figures)
    assert set(summary["load"]) == {"markread", "tune", "dashboard", "sqlite"}
    assert any(f.startswith("dashboard overview") for f in figures)
    for row in summary["rows"]:
        assert set(row) == {"figure", "measured", "baseline", "ratio", "unit", "target", "met"}


@pytest.mark.timeout(900)
def test_bench_scale_compares_both_scales_and_prunes_a_month(
    scale_env: dict[str, str], tmp_path: Path
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--smoke", "--force"],
        cwd=ROOT,
        env=scale_env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    doc = json.loads((tmp_path / "results" / "scale-history-smoke.json").read_text())
    names = ("smoke", "history-smoke")
    assert doc["reference"]["name"] == "smoke" and doc["scale"]["name"] == "history-smoke"

    # Each data set in month partitions from its first day, nothing in the default one.
    for name in names:
        data = doc["data_sets"][name]
        assert data["default_partition_rows"] == 0
        assert data["month_partitions"] >= data["days"] // 31 + 1 + 3  # + AHEAD_MONTHS
        assert data["generate_seconds"] > 0 and data["database_bytes"] > 0
    # The long history holds five times the signals; its last 30 days about as many.
    small, big = (doc["data_sets"][n] for n in names)
    assert big["signals"] > 4 * small["signals"]
    assert big["window_signals_per_day"] == pytest.approx(small["window_signals_per_day"], rel=0.3)

    # Every figure at both scales, with its ratio and target.
    rows = {row["figure"]: row for row in doc["rows"]}
    expected = {"tune all tenants via RQ, batch=50", "mark-read first reads"}
    expected |= {"mark-read repeat reads"}
    expected |= {
        f"dashboard {page} {s}"
        for page in ("overview", "tenant", "feature")
        for s in ("p50", "p95")
    }
    assert expected <= set(rows)
    for row in rows.values():
        values = row["values"]
        assert set(values) == set(names) and all(v > 0 for v in values.values())
        assert row["ratio"] == pytest.approx(values["history-smoke"] / values["smoke"], rel=0.01)
        assert row["target"] and isinstance(row["met"], bool)
    for name in names:
        for r in doc["results"]["tune"][name]["runs"]:
            assert r["succeeded"] == r["tenants"] > 0
        for mode in ("first", "repeat"):
            assert all(r["non200"] == 0 for r in doc["results"]["markread"][name][mode]["runs"])

    # One whole month pruned by the product's command, under mark-read load, then put back.
    prune = doc["prune"]
    assert prune["rows_dropped"] == prune["rows_in_partition"] > 0
    assert prune["partitions_dropped"] == 1
    assert prune["prune"]["output"].startswith(f"pruned {prune['rows_dropped']} signals")
    assert prune["prune"]["wall_s"] > 0
    for window in ("before", "during"):
        figures = prune[window]
        assert figures["requests"] > 0
        assert figures["errors"] == figures["non2xx"] + figures["socket_errors"]
        assert figures["p99_ms"] >= figures["p50_ms"] > 0
    assert prune["restore"]["matches"] is True
    assert prune["restore"]["signals"] >= prune["rows_dropped"]
    assert set(doc["load"]) == {"markread", "tune", "dashboard", "prune"}

    # The data set is whole again: a second run would use it as it is.
    generate = subprocess.run(
        [sys.executable, "-m", "bench.generate", "--scale", "history-smoke"],
        cwd=ROOT,
        env=scale_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generate.returncode == 0, generate.stdout + generate.stderr
    assert "already generated" in generate.stdout


class FakeClock:
    """A monotonic clock that moves only when the guard sleeps, and the loads it sees."""

    def __init__(self, loads: list[float]) -> None:
        self.now = 0.0
        self.loads = loads
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def loadavg(self) -> tuple[float, float, float]:
        one = self.loads.pop(0) if len(self.loads) > 1 else self.loads[0]
        return (one, 2.0, 2.0)


def _guard(fake: FakeClock, *, force: bool = False, wait_s: float = 60) -> dict[str, object]:
    from bench.common import wait_for_quiet

    return wait_for_quiet(
        "mark-read",
        force=force,
        wait_s=wait_s,
        poll_s=2,
        loadavg=fake.loadavg,
        sleep=fake.sleep,
        clock=fake.clock,
    )


def test_a_part_starts_at_once_on_a_quiet_machine() -> None:
    fake = FakeClock([0.4])
    record = _guard(fake)
    assert fake.slept == []
    assert record == {"load_avg": [0.4, 2.0, 2.0], "waited_s": 0.0, "quiet": True, "forced": False}


def test_a_part_waits_for_the_load_to_fall_then_starts() -> None:
    fake = FakeClock([3.0, 2.0, 1.5, 0.9])
    record = _guard(fake)
    assert record["waited_s"] == 6.0
    assert record["load_avg"] == [0.9, 2.0, 2.0] and record["quiet"] is True


def test_a_part_refuses_to_start_while_the_machine_stays_busy() -> None:
    from bench.common import BusyMachine

    fake = FakeClock([3.0])
    with pytest.raises(BusyMachine, match="refusing to start mark-read"):
        _guard(fake, wait_s=60)
    assert fake.now == 60.0
    # Never less than the 30 s that tells a test run from a brief spike.
    fake = FakeClock([3.0])
    with pytest.raises(BusyMachine):
        _guard(fake, wait_s=5)
    assert fake.now == 30.0


def test_force_starts_on_a_busy_machine_and_says_so() -> None:
    fake = FakeClock([3.0])
    record = _guard(fake, force=True)
    assert fake.slept == []
    assert record["quiet"] is False and record["forced"] is True


def _engage_rows(notification_id: int) -> int:
    from loops.database import db

    count = db.session.execute(
        sa.text("SELECT count(*) FROM loop_signals WHERE kind = 'ENGAGE' AND subject_id = :id"),
        {"id": notification_id},
    ).scalar_one()
    db.session.commit()
    return int(count)


@pytest.fixture
def two_statement_pool(database_url: str) -> Iterator[None]:
    """The baselines' pool, on the test database (normally opened from DATABASE_URL)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the two-statement baselines run on PostgreSQL")
    from bench import twostatement

    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(twostatement, "DSN", dsn)
        mp.setattr(twostatement, "POOL_SIZE", 2)
        mp.setattr(twostatement, "_pool", None)
        yield
        if twostatement._pool is not None:
            twostatement._pool.close()


@pytest.mark.parametrize("baseline", ["baseline_twostatement", "baseline_flask"])
def test_the_two_statement_baselines_answer_mark_read_as_the_product_does(
    baseline: str, two_statement_pool: None, client: Any, make: Any
) -> None:
    """Same bodies, same statuses, same ENGAGE rows: the baselines measure the same work."""
    import importlib

    from werkzeug.test import Client

    raw = Client(importlib.import_module(f"bench.{baseline}").app)
    user = make.user()
    make.member(user, make.org())
    stranger = make.notification(make.user())
    token = make.token(user)
    ours = {side: make.notification(user, title=f"for {side}") for side in ("product", "raw")}
    headers = {"Authorization": f"Bearer {token}"}

    def read(side: str, nid: int, auth: dict[str, str] = headers) -> tuple[int, Any]:
        path = f"/api/v1/notifications/{nid}/read"
        if side == "product":
            r = client.post(path, headers=auth)
            return r.status_code, r.get_json()
        resp = raw.post(path, headers=auth)
        return resp.status_code, json.loads(resp.get_data())

    for side in ("product", "raw"):
        nid = ours[side].id
        status, first = read(side, nid)
        assert status == 200 and first["first_read"] is True
        assert set(first) == {"id", "feature", "title", "created_at", "read_at", "first_read"}
        assert first["id"] == nid and first["title"] == f"for {side}"
        assert first["read_at"].endswith("Z") and first["created_at"].endswith("Z")
        status, again = read(side, nid)
        assert status == 200 and again == first | {"first_read": False}
        assert read(side, stranger.id)[0] == 404
        assert read(side, nid, {"Authorization": "Bearer elp_nope"})[0] == 401
    assert _engage_rows(ours["product"].id) == _engage_rows(ours["raw"].id) == 1
