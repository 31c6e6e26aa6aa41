"""Mark-read under load: the product vs three raw baselines, same gunicorn config, same run.

Sides, all served by ``gunicorn -c gunicorn.conf.py`` with its default workers/threads:

- ``product``: ``wsgi:app`` (on PostgreSQL its mark-read is the two-statement fast path);
- ``two_statement``: ``bench.baseline_twostatement`` — plain WSGI, a psycopg pool in
  autocommit, exactly the product's two statements. The reference for every ratio;
- ``five_round_trip``: ``bench.baseline_wsgi`` — the earlier raw baseline (token
  lookup, then BEGIN / conditional UPDATE / ENGAGE insert / COMMIT);
- ``minimal_flask``: ``bench.baseline_flask`` — Flask alone over the two statements, so
  the gap splits into what Flask costs and what the product adds.

Each side is measured alone: its server started, warmed up, run once, stopped (four pools at
once would pass PostgreSQL's max_connections). Throughput is closed-loop: wrk
(``bench/markread.lua``) walks distinct (notification id, token) pairs with
``scale.connections`` connections. First reads: before every measured run
the walk is reset to unread (and its ENGAGE signals removed), so each run starts from the
same state. Repeat reads walk the same pairs once they are all read. Each round runs every
side once, the order rotating from round to round; each figure is the median of
``scale.runs`` rounds. The load average is recorded before each phase, and the part waits
for a quiet machine before it starts (``bench.common.wait_for_quiet``; ``--force`` skips).

Latency is open-loop: h2load sends repeat reads at a fixed rate, half the two-statement
baseline's median repeat-read throughput, one request per new connection, so a slow answer
never delays the next request (wrk's closed loop would). h2load sends one header set to
every request, so this phase reads one notification of one bench user over and over,
and POSTs the body ``{}`` (it sends no POST without a body): the product answers it as a
request without one, on the same path.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from bench.common import (
    ROOT,
    Scale,
    app_env,
    bench_token,
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
from tests.support.live_server import LiveServer

LUA = ROOT / "bench" / "markread.lua"

# name -> (WSGI app, port variable, default port). The first baseline is the reference.
SIDES: dict[str, tuple[str, str, int]] = {
    "product": ("wsgi:app", "BENCH_PRODUCT_PORT", 18601),
    "two_statement": ("bench.baseline_twostatement:app", "BENCH_BASELINE_PORT", 18602),
    "five_round_trip": ("bench.baseline_wsgi:app", "BENCH_FIVEROUND_PORT", 18603),
    "minimal_flask": ("bench.baseline_flask:app", "BENCH_FLASK_PORT", 18604),
}
REFERENCE = "two_statement"
# Open-loop rate: this share of the reference's median repeat-read throughput.
OPEN_LOOP_SHARE = 0.5
OPEN_LOOP_SIDES = ("product", REFERENCE)
TARGETS = {
    "rps_ratio": 0.7,  # product >= 0.7 x the two-statement baseline, first and repeat reads
    "p99_ratio": 1.5,  # open-loop product p99 <= 1.5 x the baseline's
    "p99_ms": 50.0,  # ... and <= 50 ms
}


def start_server(name: str, app_spec: str, port: int, env: dict[str, str], log: Path) -> LiveServer:
    """gunicorn with the production config file and its default workers and threads."""
    server = LiveServer(env, log, app=app_spec, workers=None, threads=None, port=port, name=name)
    try:
        return server.start(timeout=60)
    except (RuntimeError, AssertionError) as exc:
        server.stop()
        raise SystemExit(f"{name} server did not come up; see {log}") from exc


@contextmanager
def serving(
    name: str, env: dict[str, str], workdir: Path, warm: Path, scale: Scale
) -> Iterator[LiveServer]:
    """One side alone: started, warmed up with the walk, stopped after its run.

    One server at a time: four sides' pools together (each worker holds its threads'
    connections) would pass PostgreSQL's max_connections, and idle servers would still
    take memory from the one measured.
    """
    spec, port_var, default_port = SIDES[name]
    port = int(os.environ.get(port_var, str(default_port)))
    server = start_server(name, spec, port, env, workdir / f"{name}.log")
    try:
        run_wrk(server, warm, scale.warmup_s, scale.connections)
        yield server
    finally:
        server.stop()


def load_users(conn: psycopg.Connection[Any]) -> list[int]:
    """The members holding a bench token (chosen by the generator)."""
    rows = conn.execute(
        "SELECT t.user_id FROM api_tokens t JOIN users u ON u.id = t.user_id "
        "WHERE t.name = 'bench' AND u.role = 'member' ORDER BY 1"
    ).fetchall()
    conn.commit()
    return [int(r[0]) for r in rows]


def write_pairs(conn: psycopg.Connection[Any], users: list[int], path: Path) -> int:
    # Delivered only: an undelivered notification is not found by any mark-read.
    rows = conn.execute(
        "SELECT id, user_id FROM notifications "
        "WHERE user_id = ANY(%s) AND delivered_at IS NOT NULL",
        (users,),
    ).fetchall()
    conn.commit()
    random.Random(7).shuffle(rows)
    path.write_text("".join(f"{nid} {bench_token(uid)}\n" for nid, uid in rows))
    return len(rows)


def reset_pool(conn: psycopg.Connection[Any], users: list[int]) -> None:
    """Every bench notification unread and never read; their ENGAGE signals gone."""
    conn.execute(
        "DELETE FROM loop_signals WHERE kind = 'ENGAGE' AND subject_id IN "
        "(SELECT id FROM notifications WHERE user_id = ANY(%s) AND first_read_at IS NOT NULL)",
        (users,),
    )
    conn.execute(
        "UPDATE notifications SET read_at = NULL, first_read_at = NULL "
        "WHERE user_id = ANY(%s) AND (read_at IS NOT NULL OR first_read_at IS NOT NULL)",
        (users,),
    )
    conn.commit()
    conn.autocommit = True
    conn.execute("VACUUM notifications")
    conn.autocommit = False


def mark_all_read(conn: psycopg.Connection[Any], users: list[int]) -> None:
    """Everything in the walk read once (the state repeat reads need)."""
    conn.execute(
        "UPDATE notifications SET read_at = coalesce(read_at, now()), "
        "first_read_at = coalesce(first_read_at, now()) "
        "WHERE user_id = ANY(%s) AND read_at IS NULL",
        (users,),
    )
    conn.commit()


def run_wrk(server: LiveServer, pairs: Path, seconds: int, connections: int) -> dict[str, Any]:
    threads = 2
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            server.url,
            "--",
            str(pairs),
            str(threads),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in out.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCHJSON "))
            result["rps"] = round(result["requests"] / (result["duration_us"] / 1e6), 1)
            return result
    raise RuntimeError(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")


def rate_schedule(rps: float) -> tuple[int, int, float]:
    """(connections per period, period in ms, the rate that gives) for h2load ``--rate``.

    h2load opens ``--rate`` connections at the start of each ``--rate-period``, all at
    once, and takes whole milliseconds: the smallest burst whose rate is within 2 % of
    ``rps`` keeps the load close to a steady rate.
    """
    rps = max(rps, 1.0)
    best = (1, max(1, round(1000 / rps)))
    for per in range(1, 101):
        period_ms = max(1, round(per * 1000 / rps))
        if abs(per * 1000 / period_ms - rps) <= 0.02 * rps:
            best = (per, period_ms)
            break
    per, period_ms = best
    return per, period_ms, per * 1000 / period_ms


def run_h2load(
    server: LiveServer, path: str, token: str, rps: float, seconds: int, workdir: Path
) -> dict[str, Any]:
    """Open-loop: ``rps`` requests a second, each on a new connection; per-request latency."""
    per, period_ms, rate = rate_schedule(rps)
    total = max(1, round(rate * seconds))
    body = workdir / "body.json"
    body.write_text("{}")  # h2load POSTs only with a non-empty data file
    log = workdir / f"h2load-{server.name}.log"
    log.unlink(missing_ok=True)
    out = subprocess.run(
        [
            "h2load",
            "--h1",
            "-t1",
            f"-c{total}",
            f"-n{total}",
            f"--rate={per}",
            f"--rate-period={period_ms}ms",
            "-d",
            str(body),
            "-H",
            f"Authorization: Bearer {token}",
            "-H",
            "Content-Type: application/json",
            f"--log-file={log}",
            server.url + path,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    starts: list[int] = []
    latencies_ms: list[float] = []
    non200 = 0
    for line in log.read_text().splitlines():
        start_us, status, duration_us = line.split("\t")
        starts.append(int(start_us))
        if status != "200":
            non200 += 1
        latencies_ms.append(int(duration_us) / 1000)
    if not latencies_ms:
        raise RuntimeError(f"h2load logged no request:\n{out.stdout}\n{out.stderr}")
    span_s = (max(starts) - min(starts)) / 1e6 if len(starts) > 1 else 0.0
    return {
        "target_rps": round(rate, 1),
        "sent_rps": round((len(starts) - 1) / span_s, 1) if span_s else None,
        "requests": len(latencies_ms),
        "failed": total - len(latencies_ms),
        "non200": non200,
        "latency_ms": {
            "p50": round(percentile(latencies_ms, 50), 2),
            "p90": round(percentile(latencies_ms, 90), 2),
            "p99": round(percentile(latencies_ms, 99), 2),
            "max": round(max(latencies_ms), 2),
        },
    }


def engage_since(conn: psycopg.Connection[Any], since: Any) -> int:
    row = conn.execute(
        "SELECT count(*) FROM loop_signals WHERE kind = 'ENGAGE' AND created_at >= %s", (since,)
    ).fetchone()
    conn.commit()
    return int(row[0]) if row else 0


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rps": median([r["rps"] for r in runs]),
        "p50_ms": median([r["latency_us"]["p50"] / 1000 for r in runs]),
        "p99_ms": median([r["latency_us"]["p99"] / 1000 for r in runs]),
        "runs": runs,
    }


def summarise_open(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "p50_ms": median([r["latency_ms"]["p50"] for r in runs]),
        "p99_ms": median([r["latency_ms"]["p99"] for r in runs]),
        "runs": runs,
    }


def rotation(names: list[str], round_index: int) -> list[str]:
    """Round i starts with side i: each side goes first, and last, equally often."""
    k = round_index % len(names)
    return names[k:] + names[:k]


def open_loop_target(users: list[int], conn: psycopg.Connection[Any]) -> tuple[str, str]:
    """(path, token) of one delivered, read notification of a bench user."""
    row = conn.execute(
        "SELECT id, user_id FROM notifications WHERE user_id = ANY(%s) "
        "AND delivered_at IS NOT NULL AND read_at IS NOT NULL ORDER BY id LIMIT 1",
        (users,),
    ).fetchone()
    conn.commit()
    if row is None:
        raise SystemExit("open loop: no bench user has a read notification")
    return f"/api/v1/notifications/{row[0]}/read", bench_token(int(row[1]))


def bench(scale: Scale, dbname: str, *, force: bool = False) -> dict[str, Any]:
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install -y {package})")
    generate_pg(scale, dbname, force=False)
    load: dict[str, Any] = {"start": wait_for_quiet("mark-read", force=force), "parts": []}
    workdir = Path(tempfile.mkdtemp(prefix="el-bench-"))
    pairs = workdir / "pairs.txt"
    env = app_env(pg_url(dbname))
    results: dict[str, Any] = {}
    names = list(SIDES)
    with psycopg.connect(pg_url(dbname, "postgresql")) as conn:
        users = load_users(conn)
        reset_pool(conn, users)
        pool_size = write_pairs(conn, users, pairs)
        print(f"markread: {pool_size:,} distinct notifications in the walk", flush=True)
        for mode in ("first", "repeat"):
            load["parts"].append(record_load(f"{mode} reads"))
            per: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            for i in range(scale.runs):
                for name in rotation(names, i):
                    with serving(name, env, workdir, pairs, scale) as server:
                        # The warm-up read part of the walk: every run starts from one state.
                        if mode == "first":
                            reset_pool(conn, users)
                        else:
                            mark_all_read(conn, users)
                        started = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
                        conn.commit()
                        result = run_wrk(server, pairs, scale.duration_s, scale.connections)
                    if mode == "first":
                        result["engage_written"] = engage_since(conn, started)
                    per[name].append(result)
                    print(
                        f"  {mode:<6} round {i + 1} {name:<15} {result['rps']:>8.1f} req/s "
                        f"p50 {result['latency_us']['p50'] / 1000:.1f} ms "
                        f"p99 {result['latency_us']['p99'] / 1000:.1f} ms "
                        f"non200={result['non200']} (last {result['last_non200_status']}) "
                        f"wrapped={result['wrapped']}"
                        + (
                            f" engage={result['engage_written']}"
                            if "engage_written" in result
                            else ""
                        ),
                        flush=True,
                    )
            results[mode] = {name: summarise(runs) for name, runs in per.items()}
        # Open loop, on repeat reads (the walk all read, warm-ups included).
        mark_all_read(conn, users)
        path, token = open_loop_target(users, conn)
        rate = OPEN_LOOP_SHARE * results["repeat"][REFERENCE]["rps"]
        load["parts"].append(record_load("open loop"))
        open_runs: dict[str, list[dict[str, Any]]] = {name: [] for name in OPEN_LOOP_SIDES}
        for i in range(scale.runs):
            for name in rotation(list(OPEN_LOOP_SIDES), i):
                with serving(name, env, workdir, pairs, scale) as server:
                    r = run_h2load(server, path, token, rate, scale.duration_s, workdir)
                open_runs[name].append(r)
                print(
                    f"  open   round {i + 1} {name:<15} {r['target_rps']:>8.1f} req/s target "
                    f"(sent {r['sent_rps']}) p50 {r['latency_ms']['p50']:.1f} ms "
                    f"p99 {r['latency_ms']['p99']:.1f} ms non200={r['non200']} "
                    f"failed={r['failed']}",
                    flush=True,
                )
        results["open_loop"] = {
            "rate_rps": round(rate_schedule(rate)[2], 1),
            "rate_rule": f"{OPEN_LOOP_SHARE} x {REFERENCE} median repeat-read req/s",
            "request": "repeat read of one notification, one request per connection",
            **{name: summarise_open(runs) for name, runs in open_runs.items()},
        }
    shutil.rmtree(workdir, ignore_errors=True)
    summary = summarise_ratios(results)
    print_summary(results)
    payload = {
        "database": dbname,
        "walk_size": pool_size,
        "reference": REFERENCE,
        "sides": {name: spec for name, (spec, _, _) in SIDES.items()},
        "gunicorn": {
            "config": "gunicorn.conf.py",
            "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "default (2 x cores)"),
            "GUNICORN_THREADS": os.environ.get("GUNICORN_THREADS", "default (8)"),
        },
        "connections": scale.connections,
        "duration_s": scale.duration_s,
        "rounds": scale.runs,
        "load": load,
        "results": results,
        "summary": summary,
    }
    write_result("markread", scale, payload)
    return payload


def summarise_ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Every side's throughput against every other's, per mode; the open-loop p99 ratio."""
    out: dict[str, Any] = {}
    for mode in ("first", "repeat"):
        figures = results[mode]
        out[mode] = {
            f"{a}/{b}": ratio(figures[a]["rps"], figures[b]["rps"])
            for a in SIDES
            for b in SIDES
            if a != b and (a == "product" or b == REFERENCE)
        }
    ol = results["open_loop"]
    out["open_loop"] = {
        "rate_rps": ol["rate_rps"],
        "p99_ratio": ratio(ol["product"]["p99_ms"], ol[REFERENCE]["p99_ms"]),
        "product_p99_ms": ol["product"]["p99_ms"],
    }
    out["targets"] = {
        "first product/two_statement": f">= {TARGETS['rps_ratio']}",
        "repeat product/two_statement": f">= {TARGETS['rps_ratio']}",
        "open-loop p99 product/two_statement": f"<= {TARGETS['p99_ratio']}",
        "open-loop product p99 ms": f"<= {TARGETS['p99_ms']:g}",
    }
    return out


def print_summary(results: dict[str, Any]) -> None:
    print(f"{'markread summary:':<50} {'measured':>12} {'':<6} {'baseline':>12} {'ratio':>8}")
    for mode, label in (("first", "first reads"), ("repeat", "repeat reads")):
        figures = results[mode]
        product = figures["product"]["rps"]
        for name in SIDES:
            if name == "product":
                continue
            target = f">= {TARGETS['rps_ratio']}x" if name == REFERENCE else "-"
            print_row(f"{label}, product vs {name}", product, figures[name]["rps"], "req/s", target)
        for name in ("five_round_trip", "minimal_flask"):
            print_row(
                f"{label}, {name} vs {REFERENCE}",
                figures[name]["rps"],
                figures[REFERENCE]["rps"],
                "req/s",
                "-",
            )
    ol = results["open_loop"]
    print(f"  open loop at {ol['rate_rps']:.0f} req/s ({ol['rate_rule']}):")
    print_row(
        "open-loop p50, product vs two_statement",
        ol["product"]["p50_ms"],
        ol[REFERENCE]["p50_ms"],
        "ms",
        "",
    )
    print_row(
        "open-loop p99, product vs two_statement",
        ol["product"]["p99_ms"],
        ol[REFERENCE]["p99_ms"],
        "ms",
        f"<= {TARGETS['p99_ratio']}x and <= {TARGETS['p99_ms']:g} ms",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="quick")
    parser.add_argument("--db", help="PostgreSQL database (default el_bench_<scale>)")
    parser.add_argument("--duration", type=int, help="seconds per measured run")
    parser.add_argument("--runs", type=int, help="measured rounds")
    parser.add_argument(
        "--force", action="store_true", help="start even on a busy machine (figures not valid)"
    )
    args = parser.parse_args(argv)
    scale = scale_named(args.scale)
    if args.duration or args.runs:
        from dataclasses import replace

        scale = replace(
            scale, duration_s=args.duration or scale.duration_s, runs=args.runs or scale.runs
        )
    bench(scale, args.db or database_name(scale), force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
