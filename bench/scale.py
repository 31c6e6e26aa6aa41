"""Cost grows with the window, not with history (issue 14): the same benches at 10M signals
over 60 days and at 50M over 400 days, then a month's prune under mark-read load.

Two data sets side by side (``make bench-scale``): ``full`` (1,000 tenants, 10M signals, 60
days) and ``history`` (the same tenants, users and notifications, 50M signals over 400 days,
growing 80 % over the period so its last 30 days hold as many signals a day as full's: the
tune's window is the same size, only the history differs). Each is generated if missing.
The same code measures both, alternating from round to round:

- the weekly tune of every tenant through RQ (``bench.tune.product_run``: batch 50, two
  workers, from the enqueue until every run is terminal), after one unmeasured run;
- mark-read, the product alone (``bench.markread``: gunicorn with the production config,
  wrk walking distinct notifications), first reads and repeat reads, req/s;
- the dashboard pages (``bench.dashboard``: overview, largest tenant, its year, the most
  delivered feature), p50 and p95.

Target: each figure at 50M costs at most 1.3 x the same at 10M (a time at most 1.3 x, a
throughput at least 1 / 1.3 of it). Each figure is the median of ``scale.runs`` rounds.

Then the prune, on the ``history`` data set: the product's own command (``flask --app wsgi
signals prune``, SIGNAL_RETENTION_DAYS chosen so exactly one whole month expires) while wrk
drives mark-read first reads with 32 connections (``bench/prune_load.lua`` logs every
answer with its send time). Reported: the prune's wall time, the rows and partitions it
dropped, and the mark-read errors (non-2xx and socket errors) and latency during the prune
against an equal window just before it. The oldest month partition is usually a partial
month (the data start mid-month): it is pruned first, unmeasured, so the measured prune
drops a whole month, as the daily job does month after month.

The prune is destructive, so the data set is put back afterwards: the dropped months are
regenerated from the seed (``bench.generate.restore_signals``: same rows, same ids, their
claims and daily counts; a month of the history set is ~2.4M signals, where regenerating
the whole set would be 50M) and the prune's record is removed. While the months are
missing the data set's fingerprint is set aside, so an interrupted run leaves it stale and
the next run regenerates it.

Every part waits for a quiet machine (``bench.common.wait_for_quiet``; ``--force`` starts
anyway and marks the figures not valid). Results: ``bench/results/scale-<history>.json``
(the dashboard part also writes ``dashboard-scale-<scale>.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import dashboard, markread, tune
from bench.common import (
    ROOT,
    Scale,
    app_env,
    database_name,
    machine,
    median,
    percentile,
    pg_url,
    record_load,
    scale_named,
    venv_bin,
    wait_for_quiet,
    window_share,
    write_result,
)
from bench.generate import bench_meta, build_world, generate_pg, restore_signals
from loops.partitions import DEFAULT_PARTITION, add_months, month_start, partition_name

SCALES = ("full", "history")
PARTS = ("markread", "dashboard", "tune", "prune")
SMOKE_SCALES = ("smoke", "history-smoke")
TARGET = 1.3  # 50M at most 1.3 x the cost of 10M
TUNE_BATCH = 50
TUNE_WORKERS = 2
MARKREAD_SECONDS = 15  # each measured mark-read run (shorter than bench.markread's 30 s)
PRUNE_LUA = ROOT / "bench" / "prune_load.lua"
PRUNE_CONNECTIONS = 32  # the "prune while 32 clients read"
PRUNE_POSTROLL_S = 3.0
PRUNE_LIMIT_S = 60.0  # "seconds, not minutes"


def _gib(n: int) -> float:
    return round(n / 2**30, 2)


# --- the data sets -------------------------------------------------------------------


def prepare(scale: Scale) -> dict[str, Any]:
    """Generate the data set if missing; what it holds and what generating it took."""
    dbname = database_name(scale)
    generated = generate_pg(scale, dbname, force=False)
    meta = bench_meta(dbname)
    with psycopg.connect(pg_url(dbname, "postgresql")) as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE created_at >= now() - interval '30 days') "
            "FROM loop_signals"
        ).fetchone()
        months = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'loop_signals'::regclass"
        ).fetchone()
        stray = conn.execute(f"SELECT count(*) FROM {DEFAULT_PARTITION}").fetchone()
    assert row is not None and months is not None and stray is not None
    size = int(meta.get("database_bytes", "0"))
    info = {
        "database": dbname,
        "generated_now": generated,
        "generate_seconds": float(meta.get("generate_seconds", "nan")),
        "database_bytes": size,
        "database_gib": _gib(size),
        "signals": int(row[0]),
        "days": scale.days,
        "growth": scale.growth,
        "window_signals_per_day": round(int(row[1]) / 30),
        "window_share": round(window_share(scale, 30), 4),
        "month_partitions": int(months[0]) - 1,
        "default_partition_rows": int(stray[0]),
    }
    print(
        f"  {scale.name}: {info['signals']:,} signals over {scale.days} days, "
        f"{info['window_signals_per_day']:,} a day in the last 30; {info['month_partitions']} "
        f"month partitions, {info['default_partition_rows']} rows in the default one; "
        f"generated in {info['generate_seconds']:.0f} s, {info['database_gib']} GiB",
        flush=True,
    )
    return info


# --- the figures at both scales ------------------------------------------------------


def rounds(names: list[str], runs: int) -> list[list[str]]:
    """Round i starts with scale i mod 2: each goes first equally often."""
    return [names[i % len(names) :] + names[: i % len(names)] for i in range(runs)]


def tune_part(scales: list[Scale], runs: int, workdir: Path) -> dict[str, Any]:
    """The weekly tune of every tenant through RQ on each data set, ``runs`` rounds."""
    logdir = workdir / "tune"
    logdir.mkdir(exist_ok=True)
    by_name = {s.name: s for s in scales}
    out: dict[str, Any] = {s.name: {"runs": [], "load": []} for s in scales}
    for s in scales:
        # The first run after a data set is loaded reads from disk: not measured.
        warm = tune.product_run(database_name(s), TUNE_BATCH, TUNE_WORKERS, logdir)
        print(f"  tune warm-up {s.name:<14} {warm['seconds']:8.2f} s", flush=True)
    for i, order in enumerate(rounds(list(by_name), runs)):
        for name in order:
            out[name]["load"].append(record_load(f"tune {name} round {i + 1}"))
            r = tune.product_run(database_name(by_name[name]), TUNE_BATCH, TUNE_WORKERS, logdir)
            out[name]["runs"].append(r)
            print(
                f"  tune round {i + 1} {name:<14} {r['seconds']:8.2f} s  "
                f"{r['succeeded']}/{r['tenants']} succeeded  peak RSS {r['peak_rss_mb']} MB",
                flush=True,
            )
    for figures in out.values():
        figures["seconds"] = median([r["seconds"] for r in figures["runs"]])
        figures["peak_rss_mb"] = max(r["peak_rss_mb"] for r in figures["runs"])
    return out


def markread_part(scales: list[Scale], runs: int, workdir: Path) -> dict[str, Any]:
    """Mark-read, the product alone, first and repeat reads on each data set, ``runs`` rounds."""
    out: dict[str, Any] = {}
    conns: dict[str, psycopg.Connection[Any]] = {}
    walks: dict[str, tuple[list[int], Path]] = {}
    by_name = {s.name: s for s in scales}
    try:
        for s in scales:
            conn = psycopg.connect(pg_url(database_name(s), "postgresql"))
            conns[s.name] = conn
            users = markread.load_users(conn)
            markread.reset_pool(conn, users)
            pairs = workdir / f"pairs-{s.name}.txt"
            size = markread.write_pairs(conn, users, pairs)
            walks[s.name] = (users, pairs)
            out[s.name] = {"walk_size": size, "first": [], "repeat": [], "load": []}
        for i, order in enumerate(rounds(list(by_name), runs)):
            for name in order:
                s = by_name[name]
                conn = conns[name]
                users, pairs = walks[name]
                seconds = min(s.duration_s, MARKREAD_SECONDS)
                env = app_env(pg_url(database_name(s)))
                out[name]["load"].append(record_load(f"mark-read {name} round {i + 1}"))
                for mode in ("first", "repeat"):
                    with markread.serving("product", env, workdir, pairs, s) as server:
                        # After the warm-up: every run starts from the same state.
                        if mode == "first":
                            markread.reset_pool(conn, users)
                        else:
                            markread.mark_all_read(conn, users)
                        r = markread.run_wrk(server, pairs, seconds, s.connections)
                    out[name][mode].append(r)
                    print(
                        f"  mark-read {mode:<6} round {i + 1} {name:<14} {r['rps']:>8.1f} req/s "
                        f"p99 {r['latency_us']['p99'] / 1000:.1f} ms non200={r['non200']} "
                        f"wrapped={r['wrapped']}",
                        flush=True,
                    )
        for name, conn in conns.items():
            markread.reset_pool(conn, walks[name][0])
    finally:
        for conn in conns.values():
            conn.close()
    for figures in out.values():
        for mode in ("first", "repeat"):
            figures[mode] = markread.summarise(figures[mode])
    return out


def dashboard_part(scales: list[Scale]) -> dict[str, Any]:
    """bench.dashboard's pages on each data set."""
    out: dict[str, Any] = {}
    for s in scales:
        # Under a name of its own: the part's file must not replace `make bench`'s
        # dashboard-<scale>.json.
        part = replace(s, name=f"scale-{s.name}")
        result = dashboard.bench(part, database_name(s))
        out[s.name] = {"tenant": result["tenant"], "feature": result["feature"]}
        out[s.name]["pages"] = result["results"]
    return out


# --- the prune under load ------------------------------------------------------------


def retention_for(month: datetime, today: datetime) -> int:
    """SIGNAL_RETENTION_DAYS whose cutoff is the end of ``month``: that month, and none
    after it, has expired (``loops.retention.cutoff_for``: the UTC midnight on or before
    today - retention)."""
    return (today.date() - add_months(month, 1).date()).days


# The command's one line: "pruned 592080 signals older than 2025-10-25 (retention 400
# days): 1 partition dropped, 0 created" ("would prune ... 1 partition to drop" dry).
PRUNED = re.compile(
    r"^(?:would prune|pruned) (\d+) signals older than (\S+) "
    r".*: (\d+) partitions? (?:to drop|dropped)"
)


def run_prune(dbname: str, retention_days: int, *, dry_run: bool = False) -> dict[str, Any]:
    """``flask --app wsgi signals prune``, as an operator runs it, timed from launch to exit.

    Its phases come from the prune's own record (``loop_signal_prunes``: written once the
    days about to go are counted into the daily rollup, finished once the partitions are
    dropped and their claims forgotten), placed against the launch on the wall clock.
    A dry run (no record) has its wall time only: the command starting and counting.
    """
    env = app_env(pg_url(dbname), SIGNAL_RETENTION_DAYS=str(retention_days))
    launched_wall = datetime.now(UTC)
    started = time.monotonic()
    run = subprocess.run(
        [
            venv_bin("flask"),
            "--app",
            "wsgi",
            "signals",
            "prune",
            *(["--dry-run"] if dry_run else []),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    ended = time.monotonic()
    ended_wall = datetime.now(UTC)
    line = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    match = PRUNED.match(line)
    if run.returncode != 0 or match is None:
        raise SystemExit(f"signals prune failed:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
    outcome = {
        "command": "flask --app wsgi signals prune" + (" --dry-run" if dry_run else ""),
        "retention_days": retention_days,
        "output": line,
        "removed": int(match[1]),
        "cutoff": match[2],
        "partitions_dropped": int(match[3]),
        "wall_s": round(ended - started, 3),
        "started": started,
        "ended": ended,
    }
    if dry_run:
        return outcome
    with psycopg.connect(pg_url(dbname, "postgresql")) as conn:
        record = conn.execute(
            "SELECT started_at, finished_at FROM loop_signal_prunes ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert record is not None and record[1] is not None
    recorded, finished = record
    return outcome | {
        "phases_s": {
            # the command starting, counting what goes, the rollup closing those days' books
            "start_count_close_books": round((recorded - launched_wall).total_seconds(), 3),
            # dropping the partition, forgetting its claims in the exactly-once guard
            "drop_forget_claims": round((finished - recorded).total_seconds(), 3),
            # the command ending
            "exit": round((ended_wall - finished).total_seconds(), 3),
        },
    }


def read_samples(prefix: Path, threads: int) -> list[tuple[float, float, int]]:
    """(sent, latency ms or -1, status) of every request the prune's wrk logged."""
    samples = []
    for tid in range(threads):
        path = Path(f"{prefix}.{tid}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) != 3:
                continue  # a line cut short when wrk stopped
            sent_us, latency_us, status = (int(p) for p in parts)
            latency = latency_us / 1000 if latency_us >= 0 else -1.0
            samples.append((sent_us / 1e6, latency, status))
    return sorted(samples)


def window(samples: list[tuple[float, float, int]], start: float, end: float) -> dict[str, Any]:
    """Requests sent in [start, end): how many, errors, latency."""
    inside = [s for s in samples if start <= s[0] < end]
    answered = [s for s in inside if s[1] >= 0]
    latencies = [s[1] for s in answered]
    non2xx = sum(1 for s in answered if not 200 <= s[2] < 300)
    socket = len(inside) - len(answered)
    seconds = max(end - start, 1e-9)
    return {
        "seconds": round(end - start, 3),
        "requests": len(inside),
        "rps": round(len(inside) / seconds, 1),
        "errors": non2xx + socket,
        "non2xx": non2xx,
        "socket_errors": socket,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2) if latencies else float("nan"),
    }


def _partition_rows(conn: psycopg.Connection[Any], month: datetime) -> int | None:
    name = partition_name(month)
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    if not exists or not exists[0]:
        conn.commit()
        return None
    row = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
    conn.commit()
    return int(row[0]) if row else 0


def _set_fingerprint_aside(dbname: str, aside: bool) -> None:
    """Aside: the data set reads as stale (regenerated next time) until it is put back."""
    keys = ("fingerprint", "fingerprint_during_prune")
    old, new = keys if aside else keys[::-1]
    with psycopg.connect(pg_url(dbname, "postgresql")) as conn:
        conn.execute("UPDATE bench_meta SET key = %s WHERE key = %s", (new, old))


def months_to_prune(scale: Scale, dbname: str) -> tuple[datetime, datetime]:
    """(the data's first month, the first whole month): the same month unless the data
    start mid-month, as they usually do."""
    meta = bench_meta(dbname)
    world = build_world(scale, datetime.fromtimestamp(int(meta["end_epoch"]), UTC))
    first_day = datetime.fromtimestamp(world.start, UTC)
    first = month_start(first_day)
    return first, (first if first_day == first else add_months(first, 1))


def split_walk(pairs: Path, prefix: Path, threads: int) -> None:
    """``prefix.<i>``: every threads-th pair from the i-th, thread i's share of the walk."""
    lines = pairs.read_text().splitlines()
    if len(lines) < threads:
        raise SystemExit(f"{len(lines)} notifications to read: too few for {threads} connections")
    for tid in range(threads):
        Path(f"{prefix}.{tid}").write_text("".join(f"{x}\n" for x in lines[tid::threads]))


def start_load(url: str, pairs: Path, out: Path, threads: int) -> subprocess.Popen[str]:
    """wrk with prune_load.lua until stopped (SIGINT), once its first answer is logged."""
    wrk = subprocess.Popen(
        [
            "wrk",
            f"-t{threads}",
            f"-c{threads}",
            "-d3600s",
            "--timeout",
            "10s",
            "-s",
            str(PRUNE_LUA),
            url,
            "--",
            str(pairs),
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = Path(f"{out}.0")
    deadline = time.monotonic() + 60
    while not (first.exists() and first.stat().st_size > 0):
        if wrk.poll() is not None or time.monotonic() > deadline:
            wrk.kill()
            raise SystemExit(f"the prune's load did not start: {wrk.communicate()[1][-2000:]}")
        time.sleep(0.1)
    return wrk


def stop_load(wrk: subprocess.Popen[str]) -> dict[str, Any]:
    """Stop wrk (SIGINT: it reports as if its time were up); its totals."""
    wrk.send_signal(signal.SIGINT)
    stdout, _ = wrk.communicate(timeout=60)
    for line in stdout.splitlines():
        if line.startswith("BENCHJSON "):
            totals: dict[str, Any] = json.loads(line.removeprefix("BENCHJSON "))
            return totals
    return {}


def prune_part(scale: Scale, workdir: Path, preroll_s: float) -> dict[str, Any]:
    """One month's prune while 32 connections mark notifications read; then the months back."""
    dbname = database_name(scale)
    first, target = months_to_prune(scale, dbname)
    months = sorted({first, target})
    threads = PRUNE_CONNECTIONS
    out = workdir / "prune-latency"
    with psycopg.connect(pg_url(dbname, "postgresql")) as conn:
        rows_before = {m: _partition_rows(conn, m) for m in months}
        if None in rows_before.values():
            # prepare() regenerates a data set with a month missing: not reached.
            raise SystemExit(f"{dbname}: a month partition is missing; run again")
        users = markread.load_users(conn)
        markread.reset_pool(conn, users)
        pairs = workdir / "prune-pairs.txt"
        walk = markread.write_pairs(conn, users, pairs)
        split_walk(pairs, workdir / "prune-pairs", threads)
        result: dict[str, Any] = {
            "database": dbname,
            "month": target.date().isoformat(),
            "partition": partition_name(target),
            "rows_in_partition": rows_before[target],
            "connections": threads,
            "walk_size": walk,
            "preroll_s": preroll_s,
        }
        _set_fingerprint_aside(dbname, True)
        spec, port_var, default_port = markread.SIDES["product"]
        server = None
        wrk = None
        try:
            if target != first:
                stub = run_prune(dbname, retention_for(first, datetime.now(UTC)))
                print(f"  stub month {first:%Y-%m} first, unmeasured: {stub['output']}", flush=True)
                result["stub"] = {k: stub[k] for k in ("output", "wall_s", "removed")}
            # The same command, dry, on the machine without the load: what starting it
            # and counting cost, against which to read the measured prune's wall time.
            dry = run_prune(dbname, retention_for(target, datetime.now(UTC)), dry_run=True)
            result["dry_run_idle"] = {k: dry[k] for k in ("output", "wall_s")}
            port = int(os.environ.get(port_var, str(default_port)))
            server = markread.start_server(
                "product", spec, port, app_env(pg_url(dbname)), workdir / "prune-product.log"
            )
            markread.run_wrk(server, pairs, scale.warmup_s, threads)  # warm-up
            markread.reset_pool(conn, users)
            wrk = start_load(server.url, workdir / "prune-pairs", out, threads)
            time.sleep(preroll_s)
            result["load_at_prune"] = record_load("prune")
            prune = run_prune(dbname, retention_for(target, datetime.now(UTC)))
            print(f"  prune: {prune['output']} ({prune['wall_s']:.2f} s)", flush=True)
            time.sleep(PRUNE_POSTROLL_S)
            result["wrk"] = stop_load(wrk)
        finally:
            if wrk is not None and wrk.poll() is None:
                wrk.kill()
                wrk.wait()
            if server is not None:
                server.stop()
            markread.reset_pool(conn, users)
            result["restore"] = _restore(scale, dbname, conn, rows_before)
    samples = read_samples(out, threads)
    started, ended = prune.pop("started"), prune.pop("ended")
    first_sent = samples[0][0] if samples else started
    result.update(
        {
            "retention_days": prune["retention_days"],
            "prune": prune,
            "rows_dropped": prune["removed"],
            "partitions_dropped": prune["partitions_dropped"],
            "during": window(samples, started, ended),
            # As long as the prune, or all the load had before it when that was shorter.
            "before": window(samples, max(started - (ended - started), first_sent), started),
            "whole_run": window(samples, first_sent, float("inf")),
        }
    )
    return result


def _restore(
    scale: Scale,
    dbname: str,
    conn: psycopg.Connection[Any],
    rows_before: dict[datetime, int | None],
) -> dict[str, Any]:
    """Regenerate the months the prune dropped; the fingerprint back only if all match."""
    missing = [m for m in rows_before if _partition_rows(conn, m) is None]
    started = time.perf_counter()
    written = restore_signals(scale, dbname, missing) if missing else 0
    seconds = round(time.perf_counter() - started, 1)
    ok = {m: _partition_rows(conn, m) for m in rows_before} == rows_before
    if ok:
        _set_fingerprint_aside(dbname, False)
    print(
        f"  restored {len(missing)} month(s), {written:,} signals, in {seconds:.1f} s"
        + ("" if ok else "; counts differ: the data set is left stale (regenerated next run)"),
        flush=True,
    )
    return {
        "months": [m.date().isoformat() for m in missing],
        "signals": written,
        "seconds": seconds,
        "matches": ok,
    }


# --- the table -----------------------------------------------------------------------


def _row(figure: str, unit: str, values: dict[str, float], lower_is_better: bool) -> dict[str, Any]:
    ref, big = values.values()
    r = round(big / ref, 3) if ref else float("nan")
    if lower_is_better:
        target, met = f"<= {TARGET}x", r <= TARGET
    else:
        target, met = f">= {1 / TARGET:.2f}x", r >= 1 / TARGET
    return {
        "figure": figure,
        "unit": unit,
        "values": values,
        "ratio": r,
        "target": target,
        "met": met,
    }


def summary_rows(names: list[str], results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row a figure: its value at each scale, the ratio, the target."""
    rows = []

    def values(part: str, *path: str) -> dict[str, float]:
        out = {}
        for name in names:
            value: Any = results[part][name]
            for key in path:
                value = value[key]
            out[name] = float(value)
        return out

    if "tune" in results:
        figure = f"tune all tenants via RQ, batch={TUNE_BATCH}"
        rows.append(_row(figure, "s", values("tune", "seconds"), True))
    if "markread" in results:
        for mode, label in (("first", "first reads"), ("repeat", "repeat reads")):
            rows.append(_row(f"mark-read {label}", "req/s", values("markread", mode, "rps"), False))
    if "dashboard" in results:
        for page in results["dashboard"][names[0]]["pages"]:
            for stat in ("p50", "p95"):
                rows.append(
                    _row(
                        f"dashboard {page} {stat}",
                        "ms",
                        values("dashboard", "pages", page, "page", f"{stat}_ms"),
                        True,
                    )
                )
    return rows


def print_table(names: list[str], labels: dict[str, str], rows: list[dict[str, Any]]) -> None:
    ref, big = names
    print()
    print(f"{'figure':<44} {labels[ref]:>14} {labels[big]:>14} {'ratio':>7}  {'target':<10} met")
    for r in rows:
        met = "yes" if r["met"] else "NO"
        print(
            f"{r['figure'] + ' (' + r['unit'] + ')':<44} {r['values'][ref]:>14.2f} "
            f"{r['values'][big]:>14.2f} {r['ratio']:>7.3f}  {r['target']:<10} {met}"
        )


def print_prune(p: dict[str, Any]) -> None:
    d, b = p["during"], p["before"]
    print()
    print(f"prune of one month ({p['partition']}) on {p['database']}, under mark-read load:")
    print(f"  {p['prune']['output']}")
    wall = p["prune"]["wall_s"]
    print(f"  the same command dry, without the load: {p['dry_run_idle']['wall_s']:.2f} s")
    phases = ", ".join(
        f"{k.replace('_', ' ')} {v:.2f} s" for k, v in p["prune"]["phases_s"].items()
    )
    print(
        f"  wall time {wall:.2f} s, launch to exit ({phases}); "
        f"target < {PRUNE_LIMIT_S:.0f} s: {'yes' if wall < PRUNE_LIMIT_S else 'NO'}"
    )
    print(f"  {'mark-read, first reads':<30} {'before':>10} {'during':>10} {'ratio':>7}")
    for key, label in (
        ("rps", "req/s"),
        ("p50_ms", "p50 (ms)"),
        ("p99_ms", "p99 (ms)"),
        ("max_ms", "max (ms)"),
    ):
        r = d[key] / b[key] if b[key] else float("nan")
        print(f"  {label:<30} {b[key]:>10.2f} {d[key]:>10.2f} {r:>7.3f}")
    print(
        f"  {'errors (non-2xx + socket)':<30} {b['errors']:>10} {d['errors']:>10}"
        f"  target 0 during: {'yes' if d['errors'] == 0 else 'NO'}"
    )
    print(
        f"  windows: {b['seconds']:.1f} s before, {d['seconds']:.1f} s during "
        f"({d['requests']} requests); wrk errors over the whole run: {p['wrk'].get('errors')}"
    )


# --- main ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scales",
        default=",".join(SCALES),
        help="the reference scale and the long-history one (default full,history)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help=f"tiny scales ({','.join(SMOKE_SCALES)}), for a test"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="start each part even on a busy machine (the figures are then not valid)",
    )
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default all: {','.join(PARTS)})",
    )
    args = parser.parse_args(argv)
    parts = [p for p in args.only.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"--only: unknown part(s) {', '.join(unknown)}; choose from {PARTS}")
    names = list(SMOKE_SCALES) if args.smoke else args.scales.split(",")
    if len(names) != 2:
        raise SystemExit("--scales takes two: the reference and the long-history scale")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    scales = [scale_named(n) for n in names]
    ref, big = scales
    runs = max(s.runs for s in scales)
    started = time.perf_counter()
    print(f"bench-scale: {ref.name} vs {big.name}, machine={machine()}", flush=True)
    labels = {s.name: f"{s.name} {s.signals / 1e6:g}M" for s in scales}
    workdir = Path(tempfile.mkdtemp(prefix="el-bench-scale-"))
    results: dict[str, Any] = {}
    load: dict[str, Any] = {}
    print("== data sets ==", flush=True)
    data = {s.name: prepare(s) for s in scales}
    if "markread" in parts:
        print("== mark-read ==", flush=True)
        load["markread"] = wait_for_quiet("mark-read", force=args.force)
        results["markread"] = markread_part(scales, runs, workdir)
    # The dashboard before the tune: the tune writes a run, calibrations and history
    # rows for every tenant, and the pages are measured on the data set as generated.
    if "dashboard" in parts:
        print("== dashboard ==", flush=True)
        load["dashboard"] = wait_for_quiet("dashboard", force=args.force)
        results["dashboard"] = dashboard_part(scales)
    if "tune" in parts:
        print("== tune ==", flush=True)
        load["tune"] = wait_for_quiet("tune", force=args.force)
        results["tune"] = tune_part(scales, runs, workdir)
    prune: dict[str, Any] | None = None
    if "prune" in parts:
        print("== prune under mark-read load ==", flush=True)
        load["prune"] = wait_for_quiet("prune", force=args.force)
        prune = prune_part(big, workdir, preroll_s=2.0 * big.duration_s)
    shutil.rmtree(workdir, ignore_errors=True)

    rows = summary_rows(names, results)
    print_table(names, labels, rows)
    if prune is not None:
        print_prune(prune)
    valid = all(record["quiet"] for record in load.values())
    if not valid:
        print("bench-scale: a part started on a busy machine (--force): figures NOT valid")
    # A run of some parts only is kept apart: it must not overwrite the whole run's record.
    write_result(
        "scale" if set(parts) == set(PARTS) else "scale-" + "-".join(parts),
        big,
        {
            "parts": parts,
            "reference": ref.as_dict(),
            "data_sets": data,
            "rows": rows,
            "results": results,
            "prune": prune,
            "targets": {
                "ratio": f"<= {TARGET}x (throughput >= {1 / TARGET:.2f}x)",
                "prune_wall_s": f"< {PRUNE_LIMIT_S:.0f}",
                "prune_errors": "0",
            },
            "load": load,
            "quiet_machine": valid,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    print(f"bench-scale: done in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
