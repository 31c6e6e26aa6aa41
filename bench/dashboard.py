"""Dashboard server time: the overview (first page), the largest tenant's page (with its
calibration history: 26 weeks by default, and a whole year), the history section alone
for another feature of that tenant (what picking a feature loads), and the most delivered
feature's page across every tenant, logged in.

Measured in-process with the Flask test client (server time only: routing, queries,
templates), warm, as the bench viewer. Baseline, same run: the raw SQL each page's
data needs (the rollup and history reads), executed with psycopg on a warm connection —
what the database alone takes for that page. The data set holds a year of weekly runs
in the history (bench/generate.py), so the pages read what a year of tuning leaves.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.common import (
    BENCH_PASSWORD,
    VIEWER_EMAIL,
    Scale,
    app_env,
    database_name,
    median,
    percentile,
    pg_url,
    print_row,
    ratio,
    record_load,
    scale_named,
    wait_for_quiet,
    write_result,
)
from bench.generate import generate_pg

OVERVIEW_SQL = [
    """
    SELECT o.id, o.slug, o.name, coalesce(v.volume, 0),
           (SELECT max(r.id) FROM tune_runs r WHERE r.org_id = o.id)
    FROM organizations o
    LEFT JOIN (SELECT org_id, sum(count) AS volume FROM loop_signal_daily
               WHERE org_id = ANY(%(first_page)s) AND kind = 'ENGAGE' AND day >= %(since)s
               GROUP BY org_id) v
      ON v.org_id = o.id
    WHERE o.id = ANY(%(first_page)s)
    ORDER BY o.name, o.id
    """,
    """
    SELECT org_id, day, sum(count) FROM loop_signal_daily
    WHERE org_id = ANY(%(first_page)s) AND kind = 'ENGAGE' AND day >= %(since)s
    GROUP BY org_id, day
    """,
]
TENANT_SQL = [
    """
    SELECT kind, feature, day, count FROM loop_signal_daily
    WHERE org_id = %(org)s AND day >= %(since)s ORDER BY day
    """,
    "SELECT * FROM loop_calibrations WHERE org_id = %(org)s ORDER BY key",
    "SELECT * FROM tune_runs WHERE org_id = %(org)s ORDER BY id DESC LIMIT 20",
    """
    SELECT * FROM loop_calibration_history
    WHERE org_id = %(org)s AND key = ANY(%(trend_keys)s) AND computed_at >= %(history_since)s
    ORDER BY key, computed_at
    """,
]
# Picking a feature: its keys among the tenant's calibrations, then its history.
TRENDS_SQL = [
    "SELECT key, value FROM loop_calibrations WHERE org_id = %(org)s",
    TENANT_SQL[-1],
]
FEATURE_SQL = [
    """
    SELECT org_id, value, sample_size, engaged, interval_low, interval_high, previous_value,
           computed_at
    FROM loop_calibrations WHERE key = %(ratio_key)s
    """,
    """
    SELECT o.id, o.slug, o.name, r.*, c.*
    FROM organizations o
    LEFT JOIN loop_calibrations r ON r.org_id = o.id AND r.key = %(ratio_key)s
    LEFT JOIN loop_calibrations c ON c.org_id = o.id AND c.key = %(rate_key)s
    WHERE r.id IS NOT NULL OR c.id IS NOT NULL
    ORDER BY r.value DESC NULLS LAST, o.name, o.id LIMIT 25
    """,
    """
    SELECT date(computed_at), sum(engaged), sum(sample_size), count(engaged)
    FROM loop_calibration_history
    WHERE key = %(ratio_key)s AND computed_at >= %(history_since)s GROUP BY 1
    """,
]


def _keys(feature: str) -> list[str]:
    return [f"engagement-ratio:{feature}", f"engagement-rate:{feature}"]


def _login(client: Any) -> None:
    page = client.get("/login").get_data(as_text=True)
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', page
    )
    form = {"email": VIEWER_EMAIL, "password": BENCH_PASSWORD}
    if match:
        form["csrf_token"] = match.group(1)
    response = client.post("/login", data=form)
    if response.status_code not in (302, 303):
        raise SystemExit(f"bench viewer login failed: HTTP {response.status_code}")


def _sample(fn: Any, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def _stats(times: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(median(times), 2),
        "p95_ms": round(percentile(times, 95), 2),
        "max_ms": round(max(times), 2),
        "samples": len(times),
    }


def bench(scale: Scale, dbname: str, load: dict[str, Any] | None = None) -> dict[str, Any]:
    generate_pg(scale, dbname, force=False)
    env = app_env(pg_url(dbname))
    for key in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "LOOPS_ENABLED", "LOG_LEVEL"):
        os.environ[key] = env[key]
    from dashboard import create_app

    app = create_app()
    client = app.test_client()
    _login(client)
    with psycopg.connect(pg_url(dbname, "postgresql"), options="-c timezone=UTC") as conn:
        row = conn.execute(
            "SELECT o.slug, o.id FROM organizations o JOIN loop_signal_daily d ON d.org_id = o.id "
            "GROUP BY o.id ORDER BY sum(d.count) DESC LIMIT 1"
        ).fetchone()
        assert row is not None, "no tenants: generate the data set first"
        slug, org_id = row
        top = conn.execute(
            "SELECT key FROM loop_calibrations WHERE key LIKE 'engagement-ratio:%%' "
            "GROUP BY key ORDER BY sum(sample_size) DESC LIMIT 1"
        ).fetchone()
        assert top is not None, "no ratio calibrations: generate the data set first"
        feature = str(top[0]).partition(":")[2]
        # The tenant page charts its busiest feature's history; picking another loads the
        # section alone (the most delivered feature, or the next busiest if that is it).
        rates = [
            str(r[0]).partition(":")[2]
            for r in conn.execute(
                "SELECT key FROM loop_calibrations WHERE org_id = %s "
                "AND key LIKE 'engagement-rate:%%' ORDER BY value DESC, key",
                (org_id,),
            )
        ]
        assert rates, "no rate calibrations: generate the data set first"
        shown = rates[0]
        picked = feature if feature != shown else (rates[1:] or rates)[0]
        first_page = [
            r[0] for r in conn.execute("SELECT id FROM organizations ORDER BY name, id LIMIT 25")
        ]
        conn.commit()
        today = datetime.now(UTC).date()
        params = {
            "since": today - timedelta(days=29),
            "first_page": first_page,
            "org": org_id,
        }
        now = datetime.now(UTC)
        tenant_params = params | {
            "since": today - timedelta(days=89),
            "history_since": now - timedelta(weeks=26 + 2),
            "trend_keys": _keys(shown),
        }
        year_params = tenant_params | {"history_since": now - timedelta(weeks=52 + 2)}
        picked_params = year_params | {"trend_keys": _keys(picked)}
        feature_params = {
            "ratio_key": f"engagement-ratio:{feature}",
            "rate_key": f"engagement-rate:{feature}",
            "history_since": now - timedelta(weeks=26),
        }

        def get(path: str, htmx: bool = False) -> None:
            response = client.get(path, headers={"HX-Request": "true"} if htmx else {})
            if response.status_code != 200:
                raise SystemExit(f"GET {path}: HTTP {response.status_code}")

        def raw(sqls: list[str], p: dict[str, Any]) -> None:
            for sql in sqls:
                conn.execute(sql, p).fetchall()
            conn.commit()

        pages = {
            "overview": (lambda: get("/"), lambda: raw(OVERVIEW_SQL, params)),
            "tenant": (lambda: get(f"/tenants/{slug}"), lambda: raw(TENANT_SQL, tenant_params)),
            "tenant 52 weeks": (
                lambda: get(f"/tenants/{slug}?weeks=52"),
                lambda: raw(TENANT_SQL, year_params),
            ),
            "tenant trends fragment 52 weeks": (
                lambda: get(f"/tenants/{slug}/trends?feature={picked}&weeks=52", htmx=True),
                lambda: raw(TRENDS_SQL, picked_params),
            ),
            "feature": (
                lambda: get(f"/features/{feature}"),
                lambda: raw(FEATURE_SQL, feature_params),
            ),
        }
        results: dict[str, Any] = {}
        for name, (page_fn, raw_fn) in pages.items():
            _sample(page_fn, 5)  # warm
            _sample(raw_fn, 5)
            page_times: list[float] = []
            raw_times: list[float] = []
            # Interleaved, so a noisy neighbour hits both sides alike.
            for _ in range(scale.page_samples):
                page_times += _sample(page_fn, 1)
                raw_times += _sample(raw_fn, 1)
            results[name] = {"page": _stats(page_times), "raw_sql": _stats(raw_times)}
    print(
        f"dashboard summary (largest tenant: {slug}, picked: {picked}, feature: {feature}):"
        "    measured     baseline    ratio"
    )
    for name, r in results.items():
        print_row(f"{name} p50", r["page"]["p50_ms"], r["raw_sql"]["p50_ms"], "ms", "<= 100 ms")
        print_row(f"{name} p95", r["page"]["p95_ms"], r["raw_sql"]["p95_ms"], "ms", "<= 250 ms")
    payload = {
        "database": dbname,
        "tenant": slug,
        "tenant_feature_shown": shown,
        "tenant_feature_picked": picked,
        "feature": feature,
        "load": load or record_load("dashboard"),
        "results": results,
        "summary": {
            name: {
                "p50_ms": r["page"]["p50_ms"],
                "p95_ms": r["page"]["p95_ms"],
                "p50_ratio_vs_raw_sql": ratio(r["page"]["p50_ms"], r["raw_sql"]["p50_ms"]),
            }
            for name, r in results.items()
        },
        "targets": {"p50_ms": "<= 100", "p95_ms": "<= 250"},
    }
    write_result("dashboard", scale, payload)
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="quick")
    parser.add_argument("--db", help="PostgreSQL database (default el_bench_<scale>)")
    parser.add_argument(
        "--force", action="store_true", help="start even on a busy machine (figures not valid)"
    )
    args = parser.parse_args(argv)
    scale = scale_named(args.scale)
    load = wait_for_quiet("dashboard", force=args.force)
    bench(scale, args.db or database_name(scale), load=load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
