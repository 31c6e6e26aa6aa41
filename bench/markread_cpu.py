"""CPU per mark-read request, in-process: the full WSGI app, no network, no load generator.

A companion to ``bench.markread`` for profiling: it calls the product's WSGI app directly
for ``--requests`` first reads of distinct bench notifications (reset to unread first),
then the same requests again as repeat reads, and prints the process CPU time per
request (``time.process_time``: the app's own Python and driver work, not the database
server's). ``--profile`` prints a cProfile of the first reads instead. To compare two
versions of the code, copy this file into the other checkout's ``bench/`` and run it from
each checkout against the same data set, alternating::

    python -m bench.markread_cpu --scale full
    (cd /path/to/old/checkout && PYTHONPATH=. /path/to/.venv/bin/python -m bench.markread_cpu)

Needs the data set of ``bench.generate`` for the scale (PostgreSQL).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import os
import pstats
import time
from collections import Counter
from typing import Any

import psycopg
from werkzeug.test import EnvironBuilder

from bench.common import BENCH_REDIS_URL, bench_token, database_name, pg_url, scale_named


def _pairs(dbname: str, count: int) -> list[tuple[int, int]]:
    """(notification id, user id) of bench-token users, reset to unread, no ENGAGE rows."""
    with psycopg.connect(pg_url(dbname, "postgresql"), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT n.id, n.user_id FROM notifications n "
            "JOIN api_tokens t ON t.user_id = n.user_id "
            "ORDER BY n.id DESC LIMIT %s",
            (count,),
        ).fetchall()
        ids = [r[0] for r in rows]
        conn.execute(
            "UPDATE notifications SET read_at = NULL, first_read_at = NULL WHERE id = ANY(%s)",
            (ids,),
        )
        conn.execute(
            "DELETE FROM loop_signals WHERE kind = 'ENGAGE' AND subject_id = ANY(%s)", (ids,)
        )
    return [(int(n), int(u)) for n, u in rows]


def _app(name: str, dbname: str) -> Any:
    if name != "product":
        # The baselines read their database from the environment when first imported.
        os.environ["BASELINE_DSN"] = pg_url(dbname, "postgresql")
        module = (
            "bench.baseline_twostatement" if name == "two_statement" else "bench.baseline_flask"
        )
        return importlib.import_module(module).app
    from dashboard import create_app

    return create_app(
        {
            "SECRET_KEY": "bench-markread-cpu",
            "LOOPS_ENABLED": "true",
            "LOG_LEVEL": "WARNING",
            "SQLALCHEMY_DATABASE_URI": pg_url(dbname),
            "REDIS_URL": BENCH_REDIS_URL,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="full")
    parser.add_argument("--db", help="PostgreSQL database (default el_bench_<scale>)")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--profile", action="store_true", help="cProfile the first reads")
    parser.add_argument("--sort", default="tottime", help="the profile's order (pstats key)")
    parser.add_argument(
        "--app",
        choices=["product", "two_statement", "minimal_flask"],
        default="product",
        help="which WSGI app to call: the product or one of the baselines of bench.markread",
    )
    args = parser.parse_args()
    dbname = args.db or database_name(scale_named(args.scale))
    app = _app(args.app, dbname)
    warm = 200
    pairs = _pairs(dbname, warm + args.requests)
    environs = [
        EnvironBuilder(
            method="POST",
            path=f"/api/v1/notifications/{nid}/read",
            headers=[("Authorization", f"Bearer {bench_token(uid)}")],
        ).get_environ()
        for nid, uid in pairs
    ]
    statuses: Counter[str] = Counter()

    def start_response(status: str, _headers: Any, _exc: Any = None) -> Any:
        statuses[status] += 1
        return None

    def call(batch: list[dict[str, Any]]) -> float:
        started = time.process_time()
        for environ in batch:
            b"".join(app(dict(environ), start_response))
        return (time.process_time() - started) / len(batch) * 1000

    call(environs[:warm])  # connections, statement caches, the first-read path warm
    measured = environs[warm:]
    if args.profile:
        # CPU time, as the figures are: wall time would blame the waits on the database.
        profile = cProfile.Profile(time.process_time)
        profile.enable()
        call(measured)
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(args.sort).print_stats(30)
        print(out.getvalue())
        return
    first = call(measured)
    repeat = call(measured)
    print(
        f"markread_cpu: {dbname}: first reads {first:.3f} ms CPU/request, "
        f"repeat reads {repeat:.3f} ms CPU/request ({len(measured)} each; "
        f"answers {dict(statuses)})"
    )


if __name__ == "__main__":
    main()
