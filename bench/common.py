"""Shared pieces of the benchmarks: scales, database URLs, bench tokens, results files."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(os.environ.get("BENCH_RESULTS_DIR", ROOT / "bench" / "results"))
PG_SERVER = os.environ.get("BENCH_PG_SERVER", "postgresql://postgres@127.0.0.1:5432")
BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
SEED = 20261127

ADMIN_EMAIL = "bench-admin@bench.test"
VIEWER_EMAIL = "bench-viewer@bench.test"
BENCH_PASSWORD = "bench-pass-1234"


DEFAULT_GROWTH = 0.10


@dataclass(frozen=True)
class Scale:
    """How big a data set is, and how long each load run lasts."""

    name: str
    tenants: int
    users: int
    notifications: int
    signals: int
    days: int = 60
    load_users: int = 10_000  # users with a bench API token (the mark-read load walks theirs)
    duration_s: int = 30  # each measured load run
    warmup_s: int = 5
    runs: int = 3
    connections: int = 64
    page_samples: int = 60
    # The fraction by which the daily volume grows over the period (growth_weight): the
    # mean day is the same whatever it is.
    growth: float = DEFAULT_GROWTH

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SCALES: dict[str, Scale] = {
    "full": Scale("full", 1000, 100_000, 2_000_000, 10_000_000),
    # Same tenants, users and notifications, a tenth of the signals: the 1M point.
    "signals1m": Scale("signals1m", 1000, 100_000, 2_000_000, 1_000_000),
    "medium": Scale("medium", 1000, 100_000, 1_000_000, 3_000_000),
    # The SQLite figures of the issue: 100 tenants, 1M signals; the tune's figure is the
    # median of three runs (a few seconds each), mark-read one 20 s run.
    "sqlite": Scale(
        "sqlite", 100, 10_000, 300_000, 1_000_000, load_users=2000, duration_s=20, runs=3
    ),
    # A year and more of history next to "full" (bench.scale, issue 14): 50M signals over
    # 400 days growing 80 % over the period (day weights 0.6 .. 1.4), so the last 30 days
    # carry about 171k signals a day, as full's last 30 days do (10M over 60 days, +10 %):
    # the tune's window is the same size on both, and only the history differs.
    "history": Scale("history", 1000, 100_000, 2_000_000, 50_000_000, days=400, growth=0.8),
    "quick": Scale(
        "quick",
        100,
        5_000,
        100_000,
        300_000,
        load_users=1000,
        duration_s=6,
        warmup_s=2,
        runs=1,
        page_samples=20,
    ),
    "smoke": Scale(
        "smoke",
        5,
        200,
        3_000,
        8_000,
        load_users=50,
        duration_s=2,
        warmup_s=1,
        runs=1,
        connections=8,
        page_samples=5,
    ),
    # smoke's counterpart with 400 days of history (the bench.scale smoke test): 40k
    # signals growing 80 %, so its last 30 days hold as many a day as smoke's (~137).
    "history-smoke": Scale(
        "history-smoke",
        5,
        200,
        3_000,
        40_000,
        days=400,
        growth=0.8,
        load_users=50,
        duration_s=2,
        warmup_s=1,
        runs=1,
        connections=8,
        page_samples=5,
    ),
}


def growth_weight(scale: Scale, day: int) -> float:
    """How much day ``day`` (0 = the first) of a data set weighs for its growth alone."""
    return (1 - scale.growth / 2) + scale.growth * day / scale.days


def window_share(scale: Scale, last_days: int) -> float:
    """The share of a data set's volume in its last ``last_days`` days (growth, no weekdays)."""
    weights = [growth_weight(scale, i) for i in range(scale.days)]
    return sum(weights[-last_days:]) / sum(weights)


def scale_named(name: str) -> Scale:
    try:
        return SCALES[name]
    except KeyError:
        raise SystemExit(f"unknown scale {name!r}; choose from {', '.join(SCALES)}") from None


def database_name(scale: Scale) -> str:
    return f"{os.environ.get('BENCH_DB_PREFIX', 'el_bench')}_{scale.name}"


def pg_url(dbname: str, driver: str = "postgresql+psycopg") -> str:
    """SQLAlchemy URL (default) or a libpq one (``driver="postgresql"``) for ``dbname``."""
    # Host part only: a database name in BENCH_PG_SERVER is ignored.
    server = PG_SERVER.split("://", 1)[1].split("/", 1)[0]
    return f"{driver}://{server}/{dbname}"


def bench_token(user_id: int) -> str:
    """The deterministic API token of a load user (only its SHA-256 is stored)."""
    tail = hashlib.sha256(f"{SEED}:{user_id}".encode()).hexdigest()[:24]
    return f"elp_bench_{user_id}_{tail}"


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def app_env(database_url: str, **extra: str) -> dict[str, str]:
    """Environment for the product (gunicorn, flask CLI, RQ workers) in a bench run."""
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": BENCH_REDIS_URL,
            "SECRET_KEY": "bench-secret-key-not-for-production",
            "LOOPS_ENABLED": "true",
            "LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


def venv_bin(name: str) -> str:
    path = ROOT / ".venv" / "bin" / name
    return str(path) if path.exists() else name


def machine() -> dict[str, Any]:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    try:
        pg = subprocess.run(
            ["psql", pg_url("postgres", "postgresql"), "-Atc", "SHOW server_version"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pg = ""
    return {
        "cpus": os.cpu_count(),
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "postgresql": pg,
        "load_avg": os.getloadavg(),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return float(ordered[index])


def ratio(measured: float, baseline: float) -> float:
    return round(measured / baseline, 3) if baseline else float("nan")


def print_row(name: str, measured: float, baseline: float | None, unit: str, target: str) -> None:
    """One line of the summary: measured value, baseline value, ratio, target."""
    if baseline is None:
        print(f"  {name:<48} {measured:>12.2f} {unit:<6} {'':>12} {'':>8}  target {target}")
        return
    print(
        f"  {name:<48} {measured:>12.2f} {unit:<6} {baseline:>12.2f} "
        f"{ratio(measured, baseline):>8.3f}  target {target}"
    )


def write_result(kind: str, scale: Scale, payload: dict[str, Any]) -> Path:
    """Write ``bench/results/<kind>-<scale>.json`` and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{kind}-{scale.name}.json"
    document = {
        "benchmark": kind,
        "scale": scale.as_dict(),
        "machine": machine(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    print(f"  results -> {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


# A part starts only on a quiet machine: the 1-minute load average at or below LOAD_LIMIT.
# Figures taken while tests ran beside them (load 3 on two cores) moved by ±25 %.
LOAD_LIMIT = 1.0
# Busy means above the limit for at least this long (a brief spike is not a test run).
LOAD_BUSY_S = 30.0
# How long a part waits for the machine to quiet down before refusing to start.
LOAD_WAIT_S = float(os.environ.get("BENCH_LOAD_WAIT_S", "300"))


class BusyMachine(SystemExit):
    """The machine stayed busy: the part refuses to start (``--force`` overrides)."""


def wait_for_quiet(
    part: str,
    *,
    force: bool,
    wait_s: float = LOAD_WAIT_S,
    poll_s: float = 2.0,
    loadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Wait until the 1-minute load is at most LOAD_LIMIT, and say what it was.

    Polls every ``poll_s``; once the load has stayed above the limit for
    ``max(wait_s, LOAD_BUSY_S)`` seconds something else is running (tests, another
    benchmark) and the part refuses to start (BusyMachine). ``force`` starts at once
    and marks the record ``quiet: False`` when the load was above the limit, so the
    figures can be told apart (CI smoke runs beside the test suite).
    """
    started = clock()
    load = loadavg()
    if force:
        quiet = load[0] <= LOAD_LIMIT
        if not quiet:
            print(
                f"  {part}: load average {load[0]:.2f} > {LOAD_LIMIT} but --force given; "
                "these figures are NOT valid measurements",
                flush=True,
            )
        return _load_record(load, 0.0, quiet=quiet, forced=True)
    deadline = started + max(wait_s, LOAD_BUSY_S)
    announced = False
    while load[0] > LOAD_LIMIT:
        if clock() >= deadline:
            raise BusyMachine(
                f"bench: refusing to start {part}: the 1-minute load average stayed above "
                f"{LOAD_LIMIT} for {clock() - started:.0f} s (now {load[0]:.2f}); another test "
                "or benchmark is running. Run benchmarks alone, or pass --force to run anyway "
                "(figures then not valid)."
            )
        if not announced:
            print(
                f"  {part}: load average {load[0]:.2f} > {LOAD_LIMIT}; waiting up to "
                f"{max(wait_s, LOAD_BUSY_S):.0f} s for a quiet machine",
                flush=True,
            )
            announced = True
        sleep(poll_s)
        load = loadavg()
    return _load_record(load, round(clock() - started, 1), quiet=True, forced=force)


def _load_record(
    load: tuple[float, float, float], waited_s: float, *, quiet: bool, forced: bool
) -> dict[str, Any]:
    return {
        "load_avg": [round(v, 2) for v in load],
        "waited_s": waited_s,
        "quiet": quiet,
        "forced": forced,
    }


def record_load(part: str) -> dict[str, Any]:
    """The load average at the start of a sub-part (our own servers may be running)."""
    load = os.getloadavg()
    return {"part": part, "load_avg": [round(v, 2) for v in load]}


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)
