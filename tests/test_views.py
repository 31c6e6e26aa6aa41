"""Dashboard pages: status codes, roles, content, escaping, CSV, and bounded queries."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from dashboard.web import views
from loops.database import db
from loops.models import Organization, Role
from loops.timeutil import utcnow
from tests.support.dashboard import add_calibration, add_daily, add_run, csrf_token, login

XSS = '<script>alert("x")</script>'

# A Wednesday noon. Pages take "now" from their view; pinned, a test's rows and the page
# agree on which UTC day is today, even when the suite runs across midnight.
PAGES_NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    monkeypatch.setattr(views, "utcnow", lambda: PAGES_NOW)
    return PAGES_NOW


@pytest.fixture
def viewer(client: FlaskClient, make: Any) -> FlaskClient:
    login(client, make.user("viewer@example.com", Role.VIEWER))
    return client


@pytest.fixture
def admin(client: FlaskClient, make: Any) -> FlaskClient:
    login(client, make.user("admin@example.com", Role.ADMIN))
    return client


@contextmanager
def count_queries(app: Flask) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


# --- overview ------------------------------------------------------------------


def test_overview_shows_volume_chart_calibrations_and_last_run(
    viewer: FlaskClient, make: Any, now: datetime
) -> None:
    org = make.org("acme", "Acme Analytics")
    today = now.date()
    add_daily(org, "ENGAGE", "mention", today, 7)
    add_daily(org, "ENGAGE", "comment.reply", today - timedelta(days=3), 5)
    add_daily(org, "DELIVER", "mention", today, 100)  # not ENGAGE: not counted
    add_daily(org, "ENGAGE", "mention", today - timedelta(days=45), 1000)  # outside the window
    add_calibration(org, "engagement-rate:mention", 0.4, now)
    add_calibration(org, "engagement-ratio:mention", 0.6, now)
    add_run(org, "failed", now, error="boom")

    html = viewer.get("/").get_data(as_text=True)
    row = html[html.index('data-slug="acme"') :]
    row = row[: row.index("</tr>")]
    assert "Acme Analytics" in row
    assert '<td class="num">12<' in row
    assert '<svg class="spark"' in row and "12 signals in 30 days" in row
    assert '<td class="num hide-sm">2</td>' in row
    assert "badge-failed" in row
    assert "Next scheduled run" in html


def test_viewer_sees_no_run_buttons_admin_does(client: FlaskClient, make: Any) -> None:
    make.org("acme")
    login(client, make.user("v@example.com", Role.VIEWER))
    html = client.get("/").get_data(as_text=True)
    assert "/tenants/acme/tune" not in html and "/tune/run" not in html

    other = client.application.test_client()
    login(other, make.user("a@example.com", Role.ADMIN))
    html = other.get("/").get_data(as_text=True)
    assert 'hx-post="/tenants/acme/tune"' in html
    assert "Run now — all tenants" in html


def test_empty_overview_says_what_to_do(viewer: FlaskClient) -> None:
    html = viewer.get("/").get_data(as_text=True)
    assert "No tenants yet." in html and "orgs create" in html


def test_search_by_name_and_htmx_partial(viewer: FlaskClient, make: Any) -> None:
    make.org("acme", "Acme Analytics")
    make.org("globex", "Globex Logistics")
    html = viewer.get("/?q=glob").get_data(as_text=True)
    assert "Globex Logistics" in html and "Acme Analytics" not in html

    partial = viewer.get("/?q=ACME", headers={"HX-Request": "true", "HX-Target": "tenant-table"})
    body = partial.get_data(as_text=True)
    assert partial.status_code == 200
    assert body.lstrip().startswith('<div id="tenant-table"')
    # After runs finish the table reloads itself with the same search and order.
    assert 'hx-get="/?q=ACME&amp;sort=name" hx-trigger="runs-finished from:body"' in body
    assert "Acme Analytics" in body and "<html" not in body

    # A history restore needs the whole page, not the fragment.
    restore = viewer.get(
        "/?q=acme",
        headers={
            "HX-Request": "true",
            "HX-Target": "tenant-table",
            "HX-History-Restore-Request": "true",
        },
    )
    assert "<html" in restore.get_data(as_text=True)

    none = viewer.get("/?q=%25zz_").get_data(as_text=True)
    assert "No tenant name contains" in none


def test_a_swapped_table_brings_the_search_forms_state_along(
    viewer: FlaskClient, make: Any
) -> None:
    """Sorting swaps the table alone: the form's hidden sort and its range links, outside
    the table, come in the same response (out of band), so a search or a range picked next
    keeps the new order instead of the one the page was loaded with."""
    make.org("acme", "Acme Analytics")
    page = viewer.get("/?days=7").get_data(as_text=True)
    assert '<span id="tenant-form-state" hidden>' in page  # in place on the page
    assert '<input type="hidden" name="sort" value="name">' in page

    partial = viewer.get(
        "/?q=acme&sort=volume&days=7", headers={"HX-Request": "true", "HX-Target": "tenant-table"}
    ).get_data(as_text=True)
    state = partial[partial.index('<span id="tenant-form-state"') :]
    assert state.startswith('<span id="tenant-form-state" hidden hx-swap-oob="true">')
    assert '<input type="hidden" name="sort" value="volume">' in state
    assert '<input type="hidden" name="days" value="7">' in state
    ranges = partial[partial.index('<div id="tenant-ranges"') :]
    assert 'hx-swap-oob="true"' in ranges.split(">", 1)[0]
    assert 'href="/?q=acme&amp;sort=volume"' in ranges  # the default range drops ?days=
    assert 'href="/?q=acme&amp;sort=volume&amp;days=7" aria-current="true"' in ranges


def test_pagination(viewer: FlaskClient, make: Any) -> None:
    for i in range(30):
        make.org(f"t{i:02d}", f"Tenant {i:02d}")
    first = viewer.get("/").get_data(as_text=True)
    second = viewer.get("/?page=2").get_data(as_text=True)
    assert "Page 1 of 2" in first and "Tenant 00" in first and "Tenant 25" not in first
    assert "Page 2 of 2" in second and "Tenant 29" in second and "Tenant 00" not in second
    assert viewer.get("/?page=99").status_code == 200


def test_sort_by_volume_and_last_run(viewer: FlaskClient, make: Any, now: datetime) -> None:
    a, b, c = make.org("a", "Alpha"), make.org("b", "Beta"), make.org("c", "Gamma")
    today = now.date()
    add_daily(b, "ENGAGE", "x", today, 50)
    add_daily(c, "ENGAGE", "x", today, 10)
    add_run(a, "succeeded", now - timedelta(hours=2))
    add_run(c, "succeeded", now)

    def order(url: str) -> list[str]:
        html = viewer.get(url).get_data(as_text=True)
        return sorted(("Alpha", "Beta", "Gamma"), key=html.index)

    assert order("/?sort=name") == ["Alpha", "Beta", "Gamma"]
    assert order("/?sort=volume") == ["Beta", "Gamma", "Alpha"]
    assert order("/?sort=last_run") == ["Gamma", "Alpha", "Beta"]
    assert viewer.get("/?sort=bogus").status_code == 200


def test_overview_query_count_does_not_grow_with_tenants(
    app: Flask, viewer: FlaskClient, make: Any
) -> None:
    def queries_for(n_orgs: int) -> int:
        while db.session.query(Organization).count() < n_orgs:
            org = make.org()
            add_daily(org, "ENGAGE", "x", utcnow().date(), 3)
            add_calibration(org, "engagement-rate:x", 0.1, utcnow())
            add_run(org, "succeeded", utcnow())
        with count_queries(app) as statements:
            assert viewer.get("/").status_code == 200
        return len(statements)

    few, many = queries_for(3), queries_for(20)
    assert few == many
    assert many <= 12


def test_pages_never_read_raw_signals(app: Flask, viewer: FlaskClient, make: Any) -> None:
    org = make.org("acme")
    add_daily(org, "ENGAGE", "x", utcnow().date(), 3)
    for url in ("/", "/tenants/acme", "/tenants/acme?days=90", "/runs"):
        with count_queries(app) as statements:
            assert viewer.get(url).status_code == 200
        assert not [s for s in statements if "loop_signals." in s or "FROM loop_signals " in s], url


# --- tenant page -------------------------------------------------------------------


def test_tenant_page_explains_each_calibration(
    viewer: FlaskClient, make: Any, now: datetime
) -> None:
    org = make.org("acme", "Acme Analytics")
    old_run = add_run(org, "succeeded", now - timedelta(days=10))
    run = add_run(org, "succeeded", now - timedelta(days=3))
    add_calibration(
        org,
        "engagement-rate:mention",
        2.1333,
        now - timedelta(days=3),
        sample_size=64,
        distinct_users=41,
        run_id=run.id,
        previous_value=1.8,
    )
    add_calibration(
        org,
        "engagement-ratio:mention",
        0.6412,
        now - timedelta(days=3),
        sample_size=120,
        run_id=run.id,
    )
    add_calibration(
        org,
        "engagement-rate:digest",
        0.5,
        now - timedelta(days=10),
        sample_size=12,
        run_id=old_run.id,
    )

    html = viewer.get("/tenants/acme").get_data(as_text=True)
    assert "2.13/day" in html and "1.80/day" in html and "+19%" in html
    assert "64.1%" in html
    assert "41 users" in html and f"run #{run.id}" in html
    assert "3 days ago" in html
    assert "fewer than 30 signals" in html
    digest = html[html.index('data-key="engagement-rate:digest"') - 40 :]
    digest = digest[: digest.index("</tr>")]
    assert "is-stale" in digest and "low sample" in digest and "stale" in digest
    mention = html[html.index('data-key="engagement-rate:mention"') - 40 :]
    assert "is-stale" not in mention[: mention.index("</tr>")]


def test_tenant_page_charts_and_range_switch(viewer: FlaskClient, make: Any, now: datetime) -> None:
    org = make.org("acme")
    today = now.date()
    add_daily(org, "ENGAGE", "mention", today, 4)
    add_daily(org, "DELIVER", "mention", today, 9)
    add_daily(org, "ENGAGE", "report.ready", today - timedelta(days=50), 2)

    html = viewer.get("/tenants/acme").get_data(as_text=True)
    assert 'class="line-chart"' in html
    assert "mention: daily signals / day" in html
    assert "ENGAGE 4" in html and "DELIVER 9" in html
    assert "report.ready" not in html  # only in the 60-day range

    partial = viewer.get(
        "/tenants/acme?days=60", headers={"HX-Request": "true", "HX-Target": "charts"}
    ).get_data(as_text=True)
    assert partial.lstrip().startswith('<div id="charts">')
    assert "report.ready" in partial and "<html" not in partial
    assert viewer.get("/tenants/acme?days=7").status_code == 200  # falls back to 30


def test_tenant_page_empty_states(viewer: FlaskClient, make: Any) -> None:
    make.org("acme")
    html = viewer.get("/tenants/acme").get_data(as_text=True)
    assert "No calibrations yet." in html
    assert "No signals in the last 30 days." in html
    assert "never been tuned" in html


def test_empty_states_show_the_configured_schedule(
    app: Flask, viewer: FlaskClient, make: Any
) -> None:
    app.config["TUNE_ENGAGEMENT_CRON"] = "15 6 * * 3"
    make.org("acme")
    for path in ("/tenants/acme", "/runs"):
        html = viewer.get(path).get_data(as_text=True)
        assert "The tune job runs every Wednesday at 06:15 UTC" in html, path
        assert "Monday" not in html, path


def test_tenant_run_history_shows_errors(viewer: FlaskClient, make: Any) -> None:
    org = make.org("acme")
    add_run(org, "failed", utcnow(), error="division by zero in tenant acme")
    html = viewer.get("/tenants/acme").get_data(as_text=True)
    assert "division by zero in tenant acme" in html and "badge-failed" in html
    history = viewer.get("/tenants/acme/history").get_data(as_text=True)
    assert history.lstrip().startswith('<div id="history"')
    assert "division by zero" in history
    cals = viewer.get("/tenants/acme/calibrations").get_data(as_text=True)
    assert cals.lstrip().startswith('<div id="calibrations"')


def test_unknown_tenant_is_404(viewer: FlaskClient) -> None:
    for url in ("/tenants/nope", "/tenants/nope/calibrations.csv", "/tenants/nope/history"):
        assert viewer.get(url).status_code == 404


# --- CSV ---------------------------------------------------------------------------


def test_calibrations_csv(viewer: FlaskClient, make: Any) -> None:
    org = make.org("acme")
    when = utcnow().replace(microsecond=0)
    add_calibration(
        org, "engagement-rate:mention", 2.1333, when, sample_size=64, distinct_users=41, run_id=7
    )
    add_calibration(org, "=HYPERLINK(evil)", 1.0, when)
    response = viewer.get("/tenants/acme/calibrations.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="acme-')
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["key"] for r in rows] == ["'=HYPERLINK(evil)", "engagement-rate:mention"]
    mention = rows[1]
    assert mention["feature"] == "mention" and mention["kind"] == "rate"
    assert float(mention["value"]) == 2.1333 and mention["unit"] == "signals/day"
    assert mention["sample_size"] == "64" and mention["distinct_users"] == "41"
    assert mention["window_days"] == "30" and mention["run_id"] == "7"
    assert mention["computed_at"].endswith("Z")


def test_calibrations_csv_empty_has_header(viewer: FlaskClient, make: Any) -> None:
    make.org("acme")
    body = viewer.get("/tenants/acme/calibrations.csv").get_data(as_text=True)
    assert body.startswith("key,feature,kind,value,unit,sample_size")
    assert body.count("\n") == 1


# --- runs page ---------------------------------------------------------------------


def test_runs_page_lists_and_filters(viewer: FlaskClient, make: Any) -> None:
    a, b = make.org("acme", "Acme"), make.org("globex", "Globex")
    add_run(a, "succeeded", utcnow(), trigger="schedule", requested_by=None)
    add_run(b, "failed", utcnow(), error="it broke")
    html = viewer.get("/runs").get_data(as_text=True)
    assert "Acme" in html and "Globex" in html and "it broke" in html and "schedule" in html
    failed = viewer.get("/runs?state=failed").get_data(as_text=True)
    assert "it broke" in failed and 'href="/tenants/acme"' not in failed.split("runs-table")[1]
    assert "No queued runs." in viewer.get("/runs?state=queued").get_data(as_text=True)
    partial = viewer.get(
        "/runs?state=failed", headers={"HX-Request": "true", "HX-Target": "runs-table"}
    ).get_data(as_text=True)
    assert partial.lstrip().startswith('<div id="runs-table"')
    assert "rq-dashboard" not in html


def test_runs_page_links_admins_to_rq_dashboard(admin: FlaskClient) -> None:
    html = admin.get("/runs").get_data(as_text=True)
    assert 'href="/admin/rq/"' in html
    assert "No runs yet." in html


# --- escaping ---------------------------------------------------------------------


def test_everything_user_supplied_is_escaped(admin: FlaskClient, make: Any) -> None:
    org = make.org("evil", XSS)
    add_run(org, "failed", utcnow(), error=XSS, requested_by=XSS)
    add_calibration(org, f"engagement-rate:{XSS}", 1.0, utcnow())
    for url in ("/", "/tenants/evil", "/runs", "/?q=<script>"):
        html = admin.get(url).get_data(as_text=True)
        assert "<script>alert" not in html, url
        assert "&lt;script&gt;" in html, url


# --- rq-dashboard -------------------------------------------------------------------


def test_rq_dashboard_is_for_admins_only(client: FlaskClient, make: Any) -> None:
    assert client.get("/admin/rq/").status_code == 302
    login(client, make.user("v@example.com", Role.VIEWER))
    assert client.get("/admin/rq/").status_code == 403
    other = client.application.test_client()
    login(other, make.user("a@example.com", Role.ADMIN))
    assert other.get("/admin/rq/").status_code == 200
    # Its own POSTs carry no CSRF token: a cross-site one is refused.
    cross = other.post("/admin/rq/queue/x/compact", headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403


def test_csrf_token_is_on_every_page_for_htmx(viewer: FlaskClient) -> None:
    html = viewer.get("/").get_data(as_text=True)
    assert 'hx-headers=\'{"X-CSRFToken": "' in html
    assert csrf_token(viewer, "/")
    assert 'name="htmx-config"' in html and '"allowEval": false' in html
    assert "<script>" not in html and " style=" not in html and " on" + "click" not in html


def test_preview_shows_what_a_run_would_write_and_writes_nothing(
    viewer: FlaskClient, make: Any
) -> None:
    from loops.models import Calibration, LoopSignal

    org = make.org("acme")
    now = utcnow()
    for i in range(3):
        db.session.add(
            LoopSignal(org_id=org.id, kind="ENGAGE", feature="mention", user_id=i, created_at=now)
        )
    db.session.commit()
    add_calibration(org, "engagement-rate:mention", 0.05, now - timedelta(days=7))
    page = viewer.get("/tenants/acme").get_data(as_text=True)
    assert 'hx-get="/tenants/acme/preview"' in page
    html = viewer.get("/tenants/acme/preview", headers={"HX-Request": "true"}).get_data(
        as_text=True
    )
    assert html.lstrip().startswith('<div id="preview"')
    assert "0.10/day" in html and "0.05/day" in html and "+100%" in html
    assert "nothing was written" in html
    # Without JavaScript the link opens a page of its own, in the layout, with a way back.
    page = viewer.get("/tenants/acme/preview").get_data(as_text=True)
    assert page.lstrip().startswith("<!doctype html>") and "app.css" in page
    assert "0.10/day" in page and 'href="/tenants/acme"' in page
    db.session.expire_all()
    assert db.session.query(Calibration).one().value == 0.05

    make.org("empty")
    assert "would write nothing" in viewer.get("/tenants/empty/preview").get_data(as_text=True)


def test_error_pages_are_pages_with_a_way_back(viewer: FlaskClient) -> None:
    response = viewer.get("/tenants/nope")
    assert response.status_code == 404
    html = response.get_data(as_text=True)
    assert "There is no such tenant or page." in html and 'href="/"' in html
    forbidden = viewer.post("/tune/run", data={"csrf_token": csrf_token(viewer, "/")})
    assert forbidden.status_code == 403
    assert "Viewers read; admins also run tuning." in forbidden.get_data(as_text=True)
    refused = viewer.post("/tune/run")
    assert refused.status_code == 400
    assert "security token" in refused.get_data(as_text=True)
