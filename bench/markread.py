"""Mark-read under load: the product vs the raw WSGI baseline, same gunicorn config, same run.

wrk (``bench/markread.lua``) walks distinct (notification id, token) pairs with 64
connections. First reads: before every measured run the pool of bench notifications is
reset to unread (and their ENGAGE signals removed), so each run starts from the same
state. Repeat reads walk the same pairs once they are all read. Runs alternate between
product and baseline; each figure is the median of ``scale.runs`` runs.
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
    pg_url,
    print_row,
    ratio,
    scale_named,
    write_result,
)
from bench.generate import generate_pg
from tests.support.live_server import LiveServer

LUA = ROOT / "bench" / "markread.lua"
PRODUCT_PORT = int(os.environ.get("BENCH_PRODUCT_PORT", "18601"))
BASELINE_PORT = int(os.environ.get("BENCH_BASELINE_PORT", "18602"))


def start_server(name: str, app_spec: str, port: int, env: dict[str, str], log: Path) -> LiveServer:
    """gunicorn with the production config file and its default workers and threads."""
    server = LiveServer(env, log, app=app_spec, workers=None, threads=None, port=port, name=name)
    try:
        return server.start(timeout=60)
    except (RuntimeError, AssertionError) as exc:
        server.stop()
        raise SystemExit(f"{name} server did not come up; see {log}") from exc


def load_users(conn: psycopg.Connection[Any]) -> list[int]:
    """The members holding a bench token (chosen by the generator)."""
    rows = conn.execute(
        "SELECT t.user_id FROM api_tokens t JOIN users u ON u.id = t.user_id "
        "WHERE t.name = 'bench' AND u.role = 'member' ORDER BY 1"
    ).fetchall()
    conn.commit()
    return [int(r[0]) for r in rows]


def write_pairs(conn: psycopg.Connection[Any], users: list[int], path: Path) -> int:
    rows = conn.execute(
        "SELECT id, user_id FROM notifications WHERE user_id = ANY(%s)", (users,)
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


def bench(scale: Scale, dbname: str) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    generate_pg(scale, dbname, force=False)
    workdir = Path(tempfile.mkdtemp(prefix="el-bench-"))
    pairs = workdir / "pairs.txt"
    env = app_env(pg_url(dbname))
    servers: list[LiveServer] = []
    results: dict[str, Any] = {}
    with psycopg.connect(pg_url(dbname, "postgresql")) as conn:
        users = load_users(conn)
        reset_pool(conn, users)
        pool_size = write_pairs(conn, users, pairs)
        print(f"markread: {pool_size:,} distinct notifications in the walk", flush=True)
        try:
            product = start_server("product", "wsgi:app", PRODUCT_PORT, env, workdir / "p.log")
            servers.append(product)
            baseline = start_server(
                "baseline", "bench.baseline_wsgi:app", BASELINE_PORT, env, workdir / "b.log"
            )
            servers.append(baseline)
            for server in (product, baseline):
                run_wrk(server, pairs, scale.warmup_s, scale.connections)
            for mode in ("first", "repeat"):
                per: dict[str, list[dict[str, Any]]] = {"product": [], "baseline": []}
                for i in range(scale.runs):
                    order = (product, baseline) if i % 2 == 0 else (baseline, product)
                    for server in order:
                        if mode == "first":
                            reset_pool(conn, users)
                        else:
                            # Everything in the walk read once (the state repeat reads need).
                            conn.execute(
                                "UPDATE notifications SET read_at = coalesce(read_at, now()), "
                                "first_read_at = coalesce(first_read_at, now()) "
                                "WHERE user_id = ANY(%s) AND read_at IS NULL",
                                (users,),
                            )
                            conn.commit()
                        started = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
                        conn.commit()
                        result = run_wrk(server, pairs, scale.duration_s, scale.connections)
                        if mode == "first":
                            result["engage_written"] = engage_since(conn, started)
                        per[server.name].append(result)
                        print(
                            f"  {mode:<6} run {i + 1} {server.name:<8} {result['rps']:>8.1f} req/s "
                            f"p50 {result['latency_us']['p50'] / 1000:.1f} ms "
                            f"p99 {result['latency_us']['p99'] / 1000:.1f} ms "
                            f"non200={result['non200']} wrapped={result['wrapped']}"
                            + (
                                f" engage={result['engage_written']}"
                                if "engage_written" in result
                                else ""
                            ),
                            flush=True,
                        )
                results[mode] = {name: summarise(runs) for name, runs in per.items()}
        finally:
            for server in servers:
                server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    first, repeat = results["first"], results["repeat"]
    summary = {
        "first_read_rps_ratio": ratio(first["product"]["rps"], first["baseline"]["rps"]),
        "first_read_p99_ms": first["product"]["p99_ms"],
        "repeat_read_rps_ratio": ratio(repeat["product"]["rps"], repeat["baseline"]["rps"]),
        "targets": {
            "first_read_rps_ratio": ">= 0.5",
            "first_read_p99_ms": "<= 50",
            "repeat_read_rps_ratio": ">= 0.6",
        },
    }
    print("markread summary:           measured            baseline    ratio")
    print_row(
        "first reads, req/s",
        first["product"]["rps"],
        first["baseline"]["rps"],
        "req/s",
        ">= 0.5x",
    )
    print_row(
        "first reads, p99",
        first["product"]["p99_ms"],
        first["baseline"]["p99_ms"],
        "ms",
        "<= 50 ms",
    )
    print_row(
        "repeat reads, req/s",
        repeat["product"]["rps"],
        repeat["baseline"]["rps"],
        "req/s",
        ">= 0.6x",
    )
    print_row(
        "repeat reads, p99",
        repeat["product"]["p99_ms"],
        repeat["baseline"]["p99_ms"],
        "ms",
        "",
    )
    payload = {
        "database": dbname,
        "walk_size": pool_size,
        "gunicorn": {
            "config": "gunicorn.conf.py",
            "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "default (2 x cores)"),
            "GUNICORN_THREADS": os.environ.get("GUNICORN_THREADS", "default (8)"),
        },
        "connections": scale.connections,
        "duration_s": scale.duration_s,
        "results": results,
        "summary": summary,
    }
    write_result("markread", scale, payload)
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="quick")
    parser.add_argument("--db", help="PostgreSQL database (default el_bench_<scale>)")
    parser.add_argument("--duration", type=int, help="seconds per measured run")
    parser.add_argument("--runs", type=int, help="measured runs per target")
    args = parser.parse_args(argv)
    scale = scale_named(args.scale)
    if args.duration or args.runs:
        from dataclasses import replace

        scale = replace(
            scale, duration_s=args.duration or scale.duration_s, runs=args.runs or scale.runs
        )
    bench(scale, args.db or database_name(scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
