"""A run's page: who, when, how it ended, what it changed (with significance) and each
delivery decision; linked from every run row; the RQ job for admins."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

from jobs.runs import run_in_process
from loops.models import Role, RunTrigger
from tests.support.dashboard import add_run, login
from tests.support.jobs import NOW

DAY = timedelta(days=1)


@pytest.fixture
def viewer(client: FlaskClient, make: Any) -> FlaskClient:
    login(client, make.user("viewer@example.com", Role.VIEWER))
    return client


def tune(org_id: int, now: Any) -> int:
    results, _ = run_in_process(
        [org_id], trigger=RunTrigger.CLI, requested_by="pm@example.com", now=now
    )
    return results[0].run_id


def row(html: str, marker: str) -> str:
    start = html.rindex("<tr", 0, html.index(marker))
    return html[start : html.index("</tr>", start)]


def test_run_page_shows_what_a_real_run_changed(
    viewer: FlaskClient, make: Any, signals: Any
) -> None:
    org = make.org("acme", "Acme Analytics")
    # Week one: 10 delivered, 2 read (20%): the interval straddles 0.2 → starts immediate.
    for i in range(10):
        t = NOW - 3 * DAY
        signals.delivery(org, "mention", t, read_at=t + timedelta(hours=1) if i < 2 else None)
    signals.engage_many(org, "report.ready", NOW - 2 * DAY, 30)
    first = tune(org.id, NOW)
    # Week two: 200 more delivered, none read: the ratio drops well below 20% → digest.
    for _ in range(200):
        signals.delivery(org, "mention", NOW + 5 * DAY)
    second = tune(org.id, NOW + 7 * DAY)

    html = viewer.get(f"/runs/{second}").get_data(as_text=True)
    assert f"Run #{second}" in html and "Acme Analytics" in html
    assert "badge-succeeded" in html and "cli" in html and "pm@example.com" in html
    assert f'href="/runs/{first}" rel="prev"' in html
    ratio = row(html, 'data-key="engagement-ratio:mention"')
    # Before → after: 2 of 10 read, then 2 of 210.
    assert '<td class="num muted">20.0%</td>' in ratio
    assert '<td class="num strong">0.9%</td>' in ratio
    assert 'data-change="down"' in ratio and "significant drop" in ratio
    rate = row(html, 'data-key="engagement-rate:report.ready"')
    assert 'data-change="within noise"' in rate  # 30 signals both times: 1.00/day
    assert "1 significant change" in html
    decision = row(html, 'data-feature="mention" data-changed="true"')
    assert "immediate → digest" in decision and "badge-mode-digest" in decision
    assert "&lt; 0.20" in decision  # the reason, in words

    first_html = viewer.get(f"/runs/{first}").get_data(as_text=True)
    assert "first value" in first_html and "starts immediate" in first_html
    assert f'href="/runs/{second}" rel="next"' in first_html


def test_a_failed_run_says_it_wrote_nothing_and_why(viewer: FlaskClient, make: Any) -> None:
    org = make.org("acme")
    run = add_run(org, "failed", NOW, error="RuntimeError: disk on fire")
    html = viewer.get(f"/runs/{run.id}").get_data(as_text=True)
    assert "RuntimeError: disk on fire" in html and 'role="alert"' in html
    assert "This run changed no calibration." in html and "a failed run writes nothing" in html
    queued = add_run(org, "queued", NOW)
    assert "has not finished yet" in viewer.get(f"/runs/{queued.id}").get_data(as_text=True)


def test_timings_read_as_waits_and_durations(viewer: FlaskClient, make: Any) -> None:
    org = make.org("acme")
    run = add_run(
        org,
        "succeeded",
        NOW,
        started_at=NOW + timedelta(seconds=4),
        finished_at=NOW + timedelta(seconds=4, milliseconds=183),
    )
    html = viewer.get(f"/runs/{run.id}").get_data(as_text=True)
    assert "2026-11-23 12:00 UTC" in html
    assert "after 4.0 s in the queue" in html and "took 183 ms" in html


def test_unknown_run_is_404(viewer: FlaskClient) -> None:
    assert viewer.get("/runs/999").status_code == 404
    assert viewer.get("/runs/abc").status_code == 404


def test_every_run_row_links_to_its_page(viewer: FlaskClient, make: Any) -> None:
    org = make.org("acme")
    run = add_run(org, "succeeded", NOW)
    link = f'href="/runs/{run.id}"'
    assert link in viewer.get("/runs").get_data(as_text=True)
    assert link in viewer.get("/tenants/acme").get_data(as_text=True)
    assert link in viewer.get("/tenants/acme/history").get_data(as_text=True)
    active = add_run(org, "running", NOW)
    status = viewer.get(f"/tune/status?since={active.id}").get_data(as_text=True)
    assert f'href="/runs/{active.id}"' in status


def test_admins_get_the_rq_job_and_its_rq_dashboard_link(
    app: Flask, client: FlaskClient, make: Any, redis_conn: Redis
) -> None:
    org = make.org("acme")
    run = add_run(org, "succeeded", NOW, rq_job_id="tune-abc123")
    gone = add_run(org, "succeeded", NOW, rq_job_id="tune-gone")
    from jobs.queue import get_queue

    # A job as the queue holds it (never run here: the page only links to it).
    get_queue(redis_conn).enqueue_call("jobs.runs.enqueue_scheduled_runs", job_id="tune-abc123")
    login(client, make.user("admin@example.com", Role.ADMIN))
    html = client.get(f"/runs/{run.id}").get_data(as_text=True)
    assert "tune-abc123" in html
    assert 'href="/admin/rq/0/view/job/tune-abc123"' in html
    assert client.get("/admin/rq/0/view/job/tune-abc123").status_code == 200
    expired = client.get(f"/runs/{gone.id}").get_data(as_text=True)
    assert "no longer kept by RQ" in expired and "/admin/rq/0/view/job/tune-gone" not in expired

    viewer = app.test_client()
    login(viewer, make.user("v@example.com", Role.VIEWER))
    html = viewer.get(f"/runs/{run.id}").get_data(as_text=True)
    assert "tune-abc123" in html and "/admin/rq/" not in html


def test_run_page_escapes_what_people_typed(viewer: FlaskClient, make: Any) -> None:
    evil = '<script>alert("x")</script>'
    org = make.org("evil", evil)
    run = add_run(org, "failed", NOW, error=evil, requested_by=evil)
    html = viewer.get(f"/runs/{run.id}").get_data(as_text=True)
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert not re.search(r"<script>(?!</)", html.split("</head>")[1])
