"""Run now from the dashboard: roles, CSRF, de-duplication, the self-polling partial, banners."""

from __future__ import annotations

import warnings
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import func, select

from jobs import constants
from jobs.tune_engagement import perform_runs_now
from loops.database import db
from loops.models import Role, TuneRun
from loops.timeutil import utcnow
from tests.support.dashboard import add_run, csrf_token, htmx_post, login

RUN_ROUTES = ("/tune/run", "/tenants/acme/tune", "/tune/rerun-failed")


@pytest.fixture
def app_config(app_config: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    """Per-test overrides through indirect parametrization."""
    return {**app_config, **getattr(request, "param", {})}


@pytest.fixture
def admin(client: FlaskClient, make: Any) -> FlaskClient:
    make.org("acme", "Acme Analytics")
    login(client, make.user("admin@example.com", Role.ADMIN))
    return client


def _runs() -> list[TuneRun]:
    db.session.expire_all()
    return list(db.session.execute(select(TuneRun).order_by(TuneRun.id)).scalars())


# --- who may press Run ---------------------------------------------------------


@pytest.mark.parametrize("route", RUN_ROUTES)
def test_viewer_gets_403_even_with_a_valid_token(
    client: FlaskClient, make: Any, route: str
) -> None:
    make.org("acme")
    login(client, make.user("v@example.com", Role.VIEWER))
    token = csrf_token(client, "/")
    assert htmx_post(client, route, token).status_code == 403
    assert client.post(route, data={"csrf_token": token}).status_code == 403
    assert _runs() == []


@pytest.mark.parametrize("route", RUN_ROUTES)
def test_anonymous_is_sent_to_login(client: FlaskClient, make: Any, route: str) -> None:
    make.org("acme")
    token = csrf_token(client, "/login")
    response = client.post(route, data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    assert _runs() == []


@pytest.mark.parametrize("route", RUN_ROUTES)
def test_admin_without_csrf_token_gets_400(admin: FlaskClient, route: str) -> None:
    assert htmx_post(admin, route, None).status_code == 400
    assert htmx_post(admin, route, "forged-token").status_code == 400
    assert _runs() == []


# --- Run now and the live partial ------------------------------------------------


def test_run_one_tenant_returns_the_polling_partial(admin: FlaskClient, redis_conn: Redis) -> None:
    token = csrf_token(admin, "/")
    response = htmx_post(admin, "/tenants/acme/tune", token)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    (run,) = _runs()
    assert run.state == "queued" and run.trigger == "manual"
    assert run.requested_by == "admin@example.com"
    assert html.startswith('<section id="run-status"')
    assert 'hx-trigger="load delay:1s"' in html
    assert f"/tune/status?since={run.id}" in html
    assert "badge-queued" in html and "Acme Analytics" in html
    assert redis_conn.exists(f"rq:job:{run.rq_job_id}")


def test_second_click_shows_the_active_run_instead_of_starting_another(
    admin: FlaskClient,
) -> None:
    token = csrf_token(admin, "/")
    htmx_post(admin, "/tenants/acme/tune", token)
    second = htmx_post(admin, "/tenants/acme/tune", token)
    assert second.status_code == 200
    (run,) = _runs()
    assert f"status-run-{run.id}" in second.get_data(as_text=True)


def test_polling_stops_when_the_runs_finish(app: Flask, admin: FlaskClient, make: Any) -> None:
    org = make.org("globex", "Globex")
    token = csrf_token(admin, "/")
    htmx_post(admin, "/tune/run", token, cells=f"{org.id}")
    runs = _runs()
    assert len(runs) == 2
    first = runs[0].id

    poll = admin.get(f"/tune/status?since={first}&cells={org.id}", headers={"HX-Request": "true"})
    assert 'hx-trigger="load delay:1s"' in poll.get_data(as_text=True)
    assert "HX-Trigger" not in poll.headers

    perform_runs_now([r.id for r in runs])
    done = admin.get(f"/tune/status?since={first}&cells={org.id}", headers={"HX-Request": "true"})
    html = done.get_data(as_text=True)
    assert done.status_code == 200
    assert "hx-get" not in html and "hx-trigger" not in html  # the loop is over
    assert done.headers["HX-Trigger"] == "runs-finished"
    assert html.count("badge-succeeded") >= 2
    # The overview row of a visible tenant is updated in place (out of band).
    assert f'<div id="last-run-{org.id}" class="run-cell" hx-swap-oob="true">' in html


def test_run_all_without_javascript_redirects_back_with_a_message(admin: FlaskClient) -> None:
    token = csrf_token(admin, "/")
    response = admin.post("/tune/run", data={"csrf_token": token, "next": "/runs"})
    assert response.status_code == 302 and response.headers["Location"] == "/runs"
    assert "Queued 1 run;" in admin.get("/runs").get_data(as_text=True)


def test_rerun_failed_enqueues_only_tenants_whose_last_run_failed(
    admin: FlaskClient, make: Any
) -> None:
    acme = db.session.execute(select(TuneRun.org_id)).first()  # none yet
    assert acme is None
    ok, bad, recovered = make.org("ok"), make.org("bad"), make.org("recovered")
    now = utcnow()
    add_run(ok, "succeeded", now)
    add_run(bad, "failed", now, error="boom")
    add_run(recovered, "failed", now - timedelta(hours=1), error="old")
    add_run(recovered, "succeeded", now)
    token = csrf_token(admin, "/")
    assert "Re-run failed tenants (1)" in admin.get("/").get_data(as_text=True)
    response = htmx_post(admin, "/tune/rerun-failed", token)
    assert response.status_code == 200
    queued = [r for r in _runs() if r.state == "queued"]
    assert [r.org_id for r in queued] == [bad.id]

    perform_runs_now([queued[0].id])
    nothing = htmx_post(admin, "/tune/rerun-failed", token)
    assert "nothing to re-run" in nothing.get_data(as_text=True)


@pytest.mark.parametrize("app_config", [{"TUNE_TEST_FAIL_TENANTS": "acme"}], indirect=True)
def test_failing_tenant_shows_failed_and_its_error(admin: FlaskClient) -> None:
    token = csrf_token(admin, "/")
    htmx_post(admin, "/tenants/acme/tune", token)
    (run,) = _runs()
    perform_runs_now([run.id])
    html = admin.get(f"/tune/status?since={run.id}", headers={"HX-Request": "true"}).get_data(
        as_text=True
    )
    assert "badge-failed" in html and "tuning of acme fails" in html
    page = admin.get("/tenants/acme").get_data(as_text=True)
    assert "tuning of acme fails" in page
    assert "Re-run failed tenants (1)" in admin.get("/").get_data(as_text=True)


def test_status_poll_sweeps_abandoned_runs(admin: FlaskClient, make: Any) -> None:
    org = make.org("ghost")
    long_ago = utcnow() - timedelta(minutes=30)
    run = add_run(org, "running", long_ago, heartbeat_at=long_ago)
    html = admin.get(f"/tune/status?since={run.id}", headers={"HX-Request": "true"}).get_data(
        as_text=True
    )
    assert "badge-failed" in html and "abandoned" in html
    assert "hx-get" not in html


def test_active_runs_keep_polling_after_a_reload(admin: FlaskClient, make: Any) -> None:
    org = make.org("busy", "Busy")
    run = add_run(org, "running", utcnow(), heartbeat_at=utcnow())
    for url in ("/", "/runs", "/tenants/busy"):
        html = admin.get(url).get_data(as_text=True)
        assert f"/tune/status?since={run.id}" in html, url
    assert "/tune/status" not in admin.get("/tenants/acme").get_data(as_text=True)


# --- Redis down, banners ----------------------------------------------------------------


@pytest.mark.parametrize("app_config", [{"REDIS_URL": "redis://127.0.0.1:1/0"}], indirect=True)
def test_redis_down_pages_render_and_run_now_says_why(admin: FlaskClient, make: Any) -> None:
    org = db.session.execute(select(func.min(TuneRun.id))).scalar()
    assert org is None
    for url in ("/", "/tenants/acme", "/runs", "/tenants/acme/calibrations.csv"):
        response = admin.get(url)
        assert response.status_code == 200, url
    html = admin.get("/").get_data(as_text=True)
    assert "Redis is unreachable." in html
    assert "unknown (Redis is unreachable)" in html
    token = csrf_token(admin, "/")
    for route in ("/tenants/acme/tune", "/tune/run"):
        response = htmx_post(admin, route, token)
        assert response.status_code == 503
        body = response.get_data(as_text=True)
        assert body.startswith('<section id="run-status"')
        assert "Redis (the job queue) is unreachable" in body and "Nothing was started" in body
    assert _runs() == []
    assert admin.get("/admin/rq/").status_code == 503


@pytest.mark.parametrize("app_config", [{"LOOPS_ENABLED": "false"}], indirect=True)
def test_loops_disabled_banner_and_next_run_will_be_skipped(
    app: Flask, admin: FlaskClient, redis_conn: Redis
) -> None:
    from jobs.schedule import reconcile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # rq-scheduler's crontab use
        reconcile(redis_conn, "30 5 * * 1", app.config["RQ_QUEUE"])
    html = admin.get("/").get_data(as_text=True)
    assert "Loops are disabled." in html
    assert "05:30 UTC — will be skipped (loops disabled)" in html


def test_worker_and_scheduler_banners(admin: FlaskClient, redis_conn: Redis) -> None:
    html = admin.get("/").get_data(as_text=True)
    assert "No worker is running." in html
    assert "The scheduler is not running." in html
    assert "Loops are disabled." not in html
    assert "not scheduled (start the scheduler)" in html
    redis_conn.set(constants.SCHEDULER_HEARTBEAT_KEY, "1", ex=60)
    html = admin.get("/runs").get_data(as_text=True)
    assert "The scheduler is not running." not in html
