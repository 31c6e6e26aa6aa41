"""SQLite, the zero-set-up default: tune all tenants in-process, and mark-read under 16 clients.

Tune: ``jobs.runs.run_in_process`` for every tenant (what ``flask --app wsgi tune run
--wait`` does), timed; baseline: one raw SQL statement computing and upserting the
same calibrations (rolled back). Mark-read: the product under the production gunicorn
config on the SQLite file, wrk with 16 connections walking distinct first reads; the
target is zero errors and no "database is locked" in the server log. The raw WSGI
baseline is PostgreSQL-only, so this figure has no ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    Scale,
    app_env,
    bench_token,
    median,
    print_row,
    ratio,
    scale_named,
    write_result,
)
from bench.generate import generate_sqlite, sqlite_path
from bench.markread import run_wrk, start_server

PORT = int(os.environ.get("BENCH_SQLITE_PORT", "18603"))
CONNECTIONS = 16

RAW_SQL = """
WITH rate AS (
  SELECT org_id, 'engagement-rate:' || feature AS key,
         round(count(*) * 1.0 / :days, 4) AS value, count(*) AS n,
         count(DISTINCT user_id) AS users
  FROM loop_signals
  WHERE kind = 'ENGAGE' AND created_at >= :since AND created_at < :now
  GROUP BY org_id, feature
), ratio AS (
  SELECT d.org_id, 'engagement-ratio:' || d.feature AS key,
         round(min(count(r.id), count(*)) * 1.0 / count(*), 4) AS value,
         count(*) AS n, count(DISTINCT d.user_id) AS users
  FROM loop_signals d
  LEFT JOIN loop_signals r
    ON r.kind IN ('ENGAGE', 'DELIVER') AND r.kind = 'ENGAGE'
   AND r.subject_id = d.subject_id AND r.created_at < :now
  WHERE d.kind = 'DELIVER' AND d.created_at >= :since AND d.created_at < :now
  GROUP BY d.org_id, d.feature
)
INSERT INTO loop_calibrations (org_id, key, value, sample_size, window_days, computed_at,
                               distinct_users)
SELECT org_id, key, value, n, :days, :now, users FROM rate WHERE true
UNION ALL
SELECT org_id, key, value, n, :days, :now, users FROM ratio WHERE true
ON CONFLICT (org_id, key) DO UPDATE SET
  previous_value = value, value = excluded.value, sample_size = excluded.sample_size,
  window_days = excluded.window_days, computed_at = excluded.computed_at,
  distinct_users = excluded.distinct_users
"""


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def time_raw(path: Path) -> float:
    conn = sqlite3.connect(path)
    now = datetime.now(UTC)
    params = {"now": _ts(now), "since": _ts(now - timedelta(days=30)), "days": 30}
    started = time.perf_counter()
    conn.execute(RAW_SQL, params)
    elapsed = time.perf_counter() - started
    conn.rollback()
    conn.close()
    return elapsed


# Who requested the unmeasured run that stands for last week's (see time_product_tune).
LAST_WEEK = "bench-last-week"


def time_product_tune(path: Path) -> dict[str, Any]:
    env = app_env(f"sqlite:///{path}")
    for key in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "LOOPS_ENABLED", "LOG_LEVEL"):
        os.environ[key] = env[key]
    from sqlalchemy import select, text

    from dashboard import create_app
    from dashboard.extensions import db
    from jobs.runs import run_in_process
    from loops.models import RunTrigger, TuneRun

    app = create_app()
    with app.app_context():
        # The weekly run: last week's run (below) stays, so each tenant recounts its
        # chart days since then, as a weekly run does; the bench's own runs go.
        db.session.execute(text("DELETE FROM tune_runs WHERE requested_by = 'bench'"))
        db.session.commit()
        if not db.session.execute(
            text("SELECT count(*) FROM tune_runs WHERE requested_by = :by"), {"by": LAST_WEEK}
        ).scalar():
            # The SQLite data set has no run history: one unmeasured run, moved a week back.
            run_in_process(None, trigger=RunTrigger.CLI, requested_by=LAST_WEEK)
            week = timedelta(days=7)
            for run in db.session.execute(
                select(TuneRun).where(TuneRun.requested_by == LAST_WEEK)
            ).scalars():
                run.enqueued_at -= week
                for column in ("started_at", "finished_at", "heartbeat_at"):
                    if getattr(run, column) is not None:
                        setattr(run, column, getattr(run, column) - week)
            db.session.commit()
        started = time.perf_counter()
        results, _ = run_in_process(None, trigger=RunTrigger.CLI, requested_by="bench")
        elapsed = time.perf_counter() - started
        db.session.remove()
        db.engine.dispose()
    return {
        "seconds": round(elapsed, 3),
        "tenants": len(results),
        "succeeded": sum(1 for r in results if r.state == "succeeded"),
        "calibrations_written": sum(r.calibrations_written for r in results),
    }


def _reset_and_pairs(path: Path, pairs: Path) -> int:
    conn = sqlite3.connect(path, timeout=30)
    users = [
        r[0]
        for r in conn.execute(
            "SELECT t.user_id FROM api_tokens t JOIN users u ON u.id = t.user_id "
            "WHERE t.name = 'bench' AND u.role = 'member'"
        )
    ]
    marks = ",".join("?" * len(users))
    with conn:
        conn.execute(
            "DELETE FROM loop_signals WHERE kind = 'ENGAGE' AND subject_id IN (SELECT id FROM "
            f"notifications WHERE user_id IN ({marks}) AND first_read_at IS NOT NULL)",
            users,
        )
        conn.execute(
            "UPDATE notifications SET read_at = NULL, first_read_at = NULL "
            f"WHERE user_id IN ({marks})",
            users,
        )
    rows = conn.execute(
        f"SELECT id, user_id FROM notifications WHERE user_id IN ({marks})", users
    ).fetchall()
    conn.close()
    random.Random(7).shuffle(rows)
    pairs.write_text("".join(f"{nid} {bench_token(uid)}\n" for nid, uid in rows))
    return len(rows)


def markread(path: Path, scale: Scale) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="el-bench-sqlite-"))
    pairs = workdir / "pairs.txt"
    walk = _reset_and_pairs(path, pairs)
    log = workdir / "server.log"
    server = start_server("product-sqlite", "wsgi:app", PORT, app_env(f"sqlite:///{path}"), log)
    try:
        run_wrk(server, pairs, scale.warmup_s, CONNECTIONS)
        _reset_and_pairs(path, pairs)
        result = run_wrk(server, pairs, scale.duration_s, CONNECTIONS)
    finally:
        server.stop()
    text = log.read_text(errors="replace")
    result["database_locked_in_log"] = text.count("database is locked")
    result["tracebacks_in_log"] = text.count("Traceback")
    result["walk_size"] = walk
    return result


def bench(scale: Scale) -> dict[str, Any]:
    path = sqlite_path(scale)
    generate_sqlite(scale, path, force=False)
    conn = sqlite3.connect(path)
    signals = conn.execute("SELECT count(*) FROM loop_signals").fetchone()[0]
    tenants = conn.execute("SELECT count(*) FROM organizations").fetchone()[0]
    conn.close()
    time_raw(path)  # warm the page cache for both sides
    product_runs: list[dict[str, Any]] = []
    raw_runs: list[float] = []
    for i in range(max(1, scale.runs)):
        product_runs.append(time_product_tune(path))
        raw_runs.append(time_raw(path))
        print(
            f"  run {i + 1} tune product {product_runs[-1]['seconds']:.2f} s "
            f"({product_runs[-1]['succeeded']}/{product_runs[-1]['tenants']} succeeded), "
            f"raw statement {raw_runs[-1]:.2f} s",
            flush=True,
        )
    tune_s = median([r["seconds"] for r in product_runs])
    raw_s = median(raw_runs)
    mr = markread(path, scale)
    errors = mr["non200"] + sum(mr["errors"].values()) + mr["database_locked_in_log"]
    print(f"sqlite summary ({tenants} tenants, {signals:,} signals):  measured   baseline  ratio")
    print_row("tune all tenants, s", tune_s, raw_s, "s", "<= 2 s")
    print_row(f"mark-read {CONNECTIONS} clients, req/s", mr["rps"], None, "req/s", "")
    print_row("mark-read errors (non-200/socket/locked)", errors, None, "", "0")
    payload = {
        "database": str(path),
        "signals": signals,
        "tenants": tenants,
        "tune": {"product_runs": product_runs, "raw_statement_runs": raw_runs},
        "markread": mr,
        "summary": {
            "tune_s": tune_s,
            "raw_statement_s": raw_s,
            "tune_ratio": ratio(tune_s, raw_s),
            "markread_rps": mr["rps"],
            "markread_p99_ms": mr["latency_us"]["p99"] / 1000,
            "markread_errors": errors,
            "targets": {"tune_s": "<= 2", "markread_errors": "0"},
        },
    }
    write_result("sqlite", scale, payload)
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="sqlite")
    parser.add_argument("--duration", type=int, help="seconds of mark-read load")
    args = parser.parse_args(argv)
    scale = scale_named(args.scale)
    if args.duration:
        scale = replace(scale, duration_s=args.duration)
    bench(scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
