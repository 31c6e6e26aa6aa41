"""Bench data generator: tenants, users, notifications and signals via COPY (or SQLite bulk)."""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

import psycopg

from bench.common import (
    ADMIN_EMAIL,
    BENCH_PASSWORD,
    DEFAULT_GROWTH,
    ROOT,
    SEED,
    VIEWER_EMAIL,
    Scale,
    app_env,
    bench_token,
    database_name,
    growth_weight,
    pg_url,
    scale_named,
    token_hash,
    venv_bin,
    window_share,
)
from loops.partitions import (
    AHEAD_MONTHS,
    DEFAULT_PARTITION,
    PARTITION_OPTIONS,
    add_months,
    month_start,
    partition_name,
)

GENERATOR_VERSION = 7  # 7: partitioned indexes rebuilt on every partition
BIG_TABLES = ("notifications", "loop_signals", "org_memberships", "users", "api_tokens")
# A year of weekly tune runs in the calibration history (the dashboard's history charts).
HISTORY_WEEKS = 52
HISTORY_TABLES = ("tune_runs", "loop_calibration_history", "loop_calibrations", "delivery_policies")

# (feature, popularity, chance the recipient ever reads it)
FEATURES = [
    ("mention", 0.20, 0.76),
    ("comment.reply", 0.18, 0.63),
    ("task.assigned", 0.15, 0.70),
    ("report.ready", 0.11, 0.41),
    ("digest.weekly", 0.12, 0.17),
    ("release.notes", 0.10, 0.09),
    ("security.login", 0.08, 0.35),
    ("billing.alert", 0.06, 0.55),
]
TITLES = {
    "mention": "{p} mentioned you in a comment",
    "comment.reply": "{p} replied to your comment",
    "task.assigned": "{p} assigned you a task",
    "report.ready": "Your scheduled report is ready",
    "digest.weekly": "Your weekly digest",
    "release.notes": "What's new this week",
    "security.login": "New sign-in from a new device",
    "billing.alert": "Your invoice is due in 3 days",
}
PEOPLE = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jun"]
# Monday..Sunday: people work on weekdays.
WEEKDAY_FACTOR = [1.0, 1.06, 1.02, 0.97, 0.86, 0.31, 0.22]
# UTC hour of day: a working-day curve.
HOUR_WEIGHTS = [1, 1, 1, 1, 1, 2, 4, 7, 10, 12, 12, 11, 10, 11, 12, 11, 10, 8, 6, 5, 4, 3, 2, 1]
WORDS_A = ["Acme", "Blue", "North", "Swift", "Bright", "Iron", "Silver", "Green", "Polar", "Nova"]
WORDS_B = ["Analytics", "Logistics", "Health", "Payroll", "Foods", "Labs", "Media", "Energy"]
WORDS_C = ["Inc", "GmbH", "Ltd", "Group", "Co", "AB", "SAS", "BV"]


@dataclass
class World:
    """The generated population: who belongs where and how active they are."""

    scale: Scale
    end: int  # epoch seconds: "now" of the data set
    start: int
    primary_org: list[int]  # index = user id
    user_cum: list[float]  # cumulative activity weights over user ids 1..U
    load_users: list[int]


def _progress(label: str, done: int, total: int, started: float) -> None:
    rate = done / max(time.perf_counter() - started, 1e-6)
    print(f"  {label}: {done:,}/{total:,} ({rate:,.0f} rows/s)", flush=True)


def _tenant_name(i: int) -> str:
    return f"{WORDS_A[i % 10]} {WORDS_B[(i // 10) % 8]} {i} {WORDS_C[(i // 80) % 8]}"


def first_day(end: int, days: int) -> int:
    """The data's first day (epoch seconds): whole UTC days, the last one today (cut at end)."""
    return (end // 86_400 - days + 1) * 86_400


def build_world(scale: Scale, now: datetime) -> World:
    rng = random.Random(SEED)
    end = int(now.timestamp()) // 60 * 60
    start = first_day(end, scale.days)
    # Zipf-like tenant sizes: tenant 1 is the biggest, most tenants are small.
    org_weights = [1 / (i**1.07) for i in range(1, scale.tenants + 1)]
    org_cum = list(accumulate(org_weights))
    primary = [
        0,
        *[bisect.bisect_left(org_cum, rng.random() * org_cum[-1]) + 1 for _ in range(scale.users)],
    ]
    # Lognormal activity: a few users get most notifications.
    activity = [rng.lognormvariate(0, 0.9) for _ in range(scale.users)]
    step = max(1, scale.users // max(1, scale.load_users))
    load_users = list(range(1, scale.users + 1, step))[: scale.load_users]
    return World(scale, end, start, primary, list(accumulate(activity)), load_users)


def _avg_read_rate() -> float:
    total = sum(p for _, p, _ in FEATURES)
    return sum(p * r for _, p, r in FEATURES) / total


def notification_stream(
    world: World,
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Per day: (notification rows kept in the table, signal rows) in time order.

    Every notification ever delivered in the window gets a DELIVER signal and, if
    read, an ENGAGE signal at its first read; the notifications table keeps only the
    most recent ``scale.notifications`` of them (older ones are purged, as retention
    does in production), so signals outnumber notifications as in the issue's data set.
    """
    scale = world.scale
    rng = random.Random(SEED + 1)
    virtual = int(scale.signals / (1 + _avg_read_rate()))
    first_kept = max(1, virtual - scale.notifications + 1)
    names = [f for f, _, _ in FEATURES]
    read_rate = {f: r for f, _, r in FEATURES}
    weekday_cum = []
    for weekday in range(7):
        # Weekly digests go out on Mondays.
        weights = [
            p
            * (
                5.0
                if f == "digest.weekly" and weekday == 0
                else 0.3
                if f == "digest.weekly"
                else 1.0
            )
            for f, p, _ in FEATURES
        ]
        weekday_cum.append(list(accumulate(weights)))
    hour_cum = list(accumulate(HOUR_WEIGHTS))
    days = [world.start + d * 86_400 for d in range(scale.days)]
    # Weekly rhythm and a slow growth over the period (10 % unless the scale says).
    day_weights = [
        WEEKDAY_FACTOR[datetime.fromtimestamp(t, UTC).weekday()]
        * growth_weight(scale, i)
        * min(1.0, (world.end - t) / 86_400)  # today: only the hours so far
        for i, t in enumerate(days)
    ]
    total_weight = sum(day_weights)
    counts = [int(virtual * w / total_weight) for w in day_weights]
    counts[-1] += virtual - sum(counts)
    users = range(1, scale.users + 1)
    nid = 0
    sid = 0
    for day_start, count in zip(days, counts, strict=True):
        weekday = datetime.fromtimestamp(day_start, UTC).weekday()
        recipients = rng.choices(users, cum_weights=world.user_cum, k=count)
        features = rng.choices(names, cum_weights=weekday_cum[weekday], k=count)
        cum = hour_cum[: max(1, min(24, -(-(world.end - day_start) // 3600)))]
        hours = [bisect.bisect_left(cum, rng.random() * cum[-1]) for _ in range(count)]
        created = sorted(day_start + h * 3600 + rng.randrange(3600) for h in hours)
        notes: list[tuple[Any, ...]] = []
        signals: list[tuple[Any, ...]] = []
        for user, feature, at in zip(recipients, features, created, strict=True):
            if at >= world.end:
                continue
            nid += 1
            org = world.primary_org[user]
            read_at: int | None = None
            if rng.random() < read_rate[feature]:
                candidate = at + int(rng.expovariate(1 / 10_800))
                if candidate < world.end:
                    read_at = candidate
            sid += 1
            signals.append((sid, org, "DELIVER", feature, user, nid, at))
            if read_at is not None:
                sid += 1
                signals.append((sid, org, "ENGAGE", feature, user, nid, read_at))
            if nid >= first_kept:
                title = TITLES[feature].format(p=PEOPLE[nid % len(PEOPLE)])
                notes.append((nid, user, feature, title, at, read_at))
        yield notes, signals


# --- timestamp formatting -------------------------------------------------------------

_DAY_CACHE: dict[int, str] = {}


def _day(epoch_day: int) -> str:
    text = _DAY_CACHE.get(epoch_day)
    if text is None:
        text = (datetime(1970, 1, 1) + timedelta(days=epoch_day)).strftime("%Y-%m-%d")
        _DAY_CACHE[epoch_day] = text
    return text


def ts_pg(t: int) -> str:
    d, s = divmod(t, 86_400)
    return f"{_day(d)} {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+00"


def ts_sqlite(t: int | None) -> str | None:
    if t is None:
        return None
    d, s = divmod(t, 86_400)
    return f"{_day(d)} {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.000000"


# --- small tables ---------------------------------------------------------------------


def small_tables(world: World, ts: Callable[[int], Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Organizations, users, memberships and API tokens as rows (timestamps via ``ts``)."""
    from werkzeug.security import generate_password_hash

    scale = world.scale
    rng = random.Random(SEED + 2)
    created = world.start - 400 * 86_400
    orgs = [
        (i, f"t{i:04d}", _tenant_name(i), ts(created + i * 600))
        for i in range(1, scale.tenants + 1)
    ]
    users: list[tuple[Any, ...]] = [
        (u, f"user{u}@t{world.primary_org[u]:04d}.bench.test", None, "member", ts(created), 0)
        for u in range(1, scale.users + 1)
    ]
    password = generate_password_hash(BENCH_PASSWORD)
    admin_id, viewer_id = scale.users + 1, scale.users + 2
    users.append((admin_id, ADMIN_EMAIL, password, "admin", ts(created), 0))
    users.append((viewer_id, VIEWER_EMAIL, password, "viewer", ts(created), 0))
    memberships: list[tuple[Any, ...]] = []
    for u in range(1, scale.users + 1):
        joined = world.start - rng.randrange(30 * 86_400, 700 * 86_400)
        memberships.append((len(memberships) + 1, u, world.primary_org[u], ts(joined)))
        # One user in seven also belongs to a second tenant, joined later.
        if scale.tenants > 1 and rng.random() < 1 / 7:
            other = rng.randrange(1, scale.tenants + 1)
            if other != world.primary_org[u]:
                later = joined + rng.randrange(86_400, 200 * 86_400)
                memberships.append((len(memberships) + 1, u, other, ts(later)))
    tokens = [
        (i + 1, u, "bench", token_hash(bench_token(u)), ts(created), None, None)
        for i, u in enumerate([*world.load_users, admin_id, viewer_id])
    ]
    return {
        "organizations": orgs,
        "users": users,
        "org_memberships": memberships,
        "api_tokens": tokens,
    }


COLUMNS = {
    "organizations": ("id", "slug", "name", "created_at"),
    "users": ("id", "email", "password_hash", "role", "created_at", "session_version"),
    "org_memberships": ("id", "user_id", "org_id", "joined_at"),
    "api_tokens": (
        "id",
        "user_id",
        "name",
        "token_hash",
        "created_at",
        "last_used_at",
        "revoked_at",
    ),
    "notifications": (
        "id",
        "user_id",
        "feature",
        "title",
        "created_at",
        "read_at",
        "first_read_at",
        "delivered_at",
    ),
    "loop_signals": ("id", "org_id", "kind", "feature", "user_id", "subject_id", "created_at"),
    "tune_runs": (
        "id",
        "org_id",
        "trigger",
        "requested_by",
        "state",
        "enqueued_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "calibrations_written",
    ),
    "loop_calibration_history": (
        "id",
        "org_id",
        "key",
        "value",
        "sample_size",
        "window_days",
        "engaged",
        "interval_low",
        "interval_high",
        "estimate",
        "run_id",
        "computed_at",
        "mode",
        "mode_reason",
        "mode_changed",
    ),
    "loop_calibrations": (
        "id",
        "org_id",
        "key",
        "value",
        "sample_size",
        "window_days",
        "computed_at",
        "distinct_users",
        "run_id",
        "previous_value",
        "previous_sample_size",
        "previous_computed_at",
        "previous_run_id",
        "engaged",
        "interval_low",
        "interval_high",
        "estimate",
    ),
    "delivery_policies": (
        "id",
        "org_id",
        "feature",
        "mode",
        "reason",
        "decided_at",
        "run_id",
        "mode_since",
        "ratio",
        "interval_low",
        "interval_high",
        "sample_size",
    ),
}


# --- a year of weekly runs ---------------------------------------------------------


def _binomial(rng: random.Random, n: int, p: float) -> int:
    if n <= 60:
        return sum(1 for _ in range(n) if rng.random() < p)
    sd = (n * p * (1 - p)) ** 0.5
    return min(n, max(0, round(rng.gauss(n * p, sd))))


def history_tables(
    world: World, ts: Callable[[int], Any], weeks: int = HISTORY_WEEKS
) -> dict[str, list[tuple[Any, ...]]]:
    """What a year of weekly tune runs would have left: runs, every value they wrote, the
    current calibrations (the last week's, with the week before as previous) and each
    tenant's delivery policy. Drawn, not tuned: each tenant reads each feature at its own
    rate (drifting slowly over the year) out of a 30-day volume that follows the tenant's
    size, so the values, intervals, shrunk estimates and decisions are what the tune's
    own formulas give for such counts."""
    from loops.policy_rules import DeliveryMode, Evidence, decide
    from loops.settings import DEFAULT_POLICY_DIGEST_BELOW
    from loops.stats import fit_beta_prior, shrunk_estimate, wilson_interval

    scale = world.scale
    rng = random.Random(SEED + 3)
    window = 30
    # The weekly cron (Monday 05:30 UTC), the last firing before the data set's "now".
    last = world.end - (world.end - 4 * 86_400 - 5 * 3600 - 1800) % (7 * 86_400)
    fire = [last - k * 7 * 86_400 for k in range(weeks - 1, -1, -1)]
    virtual_per_day = scale.signals / (1 + _avg_read_rate()) / scale.days
    if scale.growth != DEFAULT_GROWTH:
        # A long, growing history: each week's counts come from the volume of the
        # window the tune reads (the last 30 days), not from the mean day of 400. Scales
        # with the default growth keep the mean day, as they were generated before
        # growth was a field (their fingerprint, and so their data, is unchanged).
        virtual_per_day *= window_share(scale, window) * scale.days / window
    org_weights = [1 / (i**1.07) for i in range(1, scale.tenants + 1)]
    total_weight = sum(org_weights)
    popularity = sum(p for _, p, _ in FEATURES)
    taste = {
        (org, f): min(0.97, r * rng.lognormvariate(0, 0.2))
        for org in range(1, scale.tenants + 1)
        for f, _, r in FEATURES
    }
    drift = {key: rng.uniform(-0.15, 0.15) for key in taste}
    runs: list[tuple[Any, ...]] = []
    history: list[tuple[Any, ...]] = []
    current: dict[tuple[int, str], list[tuple[Any, ...]]] = {}  # (org, key) → written
    policies: dict[tuple[int, str], list[Any]] = {}
    run_id = history_id = 0
    for week, at in enumerate(fire):
        growth = 0.9 + 0.2 * week / max(weeks - 1, 1)
        counts: dict[tuple[int, str], tuple[int, int]] = {}
        for org in range(1, scale.tenants + 1):
            share = org_weights[org - 1] / total_weight
            for f, p, _ in FEATURES:
                n = _binomial(rng, int(virtual_per_day * window * share * p / popularity * 2), 0.5)
                n = round(n * growth)
                if n > 0:
                    read = taste[(org, f)] * (1 + drift[(org, f)] * (week / weeks - 0.5))
                    counts[(org, f)] = (_binomial(rng, n, min(max(read, 0.0), 1.0)), n)
        priors = {
            f: fit_beta_prior([c for (o, g), c in counts.items() if g == f]) for f, _, _ in FEATURES
        }
        for org in range(1, scale.tenants + 1):
            mine = [(f, counts[(org, f)]) for f, _, _ in FEATURES if (org, f) in counts]
            if not mine:
                continue
            run_id += 1
            started = at + rng.randrange(1, 120)
            finished = started + 1
            runs.append(
                (
                    run_id,
                    org,
                    "schedule",
                    None,
                    "succeeded",
                    ts(at),
                    ts(started),
                    ts(finished),
                    ts(finished),
                    2 * len(mine),
                )
            )
            for f, (engaged, n) in mine:
                low, high = wilson_interval(engaged, n)
                prior = priors[f]
                estimate = shrunk_estimate(engaged, n, prior) if prior else None
                ratio = round(engaged / n, 4)
                policy = policies.get((org, f))
                was = DeliveryMode(policy[0]) if policy else None
                decision = decide(
                    f, Evidence(ratio, low, high, n), DEFAULT_POLICY_DIGEST_BELOW, was
                )
                changed = policy is None or policy[0] != decision.mode.value
                since = at if policy is None or changed else policy[1]
                policies[(org, f)] = [decision.mode.value, since, decision.reason, at, run_id]
                policies[(org, f)] += [ratio, low, high, n]
                rate = round(engaged / window, 4)
                for key, value, size, extra in (
                    (f"engagement-rate:{f}", rate, engaged, (None, None, None, None)),
                    (f"engagement-ratio:{f}", ratio, n, (engaged, low, high, estimate)),
                ):
                    history_id += 1
                    is_ratio = key.startswith("engagement-ratio:")
                    history.append(
                        (
                            history_id,
                            org,
                            key,
                            value,
                            size,
                            window,
                            *extra,
                            run_id,
                            ts(at),
                            decision.mode.value if is_ratio else None,
                            decision.reason if is_ratio else None,
                            ("t" if changed else "f") if is_ratio else None,
                        )
                    )
                    current.setdefault((org, key), []).append((value, size, at, run_id, *extra))
    calibrations = []
    for i, ((org, key), written) in enumerate(sorted(current.items()), start=1):
        value, size, at, run, *measured = written[-1]
        before: tuple[Any, ...] = written[-2] if len(written) > 1 else (None, None, None, None)
        calibrations.append(
            (
                i,
                org,
                key,
                value,
                size,
                window,
                ts(at),
                None,
                run,
                before[0],
                before[1],
                ts(before[2]) if before[2] else None,
                before[3],
                *measured,
            )
        )
    policy_rows = [
        (i, org, f, mode, reason, ts(decided), run, ts(since), ratio, low, high, n)
        for i, ((org, f), (mode, since, reason, decided, run, ratio, low, high, n)) in enumerate(
            sorted(policies.items()), start=1
        )
    ]
    return {
        "tune_runs": runs,
        "loop_calibration_history": history,
        "loop_calibrations": calibrations,
        "delivery_policies": policy_rows,
    }


DATA_FIELDS = ("tenants", "users", "notifications", "signals", "days", "load_users")


def fingerprint(scale: Scale) -> str:
    """What the data depends on (not run lengths or sample counts).

    Growth counts only when it is not the default: data sets generated before it was a
    field keep their fingerprint, and so stay valid.
    """
    shape = {k: v for k, v in scale.as_dict().items() if k in DATA_FIELDS}
    if scale.growth != DEFAULT_GROWTH:
        shape["growth"] = scale.growth
    return json.dumps({"version": GENERATOR_VERSION, "seed": SEED, **shape}, sort_keys=True)


def migrate(database_url: str) -> None:
    subprocess.run(
        [venv_bin("flask"), "--app", "wsgi", "db", "upgrade"],
        cwd=ROOT,
        env=app_env(database_url),
        check=True,
        capture_output=True,
    )


# --- PostgreSQL -----------------------------------------------------------------------


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    return str(value)


def _copy_rows(cur: psycopg.Cursor[Any], table: str, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    cols = ", ".join(COLUMNS[table])
    with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
        buf = ["\t".join(_copy_text(v) for v in row) for row in rows]
        copy.write("\n".join(buf) + "\n")


def ensure_pg_database(dbname: str) -> None:
    with psycopg.connect(pg_url("postgres", "postgresql"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{dbname}"')
            print(f"  created database {dbname}")


def pg_fingerprint(conn: psycopg.Connection[Any]) -> str | None:
    conn.execute("CREATE TABLE IF NOT EXISTS bench_meta (key text PRIMARY KEY, value text)")
    row = conn.execute("SELECT value FROM bench_meta WHERE key = 'fingerprint'").fetchone()
    age = conn.execute(
        "SELECT now() - value::timestamptz < interval '20 hours' FROM bench_meta "
        "WHERE key = 'generated_at'"
    ).fetchone()
    conn.commit()
    if row is None or not age or not age[0]:
        return None
    return str(row[0])


def _secondary_indexes(cur: psycopg.Cursor[Any], tables: tuple[str, ...]) -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of indexes that do not back a constraint.

    pg_indexes shows a partitioned table's index as ``ON ONLY <parent>``: run as it
    stands, that creates an INVALID index on the parent and none on the partitions
    (every scan then reads whole partitions). Without ONLY it builds on each one.
    """
    return [
        (str(name), str(sql).replace(" ON ONLY ", " ON ", 1))
        for name, sql in cur.execute(
            """
            SELECT i.indexname, i.indexdef FROM pg_indexes i
            WHERE i.schemaname = 'public' AND i.tablename = ANY(%s)
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                              WHERE c.conname = i.indexname)
            """,
            (list(tables),),
        ).fetchall()
    ]


def generate_pg(scale: Scale, dbname: str, force: bool) -> bool:
    """Build the data set in PostgreSQL ``dbname``; False when it was already there."""
    ensure_pg_database(dbname)
    migrate(pg_url(dbname))
    with psycopg.connect(pg_url(dbname, "postgresql")) as conn:
        if not force and pg_fingerprint(conn) == fingerprint(scale):
            problems = layout_problems(conn)
            if not problems:
                print(f"  {dbname}: data set already generated for scale {scale.name}; skipping")
                return False
            print(f"  {dbname}: regenerating: {'; '.join(problems)}", flush=True)
        started = time.perf_counter()
        now = datetime.now(UTC)
        world = build_world(scale, now)
        cur = conn.cursor()
        cur.execute("SET session_replication_role = replica")  # no FK triggers during the load
        cur.execute("SET maintenance_work_mem = '1GB'")
        cur.execute("DELETE FROM bench_meta")
        cur.execute("TRUNCATE organizations, users RESTART IDENTITY CASCADE")
        # A prune of an earlier data set recorded its cutoff: the rollup would never
        # recount a day before it again.
        cur.execute("TRUNCATE loop_signal_prunes")
        months = _month_partitions(
            cur, month_start(datetime.fromtimestamp(world.start, UTC)), month_start(now)
        )
        print(f"  loop_signals: {months} month partitions", flush=True)
        indexes = _secondary_indexes(cur, BIG_TABLES)
        for name, _ in indexes:
            cur.execute(f'DROP INDEX "{name}"')
        for table, rows in small_tables(world, ts_pg).items():
            _copy_rows(cur, table, rows)
            print(f"  {table}: {len(rows):,}", flush=True)
        t0 = time.perf_counter()
        done_n = done_s = 0
        for notes, signals in notification_stream(world):
            _copy_rows(
                cur,
                "notifications",
                [
                    (
                        n,
                        u,
                        f,
                        title,
                        ts_pg(at),
                        ts_pg(r) if r else None,
                        ts_pg(r) if r else None,
                        ts_pg(at),
                    )
                    for n, u, f, title, at, r in notes
                ],
            )
            _copy_signals(cur, signals)
            done_n += len(notes)
            done_s += len(signals)
            if done_s // 1_000_000 != (done_s - len(signals)) // 1_000_000:
                _progress("signals", done_s, scale.signals, t0)
        _progress("signals", done_s, scale.signals, t0)
        print(f"  notifications: {done_n:,}", flush=True)
        strays = _default_rows(cur)
        if strays:
            raise RuntimeError(f"{strays:,} signals landed in {DEFAULT_PARTITION}")
        print(f"  {DEFAULT_PARTITION}: 0 rows", flush=True)
        # The load ran with triggers off (replica): claim each ENGAGE/DELIVER pair in
        # the exactly-once guard here, as the insert trigger would have.
        cur.execute("TRUNCATE loop_signal_once")
        _claim(cur, "loop_signals")
        for name, sql in indexes:
            t1 = time.perf_counter()
            cur.execute(sql)
            print(f"  index {name}: {time.perf_counter() - t1:.1f}s", flush=True)
        for table in (*BIG_TABLES, "organizations"):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
        cur.execute(
            "INSERT INTO loop_signal_daily (org_id, kind, feature, day, count) "
            "SELECT org_id, kind, feature, (created_at AT TIME ZONE 'UTC')::date, count(*) "
            "FROM loop_signals GROUP BY 1, 2, 3, 4"
        )
        t1 = time.perf_counter()
        for table, rows in history_tables(world, ts_pg).items():
            for start in range(0, len(rows), 100_000):
                _copy_rows(cur, table, rows[start : start + 100_000])
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
            print(f"  {table}: {len(rows):,}", flush=True)
        print(f"  {HISTORY_WEEKS} weeks of history: {time.perf_counter() - t1:.1f}s", flush=True)
        cur.execute(
            "INSERT INTO bench_meta VALUES ('fingerprint', %s), ('generated_at', now()::text), "
            "('end_epoch', %s)",
            (fingerprint(scale), str(world.end)),
        )
        conn.commit()
        conn.autocommit = True
        t1 = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        print(f"  vacuum analyze: {time.perf_counter() - t1:.1f}s")
        elapsed = round(time.perf_counter() - started, 1)
        size = database_bytes(conn)
        conn.execute(
            "INSERT INTO bench_meta VALUES ('generate_seconds', %s), ('database_bytes', %s)",
            (str(elapsed), str(size)),
        )
        print(f"  generated {dbname} in {elapsed:.1f}s; database size {size / 2**30:.2f} GiB")
        return True


def database_bytes(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    conn.commit()
    return int(row[0]) if row else 0


def bench_meta(dbname: str) -> dict[str, str]:
    """What the generator recorded about a PostgreSQL data set (fingerprint, when, size)."""
    with psycopg.connect(pg_url(dbname, "postgresql")) as conn:
        return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM bench_meta")}


def _copy_signals(cur: psycopg.Cursor[Any], signals: list[tuple[Any, ...]]) -> None:
    _copy_rows(
        cur, "loop_signals", [(i, o, k, f, u, s, ts_pg(at)) for i, o, k, f, u, s, at in signals]
    )


def _claim(cur: psycopg.Cursor[Any], table: str) -> None:
    """Claim ``table``'s ENGAGE/DELIVER pairs in the exactly-once guard (the insert
    trigger does it for every other writer; a load with triggers off must do it itself)."""
    cur.execute(
        "INSERT INTO loop_signal_once (kind, subject_id, created_at) "
        f"SELECT kind, subject_id, created_at FROM {table} "
        "WHERE kind IN ('ENGAGE', 'DELIVER') AND subject_id IS NOT NULL"
    )


def _month_partitions(cur: psycopg.Cursor[Any], first: datetime, current: datetime) -> int:
    """Exactly the month partitions ``first`` .. ``current`` + AHEAD_MONTHS, all empty.

    Runs on a truncated loop_signals, before the load: each row then goes to its month's
    partition, as in a database that grew month by month under the maintenance job
    (the migration alone creates months from "now" on, which would leave the history in
    the default partition). Names and storage options are loops.partitions' own;
    months outside the range (an earlier data set's) are dropped.
    """
    wanted = []
    month = first
    while month <= add_months(current, AHEAD_MONTHS):
        wanted.append(month)
        month = add_months(month, 1)
    names = {partition_name(m) for m in wanted}
    existing = {
        str(name)
        for (name,) in cur.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'loop_signals'::regclass"
        ).fetchall()
    }
    for name in sorted(existing - names - {DEFAULT_PARTITION}):
        cur.execute(f"DROP TABLE {name}")
    for month in wanted:
        if partition_name(month) not in existing:
            _create_partition(cur, month)
    return len(wanted)


def _create_partition(cur: psycopg.Cursor[Any], month: datetime) -> None:
    cur.execute(
        f"CREATE TABLE {partition_name(month)} PARTITION OF loop_signals "
        f"FOR VALUES FROM ('{month.isoformat()}') TO ('{add_months(month, 1).isoformat()}') "
        f"WITH ({PARTITION_OPTIONS})"
    )


def _default_rows(cur: psycopg.Cursor[Any]) -> int:
    row = cur.execute(f"SELECT count(*) FROM {DEFAULT_PARTITION}").fetchone()
    return int(row[0]) if row else 0


def layout_problems(conn: psycopg.Connection[Any]) -> list[str]:
    """Why a data set with the right fingerprint is still not the one this generator makes.

    Data sets generated before the month partitions were created up front hold their
    older signals in the default partition; ones whose indexes were rebuilt ``ON
    ONLY`` the parent have an invalid index and none on the partitions.
    """
    cur = conn.cursor()
    problems = []
    strays = _default_rows(cur)
    if strays:
        problems.append(f"{strays:,} signals in {DEFAULT_PARTITION}")
    meta = dict(cur.execute("SELECT key, value FROM bench_meta").fetchall())
    if "end_epoch" in meta and "fingerprint" in meta:
        # A month dropped by a prune that was not followed by restore_signals.
        end = int(meta["end_epoch"])
        days = int(json.loads(meta["fingerprint"])["days"])
        month = month_start(datetime.fromtimestamp(first_day(end, days), UTC))
        while month <= month_start(datetime.fromtimestamp(end, UTC)):
            exists = cur.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (partition_name(month),)
            ).fetchone()
            if not exists or not exists[0]:
                problems.append(f"partition {partition_name(month)} missing")
            month = add_months(month, 1)
    invalid = [
        str(name)
        for (name,) in cur.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND NOT i.indisvalid"
        ).fetchall()
    ]
    if invalid:
        problems.append(f"invalid index {', '.join(invalid)}")
    conn.commit()
    return problems


def restore_signals(scale: Scale, dbname: str, months: list[datetime]) -> int:
    """Put back the signals of ``months`` (each dropped by a prune): same rows, same ids.

    The data set is rebuilt from its seed and its recorded "now" (``end_epoch``): the
    stream is replayed from the first day until past the last month, and only those
    months' signals are written — each month's partition created again, its rows
    COPYed, claimed in the exactly-once guard, counted into ``loop_signal_daily`` as
    the generator does, vacuumed and analysed. The prune's record is removed, so the
    rollup may recount those days again. Returns the rows written.
    """
    with psycopg.connect(pg_url(dbname, "postgresql")) as conn:
        row = conn.execute("SELECT value FROM bench_meta WHERE key = 'end_epoch'").fetchone()
        if row is None:
            raise RuntimeError(f"{dbname}: no end_epoch in bench_meta; regenerate instead")
        world = build_world(scale, datetime.fromtimestamp(int(row[0]), UTC))
        spans = [(int(m.timestamp()), int(add_months(m, 1).timestamp())) for m in months]
        last = max(end for _, end in spans)
        cur = conn.cursor()
        cur.execute("SET session_replication_role = replica")
        for month in months:
            _create_partition(cur, month)
        written = 0
        for day, (_, signals) in zip(
            range(world.start, world.end, 86_400), notification_stream(world), strict=False
        ):
            if day >= last:
                break  # later days' signals are all later (an ENGAGE follows its DELIVER)
            keep = [s for s in signals if any(a <= s[6] < b for a, b in spans)]
            _copy_signals(cur, keep)
            written += len(keep)
        for month in months:
            name = partition_name(month)
            _claim(cur, name)
            start, end = month, add_months(month, 1)
            cur.execute(
                "DELETE FROM loop_signal_daily WHERE day >= %s AND day < %s",
                (start.date(), end.date()),
            )
            cur.execute(
                "INSERT INTO loop_signal_daily (org_id, kind, feature, day, count) "
                "SELECT org_id, kind, feature, (created_at AT TIME ZONE 'UTC')::date, count(*) "
                f"FROM {name} GROUP BY 1, 2, 3, 4"
            )
        cur.execute("DELETE FROM loop_signal_prunes")
        conn.commit()
        conn.autocommit = True
        for month in months:
            conn.execute(f"VACUUM ANALYZE {partition_name(month)}")
        conn.execute("VACUUM ANALYZE loop_signal_once")
        conn.execute("ANALYZE loop_signals")
    return written


# --- SQLite ---------------------------------------------------------------------------


def generate_sqlite(scale: Scale, path: Path, force: bool) -> bool:
    """Build the data set in a SQLite file (bulk executemany: SQLite has no COPY)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path}"
    migrate(url)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS bench_meta (key text PRIMARY KEY, value text)")
    row = conn.execute("SELECT value FROM bench_meta WHERE key='fingerprint'").fetchone()
    generated = conn.execute("SELECT value FROM bench_meta WHERE key='generated_at'").fetchone()
    fresh = generated is not None and time.time() - float(generated[0]) < 20 * 3600
    if not force and row is not None and row[0] == fingerprint(scale) and fresh:
        print(f"  {path.name}: data set already generated for scale {scale.name}; skipping")
        conn.close()
        return False
    started = time.perf_counter()
    world = build_world(scale, datetime.now(UTC))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA foreign_keys=OFF")
    tables = [
        "loop_signal_daily",
        "loop_calibrations",
        "tune_runs",
        "loop_signals",
        "notifications",
        "api_tokens",
        "org_memberships",
        "users",
        "organizations",
    ]
    extra = [
        r[0]
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        if r[0] not in tables
        and r[0] not in ("bench_meta", "alembic_version")
        and not r[0].startswith("sqlite_")
    ]
    with conn:
        conn.execute("DELETE FROM bench_meta")
        for table in extra + tables:
            conn.execute(f"DELETE FROM {table}")
    indexes = [
        (name, sql)
        for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL "
            "AND tbl_name IN ('loop_signals', 'notifications')"
        )
    ]
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')

    def insert(table: str, rows: list[tuple[Any, ...]]) -> None:
        cols = COLUMNS[table]
        conn.executemany(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows
        )

    with conn:
        for table, rows in small_tables(world, ts_sqlite).items():
            insert(table, rows)
            print(f"  {table}: {len(rows):,}", flush=True)
        t0 = time.perf_counter()
        done_s = 0
        for notes, signals in notification_stream(world):
            insert(
                "notifications",
                [
                    (n, u, f, title, ts_sqlite(at), ts_sqlite(r), ts_sqlite(r), ts_sqlite(at))
                    for n, u, f, title, at, r in notes
                ],
            )
            insert(
                "loop_signals",
                [(i, o, k, f, u, s, ts_sqlite(at)) for i, o, k, f, u, s, at in signals],
            )
            done_s += len(signals)
        _progress("signals", done_s, scale.signals, t0)
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute(
            "INSERT INTO loop_signal_daily (org_id, kind, feature, day, count) "
            "SELECT org_id, kind, feature, date(created_at), count(*) FROM loop_signals "
            "GROUP BY 1, 2, 3, 4"
        )
        conn.execute(
            "INSERT INTO bench_meta VALUES ('fingerprint', ?), ('generated_at', ?), "
            "('end_epoch', ?)",
            (fingerprint(scale), str(time.time()), str(world.end)),
        )
    conn.execute("ANALYZE")
    conn.close()
    print(f"  generated {path} in {time.perf_counter() - started:.1f}s")
    return True


def sqlite_path(scale: Scale) -> Path:
    folder = os.environ.get("BENCH_SQLITE_DIR") or str(ROOT / "instance" / "bench")
    return Path(folder) / f"el_bench_{scale.name}.db"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--scale", default="quick", help="full, history, signals1m, medium, quick, smoke, ..."
    )
    parser.add_argument("--sqlite", action="store_true", help="generate a SQLite file instead")
    parser.add_argument("--db", help="PostgreSQL database name (default el_bench_<scale>)")
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)
    scale = scale_named(args.scale)
    print(
        f"generate: scale={scale.name} tenants={scale.tenants:,} users={scale.users:,} "
        f"notifications={scale.notifications:,} signals~{scale.signals:,} days={scale.days} "
        f"growth={scale.growth:.0%}",
        flush=True,
    )
    if args.sqlite:
        generate_sqlite(scale, sqlite_path(scale), args.force)
    else:
        generate_pg(scale, args.db or database_name(scale), args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
