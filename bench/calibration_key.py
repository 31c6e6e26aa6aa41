"""A feature's reads of loop_calibrations by key, with and without migration 0010's index.

The feature page reads every tenant's calibration of one feature (its ratio and rate
keys) and, first, whether any tenant has one (a page for an unknown feature is a 404).
loop_calibrations holds tenants x features x 2 rows; its unique (org_id, key) index
leads with the tenant. This builds the table at a few sizes in a scratch database
(el_bench_calibration_key, migrated to the product's schema, dropped at the end),
times both reads as the page issues them (psycopg, unprepared, median of ``--runs``)
without the index and with it, and prints the figures and their ratios::

    python -m bench.calibration_key [--runs 60] [--force]

Needs PostgreSQL (BENCH_PG_SERVER); takes about a minute.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from typing import Any

import psycopg

from bench.common import ROOT, app_env, pg_url, venv_bin, wait_for_quiet

DBNAME = "el_bench_calibration_key"
INDEX = "ix_loop_calibrations_key"
SIZES = ((1_000, 12), (10_000, 12), (10_000, 50))  # (tenants, features)
CURRENT = (
    "SELECT org_id, key, value, sample_size, engaged, interval_low, interval_high, "
    "previous_value, computed_at FROM loop_calibrations WHERE key IN (%s, %s)"
)
EXISTS = "SELECT id FROM loop_calibrations WHERE key IN (%s, %s) LIMIT 1"
SHOWN = ("engagement-ratio:f3", "engagement-rate:f3")
UNKNOWN = ("engagement-ratio:none", "engagement-rate:none")


def _create_schema() -> None:
    with psycopg.connect(pg_url("postgres", "postgresql"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DBNAME}")
        conn.execute(f"CREATE DATABASE {DBNAME}")
    subprocess.run(
        [venv_bin("flask"), "--app", "wsgi", "db", "upgrade"],
        cwd=ROOT,
        env=app_env(pg_url(DBNAME)),
        check=True,
        capture_output=True,
    )


def _fill(conn: psycopg.Connection[Any], tenants: int, features: int) -> None:
    """Tenants with a rate and a ratio of each feature, rows of one key spread over the
    table as the weekly runs leave them."""
    conn.execute("TRUNCATE organizations CASCADE")
    conn.execute(
        "INSERT INTO organizations (id, slug, name, created_at) "
        "SELECT g, 't' || g, 'Tenant ' || g, now() FROM generate_series(1, %s) g",
        (tenants,),
    )
    conn.execute(
        "INSERT INTO loop_calibrations (org_id, key, value, sample_size, window_days, "
        "computed_at, engaged, interval_low, interval_high) "
        "SELECT o, k || ':f' || f, random(), 500, 30, now(), 250, 0.4, 0.6 "
        "FROM generate_series(1, %s) o, generate_series(1, %s) f, "
        "unnest(ARRAY['engagement-rate', 'engagement-ratio']) k",
        (tenants, features),
    )
    conn.execute("VACUUM ANALYZE loop_calibrations")


def _median_ms(conn: psycopg.Connection[Any], sql: str, args: tuple[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        conn.execute(sql, args, prepare=False).fetchall()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _measure(conn: psycopg.Connection[Any], runs: int) -> tuple[float, float]:
    return _median_ms(conn, CURRENT, SHOWN, runs), _median_ms(conn, EXISTS, UNKNOWN, runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--force", action="store_true", help="start on a busy machine")
    args = parser.parse_args(argv)
    load = wait_for_quiet("calibration_key", force=args.force)
    print(f"load average at start: {load['load_avg']}")
    _create_schema()
    try:
        with psycopg.connect(pg_url(DBNAME, "postgresql"), autocommit=True) as conn:
            for tenants, features in SIZES:
                _fill(conn, tenants, features)
                conn.execute(f"DROP INDEX {INDEX}")
                without = _measure(conn, args.runs)
                conn.execute(f"CREATE INDEX {INDEX} ON loop_calibrations (key)")
                conn.execute("ANALYZE loop_calibrations")
                indexed = _measure(conn, args.runs)
                rows = tenants * features * 2
                print(
                    f"{tenants:,} tenants x {features} features ({rows:,} rows): "
                    f"a feature's {tenants * 2:,} calibrations {without[0]:.2f} -> "
                    f"{indexed[0]:.2f} ms ({indexed[0] / without[0]:.2f}x); "
                    f"an unknown feature {without[1]:.2f} -> {indexed[1]:.2f} ms "
                    f"({indexed[1] / without[1]:.3f}x)",
                    flush=True,
                )
    finally:
        with psycopg.connect(pg_url("postgres", "postgresql"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DBNAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
