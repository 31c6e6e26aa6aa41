"""GET /metrics: counts that equal what was done, per route template, over several processes."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from rq.registry import FailedJobRegistry
from sqlalchemy import func, select

from dashboard import create_app
from jobs.digest import run_digests
from loops import observe
from loops.database import db
from loops.models import LoopSignal, Notification
from loops.timeutil import utcnow
from tests.support.dashboard import add_run
from tests.support.live_server import LiveServer, start_gunicorn

READ_ROUTE = "/api/v1/notifications/<raw_id>/read"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, labels): Prometheus's own parser."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(client: FlaskClient, **kw: Any) -> Samples:
    response = client.get("/metrics", **kw)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return parse(response.get_data(as_text=True))


def requests_for(samples: Samples, method: str, route: str, status: str) -> float:
    return value(
        samples, "engagement_loops_http_requests_total", method=method, route=route, status=status
    )


def test_a_burst_of_reads_is_counted_per_route_template(client, make, api_as):
    user = make.user()
    make.member(user, make.org())
    notes = [make.notification(user) for _ in range(7)]
    api = api_as(user)
    before = scrape(client)

    for n in notes:
        assert api.post(f"/api/v1/notifications/{n.id}/read").status_code == 200
    for n in notes[:3]:  # repeat reads: answered, no signal
        assert api.post(f"/api/v1/notifications/{n.id}/read").status_code == 200
    for missing in (10**9, 10**9 + 1):
        assert api.post(f"/api/v1/notifications/{missing}/read").status_code == 404
    assert client.post(f"/api/v1/notifications/{notes[0].id}/read").status_code == 401

    after = scrape(client)
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    assert requests_for(delta, "POST", READ_ROUTE, "200") == 10
    assert requests_for(delta, "POST", READ_ROUTE, "404") == 2
    assert requests_for(delta, "POST", READ_ROUTE, "401") == 1
    duration_count = "engagement_loops_http_request_duration_seconds_count"
    assert value(delta, duration_count, method="POST", route=READ_ROUTE) == 13
    # One series per route template, never per id.
    routes = {dict(labels).get("route", "") for _, labels in after}
    assert READ_ROUTE in routes
    assert not [r for r in routes if re.search(r"/\d+(/|$)", r)]
    # Seven first reads recorded seven ENGAGE signals; repeats and 404s none.
    assert value(delta, "engagement_loops_signals_total", kind="ENGAGE", source="web") == 7


def test_unknown_paths_share_one_route_label(client):
    before = scrape(client)
    for path in ("/no/such/page/1", "/no/such/page/2", "/wp-admin.php"):
        assert client.get(path).status_code == 404
    after = scrape(client)
    unmatched = requests_for(after, "GET", "(unmatched)", "404")
    assert unmatched - requests_for(before, "GET", "(unmatched)", "404") == 3


def test_tune_runs_by_state_with_durations(client, make):
    now = utcnow()
    org = make.org()
    for seconds, state in ((0.3, "succeeded"), (4.0, "succeeded"), (45.0, "failed")):
        add_run(org, state, now, started_at=now, finished_at=now + timedelta(seconds=seconds))
    add_run(make.org(), "skipped", now)
    add_run(make.org(), "queued", now)
    add_run(make.org(), "running", now)

    s = scrape(client)
    runs = "engagement_loops_tune_runs_total"
    assert value(s, runs, state="succeeded") == 2
    assert value(s, runs, state="failed") == 1
    assert value(s, runs, state="skipped") == 1
    assert value(s, "engagement_loops_tune_runs_active", state="queued") == 1
    assert value(s, "engagement_loops_tune_runs_active", state="running") == 1
    bucket = "engagement_loops_tune_run_duration_seconds_bucket"
    assert value(s, bucket, state="succeeded", le="0.5") == 1
    assert value(s, bucket, state="succeeded", le="5.0") == 2
    assert value(s, bucket, state="failed", le="30.0") == 0
    assert value(s, bucket, state="failed", le="60.0") == 1
    assert value(s, bucket, state="failed", le="+Inf") == 1
    total = value(s, "engagement_loops_tune_run_duration_seconds_sum", state="succeeded")
    assert total == pytest.approx(4.3, abs=0.01)


def test_bulk_reads_and_created_notifications_count_their_signals(client, make, api_as):
    admin, user = make.user(role="admin"), make.user()
    make.member(user, make.org())
    notes = [make.notification(user) for _ in range(4)]
    before = scrape(client)
    ids = [n.id for n in notes[:3]]
    assert api_as(user).post("/api/v1/notifications/read", json={"ids": ids}).status_code == 200
    body = {"user_id": user.id, "feature": "mention", "title": "Hi"}
    assert api_as(admin).post("/api/v1/notifications", json=body).status_code == 201
    after = scrape(client)

    def signals(kind: str) -> float:
        return value(after, "engagement_loops_signals_total", kind=kind, source="web") - value(
            before, "engagement_loops_signals_total", kind=kind, source="web"
        )

    assert signals("ENGAGE") == 3
    assert signals("DELIVER") == 1


def test_held_notifications(client, make):
    now = utcnow()
    user = make.user()
    for due in (now - timedelta(hours=2), now + timedelta(hours=1), now + timedelta(hours=3)):
        db.session.add(
            Notification(
                user_id=user.id,
                feature="report.ready",
                title="Held",
                created_at=now,
                delivered_at=None,
                deliver_at=due,
            )
        )
    db.session.add(
        Notification(
            user_id=user.id, feature="mention", title="Delivered", created_at=now, delivered_at=now
        )
    )
    db.session.commit()
    s = scrape(client)
    assert value(s, "engagement_loops_held_notifications") == 3
    assert value(s, "engagement_loops_held_notifications_overdue") == 1


def test_queue_depth_failed_jobs_and_workers(client, app, redis_conn):
    from jobs.queue import get_queue

    queue = get_queue(redis_conn)
    jobs = [queue.enqueue("jobs.tune_engagement.perform_runs", [i]) for i in range(3)]
    FailedJobRegistry(queue=queue).add(jobs[0], ttl=600, exc_string="boom")
    queue.remove(jobs[0])

    s = scrape(client)
    name = queue.name
    assert value(s, "engagement_loops_queue_depth", queue=name) == 2
    assert value(s, "engagement_loops_queue_failed_jobs", queue=name) == 1
    assert value(s, "engagement_loops_workers") == 0
    assert value(s, "engagement_loops_scheduler_up") == 0
    assert value(s, "engagement_loops_redis_up") == 1


def test_what_jobs_report_reaches_every_scrape(client, app):
    """Signals written and digest runs finished in a worker (no request) go through Redis."""
    observe.signals_recorded("DELIVER", 3)
    observe.signals_recorded("ENGAGE", 2)
    observe.run_finished("digest", "succeeded", 1.5)
    observe.run_finished("digest", "succeeded", 20.0)
    observe.run_finished("digest", "failed", None)

    s = scrape(client)
    assert value(s, "engagement_loops_signals_total", kind="DELIVER", source="jobs") == 3
    assert value(s, "engagement_loops_signals_total", kind="ENGAGE", source="jobs") == 2
    assert value(s, "engagement_loops_digest_runs_total", state="succeeded") == 2
    assert value(s, "engagement_loops_digest_runs_total", state="failed") == 1
    bucket = "engagement_loops_digest_run_duration_seconds_bucket"
    assert value(s, bucket, le="2.5") == 1
    assert value(s, bucket, le="30.0") == 2
    assert value(s, "engagement_loops_digest_run_duration_seconds_count") == 2


def test_a_dead_redis_leaves_the_rest_of_the_scrape(app_config, redis_conn):
    app = create_app(app_config | {"REDIS_URL": "redis://127.0.0.1:1/0"})
    with app.app_context():
        s = scrape(app.test_client())
    assert value(s, "engagement_loops_redis_up") == 0
    assert value(s, "engagement_loops_database_up") == 1
    assert ("engagement_loops_queue_depth", frozenset({("queue", "engagement")})) not in s


# --- who may read it ----------------------------------------------------------


def test_without_a_token_only_loopback_clients_are_answered(client):
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    remote = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert remote.status_code == 403
    assert "engagement_loops" not in remote.get_data(as_text=True)


@pytest.fixture
def token_app(app: Flask) -> Flask:
    app.config["METRICS_TOKEN"] = "scrape-me-please"
    return app


def test_with_a_token_it_is_required_from_everyone(token_app):
    client = token_app.test_client()
    local = client.get("/metrics")
    assert local.status_code == 401
    assert local.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    good = client.get(
        "/metrics",
        headers={"Authorization": "Bearer scrape-me-please"},
        environ_base={"REMOTE_ADDR": "203.0.113.7"},
    )
    assert good.status_code == 200
    assert "engagement_loops_http_requests_total" in good.get_data(as_text=True)


# --- several gunicorn workers -------------------------------------------------


@pytest.fixture
def server(app: Flask, database_url: str, tmp_path: Path) -> Iterator[tuple[LiveServer, Path]]:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale from a previous start")
    live = start_gunicorn(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": app.config["REDIS_URL"],
            "LOOPS_ENABLED": "true",
            "SECRET_KEY": "metrics-test",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        },
        tmp_path / "gunicorn.log",
        workers=3,
        threads=4,
    )
    yield live, metrics_dir
    live.stop()


@pytest.mark.slow
def test_counts_add_up_over_several_gunicorn_workers(server, make):
    live, metrics_dir = server
    user = make.user()
    make.member(user, make.org())
    ids = [make.notification(user).id for _ in range(400)]
    token = make.token(user)

    def read(chunk: list[int]) -> list[int]:
        statuses = []
        for nid in chunk:
            # A new connection per request, so the kernel may hand them to every worker.
            conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
            conn.request(
                "POST",
                f"/api/v1/notifications/{nid}/read",
                headers={"Authorization": f"Bearer {token}", "Content-Length": "0"},
            )
            response = conn.getresponse()
            assert json.loads(response.read())["first_read"] is True
            statuses.append(response.status)
            conn.close()
        return statuses

    def writers() -> set[str]:
        return {p.name.rsplit("_", 1)[1] for p in metrics_dir.glob("counter_*.db")}

    # Which worker accepts a connection is the kernel's choice: read in rounds of 40
    # until at least two workers have served some (almost always the first round).
    sent: list[int] = []
    with ThreadPoolExecutor(8) as pool:
        for start in range(0, len(ids), 40):
            batch = ids[start : start + 40]
            sent += [s for part in pool.map(read, [batch[i::8] for i in range(8)]) for s in part]
            if len(writers()) >= 2:
                break
    assert sent == [200] * len(sent)

    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    assert response.status == 200
    s = parse(response.read().decode())
    conn.close()

    assert requests_for(s, "POST", READ_ROUTE, "200") == len(sent), live.log()
    assert value(s, "engagement_loops_signals_total", kind="ENGAGE", source="web") == len(sent)
    # The counts came from more than one process (each writes files of its own), and
    # the stale file of a previous start was cleared rather than added in.
    assert len(writers()) >= 2, writers()
    assert "999999.db" not in writers()


def test_a_digest_run_in_a_worker_reaches_the_scrape(client, app, make):
    """The digest job, run as a worker runs it (no request), reports through Redis."""

    now = utcnow()
    user = make.user()
    make.member(user, make.org())
    for _ in range(3):
        db.session.add(
            Notification(
                user_id=user.id,
                feature="report.ready",
                title="Held",
                created_at=now - timedelta(hours=3),
                delivered_at=None,
                deliver_at=now - timedelta(hours=1),
            )
        )
    db.session.commit()
    delivers_before = _deliver_rows()

    outcome = run_digests(now)

    assert (outcome.digests, outcome.items) == (1, 3)
    s = scrape(client)
    assert value(s, "engagement_loops_digest_runs_total", state="succeeded") == 1
    assert value(s, "engagement_loops_digest_run_duration_seconds_count") == 1
    written = _deliver_rows() - delivers_before
    assert written >= 4  # the three items and the digest itself
    assert value(s, "engagement_loops_signals_total", kind="DELIVER", source="jobs") == written
    assert value(s, "engagement_loops_held_notifications") == 0


def _deliver_rows() -> int:
    db.session.rollback()
    return int(
        db.session.execute(
            select(func.count()).select_from(LoopSignal).where(LoopSignal.kind == "DELIVER")
        ).scalar_one()
    )
