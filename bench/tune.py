"""Weekly tune end to end through real RQ workers vs one raw SQL aggregation statement.

Product: ``jobs.runs.request_runs`` for every tenant (as "Run now — all tenants" and
the weekly schedule do), executed by ``flask --app wsgi rq worker`` processes; timed
from the enqueue call until every run is terminal. Worker peak RSS is read from
/proc (VmHWM) and sampled while the run goes. Baseline: the same calibrations
(``engagement-rate`` and ``engagement-ratio`` per tenant and feature) computed and
upserted by one ``INSERT … SELECT … GROUP BY org_id, feature … ON CONFLICT`` statement,
rolled back so it leaves nothing behind; the rate-only statement (the seed's
aggregation) is timed too.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench.common import (
    BENCH_REDIS_URL,
    ROOT,
    Scale,
    app_env,
    database_name,
    median,
    pg_url,
    print_row,
    ratio,
    scale_named,
    venv_bin,
    write_result,
)
from bench.generate import generate_pg

LOOKBACK_DAYS = 30
# Issue 14: the weekly tune through RQ within 2x the one-statement aggregation (at 3M
# and at 10M signals), and at most 3 ms a tenant beyond it.
TARGET_RATIO = 2.0
TARGET_MS_PER_TENANT = 3.0
# Who the bench's runs say requested them: the runs it deletes before the next one.
REQUESTED_BY = "bench"

RATE_SQL = """
INSERT INTO loop_calibrations (org_id, key, value, sample_size, window_days, computed_at,
                               distinct_users)
SELECT org_id, 'engagement-rate:' || feature, round(count(*) / %(days)s::numeric, 4),
       count(*), %(days)s, %(now)s, count(DISTINCT user_id)
FROM loop_signals
WHERE kind = 'ENGAGE' AND created_at >= %(since)s AND created_at < %(now)s
GROUP BY org_id, feature
ON CONFLICT (org_id, key) DO UPDATE SET
  previous_value = loop_calibrations.value, value = excluded.value,
  sample_size = excluded.sample_size, window_days = excluded.window_days,
  computed_at = excluded.computed_at, distinct_users = excluded.distinct_users
"""

# Both calibration families the product writes, in one statement.
FULL_SQL = """
WITH rate AS (
  SELECT org_id, 'engagement-rate:' || feature AS key,
         round(count(*) / %(days)s::numeric, 4) AS value, count(*) AS n,
         count(DISTINCT user_id) AS users
  FROM loop_signals
  WHERE kind = 'ENGAGE' AND created_at >= %(since)s AND created_at < %(now)s
  GROUP BY org_id, feature
), ratio AS (
  SELECT d.org_id, 'engagement-ratio:' || d.feature AS key,
         round(least(count(r.id), count(*))::numeric / count(*), 4) AS value,
         count(*) AS n, count(DISTINCT d.user_id) AS users
  FROM loop_signals d
  LEFT JOIN loop_signals r
    ON r.kind IN ('ENGAGE', 'DELIVER') AND r.kind = 'ENGAGE'
   AND r.subject_id = d.subject_id AND r.created_at < %(now)s
  WHERE d.kind = 'DELIVER' AND d.created_at >= %(since)s AND d.created_at < %(now)s
  GROUP BY d.org_id, d.feature
)
INSERT INTO loop_calibrations (org_id, key, value, sample_size, window_days, computed_at,
                               distinct_users)
SELECT org_id, key, value, n, %(days)s, %(now)s, users FROM rate
UNION ALL
SELECT org_id, key, value, n, %(days)s, %(now)s, users FROM ratio
ON CONFLICT (org_id, key) DO UPDATE SET
  previous_value = loop_calibrations.value, value = excluded.value,
  sample_size = excluded.sample_size, window_days = excluded.window_days,
  computed_at = excluded.computed_at, distinct_users = excluded.distinct_users
"""


def time_statement(dbname: str, sql: str) -> tuple[float, int]:
    """Seconds for one run of ``sql`` (rolled back) and the rows it upserted."""
    with psycopg.connect(
        pg_url(dbname, "postgresql"), options="-c timezone=UTC -c jit=off"
    ) as conn:
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        conn.rollback()
        params = {"now": now, "since": now - _days(LOOKBACK_DAYS), "days": LOOKBACK_DAYS}
        started = time.perf_counter()
        cur = conn.execute(sql, params)
        elapsed = time.perf_counter() - started
        rows = cur.rowcount
        conn.rollback()
    return elapsed, rows


def _days(n: int) -> Any:
    from datetime import timedelta

    return timedelta(days=n)


class RssSampler:
    """Samples VmRSS of the worker processes and reads their VmHWM (peak) at the end."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak_sampled_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _field(pid: int, name: str) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(name + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            for pid in self.pids:
                self.peak_sampled_kb = max(self.peak_sampled_kb, self._field(pid, "VmRSS"))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        hwm = max((self._field(pid, "VmHWM") for pid in self.pids), default=0)
        rss = max((self._field(pid, "VmRSS") for pid in self.pids), default=0)
        return {
            "peak_rss_mb": round(max(hwm, self.peak_sampled_kb) / 1024, 1),
            "rss_after_mb": round(rss / 1024, 1),
        }


def worker_pid(proc: subprocess.Popen[bytes]) -> int:
    """The Python process of a ``flask rq worker`` (the venv script runs in-process)."""
    return proc.pid


def start_workers(n: int, env: dict[str, str], logdir: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        procs.append(
            subprocess.Popen(
                [
                    venv_bin("flask"),
                    "--app",
                    "wsgi",
                    "rq",
                    "worker",
                    "--name",
                    f"bench-{i}-{os.getpid()}",
                ],
                cwd=ROOT,
                env=env,
                stdout=(logdir / f"worker{i}.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    r = redis.Redis.from_url(BENCH_REDIS_URL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        names = {n.decode() for n in r.smembers("rq:workers")}
        if sum(1 for i in range(n) if any(f"bench-{i}-{os.getpid()}" in x for x in names)) == n:
            return procs
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.2)
    stop_workers(procs)
    raise SystemExit(f"RQ workers did not start; see {logdir}")


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    # Two SIGTERMs: an idle `flask rq worker` treats the first one's clean return from
    # work() as "Redis went away" and restarts its loop (see docs/PERFORMANCE.md); the
    # second (over 1 s later) lands on RQ's force-stop handler in the restart pause and ends it.
    for _ in range(2):
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        time.sleep(1.3)  # RQ ignores a second signal within 1 s
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


TUNE_WRITES = (
    "tune_runs",
    "loop_calibrations",
    "loop_calibration_history",
    "delivery_policies",
    "loop_signal_daily",
)
# What the tune reads, churned by the mark-read part before it (ENGAGE rows and their
# claims written and deleted): vacuumed too, or the first-read probes, index-only on a
# vacuumed table, visit the heap for every row (12.7 s instead of 8.4 s at 10M signals).
# Production's autovacuum, with the settings migration 0005 gives these tables, does this.
TUNE_READS = ("loop_signals", "loop_signal_once")


def product_run(dbname: str, batch_size: int, workers: int, logdir: Path) -> dict[str, Any]:
    """One end-to-end run: enqueue all tenants, wait until every run is terminal."""
    env = app_env(pg_url(dbname), TUNE_BATCH_SIZE=str(batch_size))
    redis.Redis.from_url(BENCH_REDIS_URL).flushdb()  # db 10 is ours alone
    with psycopg.connect(pg_url(dbname, "postgresql"), autocommit=True) as conn:
        # The weekly run: the data set's year of weekly runs stays, the latest of them
        # last Monday's, and only the bench's own runs go. So each measured run heals
        # the chart rollup from the tenant's last run on, as a weekly run does, where
        # an empty tune_runs made every run every tenant's first (the whole window).
        conn.execute("DELETE FROM tune_runs WHERE requested_by = %s", (REQUESTED_BY,))
        # Every run rewrites these tables. Autovacuum (off on the bench machine, on in
        # production) would clear the dead rows of the run before; without it each run
        # would pay for all earlier runs' dead rows, and runs would not be comparable.
        # The tables it reads are vacuumed as well (TUNE_READS).
        for table in (*TUNE_WRITES, *TUNE_READS):
            conn.execute(f"VACUUM ANALYZE {table}")
    procs = start_workers(workers, env, logdir)
    sampler = RssSampler([worker_pid(p) for p in procs])
    try:
        os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")})
        os.environ["TUNE_BATCH_SIZE"] = str(batch_size)
        from dashboard import create_app
        from jobs.runs import request_runs
        from loops.models import RunTrigger

        app = create_app({"LOOPS_ENABLED": "true", "TUNE_BATCH_SIZE": batch_size})
        sampler.start()
        with app.app_context():
            started = time.perf_counter()
            runs = request_runs(None, trigger=RunTrigger.CLI, requested_by=REQUESTED_BY)
            enqueued = time.perf_counter() - started
            run_ids = [r.id for r in runs]
        with psycopg.connect(pg_url(dbname, "postgresql")) as conn:
            while True:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE state IN ('queued', 'running')), "
                    "count(*) FILTER (WHERE state = 'succeeded'), "
                    "count(*) FILTER (WHERE state NOT IN ('queued', 'running', 'succeeded')) "
                    "FROM tune_runs WHERE id = ANY(%s)",
                    (run_ids,),
                ).fetchone()
                conn.commit()
                assert row is not None
                if row[0] == 0:
                    break
                if time.perf_counter() - started > 1800:
                    raise SystemExit("tune runs did not finish within 30 minutes")
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            written = conn.execute(
                "SELECT coalesce(sum(calibrations_written), 0) FROM tune_runs WHERE id = ANY(%s)",
                (run_ids,),
            ).fetchone()
            conn.commit()
        memory = sampler.stop()
        with app.app_context():
            from dashboard.extensions import db

            db.engine.dispose()
    finally:
        stop_workers(procs)
    return {
        "batch_size": batch_size,
        "workers": workers,
        "tenants": len(run_ids),
        "seconds": round(elapsed, 3),
        "enqueue_seconds": round(enqueued, 3),
        "succeeded": int(row[1]),
        "not_succeeded": int(row[2]),
        "calibrations_written": int(written[0]) if written else 0,
        **memory,
    }


def bench(scale: Scale, dbname: str, workers: int, batch_sizes: list[int]) -> dict[str, Any]:
    generate_pg(scale, dbname, force=False)
    logdir = Path("/tmp") / f"el-bench-tune-{os.getpid()}"
    logdir.mkdir(parents=True, exist_ok=True)
    signals = 0
    with psycopg.connect(pg_url(dbname, "postgresql")) as conn:
        row = conn.execute("SELECT count(*) FROM loop_signals").fetchone()
        signals = int(row[0]) if row else 0
    # Warm the caches once for both sides (the first scan reads from disk).
    time_statement(dbname, FULL_SQL)
    product: dict[int, list[dict[str, Any]]] = {b: [] for b in batch_sizes}
    full_times: list[float] = []
    rate_times: list[float] = []
    upserted = 0
    for i in range(scale.runs):
        for b in batch_sizes:
            result = product_run(dbname, b, workers, logdir)
            product[b].append(result)
            print(
                f"  run {i + 1} product batch={b:<3} {result['seconds']:8.2f} s  "
                f"{result['succeeded']}/{result['tenants']} succeeded  "
                f"peak RSS {result['peak_rss_mb']} MB",
                flush=True,
            )
        seconds, upserted = time_statement(dbname, FULL_SQL)
        full_times.append(seconds)
        rate_s, _ = time_statement(dbname, RATE_SQL)
        rate_times.append(rate_s)
        print(
            f"  run {i + 1} baseline  {seconds:8.2f} s ({upserted} rows)  rate-only {rate_s:.2f} s",
            flush=True,
        )
    summary_by_batch = {
        b: {
            "seconds": median([r["seconds"] for r in runs]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        }
        for b, runs in product.items()
    }
    best = min(summary_by_batch, key=lambda b: summary_by_batch[b]["seconds"])
    baseline_s = median(full_times)
    rate_s = median(rate_times)
    default_b = batch_sizes[0]
    print(f"{'tune summary:':<50} {'measured':>12} {'':<6} {'baseline':>12} {'ratio':>8}")
    for b, s in summary_by_batch.items():
        print_row(
            f"tune all tenants, batch={b}, s",
            s["seconds"],
            baseline_s,
            "s",
            f"<= {TARGET_RATIO:g}x",
        )
    print_row("  (vs rate-only statement)", summary_by_batch[default_b]["seconds"], rate_s, "s", "")
    for b, s in summary_by_batch.items():
        print_row(f"worker peak RSS, batch={b}", s["peak_rss_mb"], None, "MB", "<= 150 MB")
    payload = {
        "database": dbname,
        "signals": signals,
        "workers": workers,
        "lookback_days": LOOKBACK_DAYS,
        "baseline": {
            "full_statement_s": baseline_s,
            "full_statement_runs": full_times,
            "rate_only_statement_s": rate_s,
            "rate_only_runs": rate_times,
            "rows_upserted": upserted,
        },
        "product": {str(b): runs for b, runs in product.items()},
        "summary": {
            "by_batch": {str(b): v for b, v in summary_by_batch.items()},
            "default_batch": default_b,
            "best_batch": best,
            "ratio_default": ratio(summary_by_batch[default_b]["seconds"], baseline_s),
            "ratio_best": ratio(summary_by_batch[best]["seconds"], baseline_s),
            "ratio_vs_rate_only": ratio(summary_by_batch[default_b]["seconds"], rate_s),
            "peak_rss_mb": max(s["peak_rss_mb"] for s in summary_by_batch.values()),
            "targets": {"ratio": f"<= {TARGET_RATIO:g}", "peak_rss_mb": "<= 150"},
        },
    }
    write_result("tune", scale, payload)
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="quick")
    parser.add_argument("--db", help="PostgreSQL database (default el_bench_<scale>)")
    parser.add_argument("--workers", type=int, default=2, help="RQ worker processes")
    parser.add_argument(
        "--batch-sizes",
        default="50,10,1",
        help="tenants per RQ job to compare; the first is the product default",
    )
    parser.add_argument("--runs", type=int)
    args = parser.parse_args(argv)
    scale = scale_named(args.scale)
    if args.runs:
        scale = replace(scale, runs=args.runs)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    bench(scale, args.db or database_name(scale), args.workers, batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
