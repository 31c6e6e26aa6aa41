"""Run the whole benchmark suite at one scale and print the summary table (``make bench``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from bench import dashboard, markread, sqlite_bench, tune
from bench.common import (
    RESULTS_DIR,
    database_name,
    machine,
    scale_named,
    wait_for_quiet,
    write_result,
)
from bench.generate import generate_pg

# Per suite scale: the SQLite scale, the RQ batch sizes compared, and whether the
# 1M-signal point of the tune is measured too (to show how it scales to 10M).
PLANS: dict[str, dict[str, Any]] = {
    # The tune's ratio is checked at 10M and again at 3M ("medium"), where the fixed
    # cost per tenant weighs most.
    "full": {"sqlite": "sqlite", "batches": [50, 1], "scaling": "medium"},
    "medium": {"sqlite": "sqlite", "batches": [50, 1], "scaling": None},
    "signals1m": {"sqlite": "sqlite", "batches": [50, 1], "scaling": None},
    "quick": {"sqlite": "quick", "batches": [50, 1], "scaling": None},
    "smoke": {"sqlite": "smoke", "batches": [50, 1], "scaling": None},
}


def _row(
    name: str, measured: float, baseline: float | None, unit: str, target: str, ok: bool | None
) -> dict[str, Any]:
    return {
        "figure": name,
        "measured": measured,
        "baseline": baseline,
        "ratio": round(measured / baseline, 3) if baseline else None,
        "unit": unit,
        "target": target,
        "met": ok,
    }


def markread_rows(mr: dict[str, Any]) -> list[dict[str, Any]]:
    """Mark-read: the product against each baseline, and the baselines against the reference."""
    rows: list[dict[str, Any]] = []
    ref = markread.REFERENCE
    target = markread.TARGETS["rps_ratio"]
    if ref not in mr["results"]["first"]:
        # A result from before the two-statement baseline: product vs the five-round-trip one.
        for mode, label in (("first", "first reads"), ("repeat", "repeat reads")):
            figures = mr["results"][mode]
            rows.append(
                _row(
                    f"mark-read {label} vs five_round_trip (req/s)",
                    figures["product"]["rps"],
                    figures["baseline"]["rps"],
                    "req/s",
                    "(older result)",
                    None,
                )
            )
        return rows
    for mode, label in (("first", "first reads"), ("repeat", "repeat reads")):
        figures = mr["results"][mode]
        product = figures["product"]["rps"]
        for name in markread.SIDES:
            if name == "product":
                continue
            main = name == ref
            rows.append(
                _row(
                    f"mark-read {label} vs {name} (req/s)",
                    product,
                    figures[name]["rps"],
                    "req/s",
                    f">= {target}x baseline" if main else "(comparison)",
                    product / figures[name]["rps"] >= target if main else None,
                )
            )
        for name in ("five_round_trip", "minimal_flask"):
            rows.append(
                _row(
                    f"mark-read {label}: {name} vs {ref} (req/s)",
                    figures[name]["rps"],
                    figures[ref]["rps"],
                    "req/s",
                    "(comparison)",
                    None,
                )
            )
    ol = mr["results"]["open_loop"]
    p99, base99 = ol["product"]["p99_ms"], ol[ref]["p99_ms"]
    rows.append(
        _row(
            f"mark-read open loop {ol['rate_rps']:.0f} req/s p50 (ms)",
            ol["product"]["p50_ms"],
            ol[ref]["p50_ms"],
            "ms",
            "(comparison)",
            None,
        )
    )
    rows.append(
        _row(
            f"mark-read open loop {ol['rate_rps']:.0f} req/s p99 (ms)",
            p99,
            base99,
            "ms",
            f"<= {markread.TARGETS['p99_ratio']}x and <= {markread.TARGETS['p99_ms']:g} ms",
            p99 <= markread.TARGETS["p99_ratio"] * base99 and p99 <= markread.TARGETS["p99_ms"],
        )
    )
    return rows


def tune_rows(tn: dict[str, Any]) -> list[dict[str, Any]]:
    """The tune against the one-statement aggregation, and its cost per tenant beyond it."""
    s = tn["summary"]
    base = tn["baseline"]["full_statement_s"]
    at = f"{tn['signals'] / 1e6:.0f}M signals"
    rows = []
    for b, v in s["by_batch"].items():
        # The targets are for the product's default batch size; the others are the
        # comparison (one job per tenant vs per batch).
        default = b == str(s["default_batch"])
        rows.append(
            _row(
                f"tune all tenants via RQ at {at}, batch={b} (s)",
                v["seconds"],
                base,
                "s",
                f"<= {tune.TARGET_RATIO:g}x baseline" if default else "(comparison)",
                v["seconds"] <= tune.TARGET_RATIO * base if default else None,
            )
        )
    default = s["by_batch"][str(s["default_batch"])]["seconds"]
    tenants = max(1, int(tn["product"][str(s["default_batch"])][0]["tenants"]))
    per_tenant = (default - base) / tenants * 1000
    rows.append(
        _row(
            f"tune cost per tenant beyond the aggregation at {at} (ms)",
            round(per_tenant, 2),
            None,
            "ms",
            f"<= {tune.TARGET_MS_PER_TENANT:g} ms",
            per_tenant <= tune.TARGET_MS_PER_TENANT,
        )
    )
    return rows


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    mr = results.get("markread")
    if mr:
        rows.extend(markread_rows(mr))
    tn = results.get("tune")
    if tn:
        s = tn["summary"]
        rows.extend(tune_rows(tn))
        rows.append(
            _row(
                "tune worker peak RSS (MB)",
                s["peak_rss_mb"],
                None,
                "MB",
                "<= 150 MB",
                s["peak_rss_mb"] <= 150,
            )
        )
    sc = results.get("tune_scaling")
    if sc:
        rows.extend(tune_rows(sc))
        rows.append(
            _row(
                f"tune worker peak RSS at {sc['signals']:,} signals (MB)",
                sc["summary"]["peak_rss_mb"],
                None,
                "MB",
                "flat vs 10M",
                None,
            )
        )
    db = results.get("dashboard")
    if db:
        for name, r in db["results"].items():
            rows.append(
                _row(
                    f"dashboard {name} p50 (ms)",
                    r["page"]["p50_ms"],
                    r["raw_sql"]["p50_ms"],
                    "ms",
                    "<= 100 ms",
                    r["page"]["p50_ms"] <= 100,
                )
            )
            rows.append(
                _row(
                    f"dashboard {name} p95 (ms)",
                    r["page"]["p95_ms"],
                    r["raw_sql"]["p95_ms"],
                    "ms",
                    "<= 250 ms",
                    r["page"]["p95_ms"] <= 250,
                )
            )
    sq = results.get("sqlite")
    if sq:
        s = sq["summary"]
        rows.append(
            _row(
                f"SQLite tune, {sq['tenants']} tenants, {sq['signals']:,} signals (s)",
                s["tune_s"],
                s["raw_statement_s"],
                "s",
                "<= 2 s",
                s["tune_s"] <= 2,
            )
        )
        rows.append(
            _row(
                "SQLite mark-read, 16 clients: errors",
                s["markread_errors"],
                None,
                "",
                "0 (no 'database is locked')",
                s["markread_errors"] == 0,
            )
        )
        rows.append(
            _row("SQLite mark-read, 16 clients (req/s)", s["markread_rps"], None, "req/s", "", None)
        )
    return rows


def load_results(scale: str, plan: dict[str, Any]) -> dict[str, Any]:
    """The latest JSON result of each part at this scale (and its SQLite/scaling runs)."""
    files = {
        "markread": f"markread-{scale}",
        "tune": f"tune-{scale}",
        "dashboard": f"dashboard-{scale}",
        "sqlite": f"sqlite-{plan['sqlite']}",
    }
    if plan["scaling"]:
        files["tune_scaling"] = f"tune-{plan['scaling']}"
    out = {}
    for part, name in files.items():
        path = RESULTS_DIR / f"{name}.json"
        if path.exists():
            out[part] = json.loads(path.read_text())
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    print(f"{'figure':<64} {'measured':>10} {'baseline':>10} {'ratio':>7}  {'target':<26} met")
    for r in rows:
        base = f"{r['baseline']:.2f}" if r["baseline"] is not None else ""
        rat = f"{r['ratio']:.3f}" if r["ratio"] is not None else ""
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        print(
            f"{r['figure']:<64} {r['measured']:>10.2f} {base:>10} {rat:>7}  {r['target']:<26} {met}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="quick", choices=sorted(PLANS))
    parser.add_argument(
        "--only", default="markread,tune,dashboard,sqlite", help="comma-separated parts to run"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="start each part even on a busy machine (CI smoke; the figures are then not valid)",
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="print the table from the JSON results already in bench/results",
    )
    args = parser.parse_args(argv)
    scale = scale_named(args.scale)
    plan = PLANS[args.scale]
    if args.summary_only:
        # Rebuilt from the part files, so a part re-run alone shows up in the summary too.
        rows = summary_rows(load_results(args.scale, plan))
        print_table(rows)
        write_result("summary", scale, {"rows": rows, "rebuilt_from_parts": True})
        return 0
    parts = set(args.only.split(","))
    dbname = database_name(scale)
    started = time.perf_counter()
    print(f"bench: scale={scale.name} database={dbname} machine={machine()}", flush=True)
    generate_pg(scale, dbname, force=False)
    results: dict[str, Any] = {}
    # The load average before each part (each waits for a quiet machine; --force: not).
    load: dict[str, Any] = {}
    if "markread" in parts:
        print("== mark-read ==", flush=True)
        results["markread"] = markread.bench(scale, dbname, force=args.force)
        load["markread"] = results["markread"]["load"]["start"]
    # The dashboard before the tune: the tune writes a run, calibrations and history
    # rows for every tenant, and the pages are measured on the data set as generated.
    if "dashboard" in parts:
        print("== dashboard ==", flush=True)
        load["dashboard"] = wait_for_quiet("dashboard", force=args.force)
        results["dashboard"] = dashboard.bench(scale, dbname)
    if "tune" in parts:
        print("== tune ==", flush=True)
        load["tune"] = wait_for_quiet("tune", force=args.force)
        results["tune"] = tune.bench(scale, dbname, 2, plan["batches"])
        if plan["scaling"]:
            small = scale_named(plan["scaling"])
            print(f"== tune at {small.signals:,} signals ==", flush=True)
            results["tune_scaling"] = tune.bench(
                small, database_name(small), 2, plan["batches"][:1]
            )
    if "sqlite" in parts:
        print("== SQLite ==", flush=True)
        load["sqlite"] = wait_for_quiet("SQLite", force=args.force)
        results["sqlite"] = sqlite_bench.bench(scale_named(plan["sqlite"]))
    rows = summary_rows(results)
    print_table(rows)
    valid = all(record["quiet"] for record in load.values())
    if not valid:
        print("bench: a part started on a busy machine (--force): these figures are NOT valid")
    write_result(
        "summary",
        scale,
        {
            "rows": rows,
            "seconds": round(time.perf_counter() - started, 1),
            "parts": sorted(parts),
            "load": load,
            "quiet_machine": valid,
        },
    )
    print(f"bench: done in {time.perf_counter() - started:.0f}s; results in {RESULTS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
