"""The tenant page's Delivery section: modes, reasons and intervals; admins pin, unpin and
enforce (CSRF, viewers 403, recorded with who and when); lift; the overview's digest column."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from dashboard.web.delivery_page import Interval, LiftRow
from jobs.runs import run_in_process
from loops import delivery
from loops.database import db
from loops.models import DeliveryPolicy, Organization, PolicyChange, Role, RunTrigger
from loops.policy_rules import DeliveryMode, in_holdout
from loops.timeutil import utcnow
from tests.support.dashboard import csrf_token, htmx_post, login

ADMIN = "admin@example.com"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def section(html: str) -> str:
    """The Delivery section of a page (or the partial itself)."""
    start = html.index('<section id="delivery"')
    return html[start : html.index("</section>", start)]


def row(html: str, feature: str) -> str:
    match = re.search(rf'<tr data-feature="{re.escape(feature)}".*?</tr>', html, re.S)
    assert match, f"no row for {feature}"
    return match.group(0)


def deliveries(
    signals: Any, org: Organization, feature: str, n: int, read: int, at: datetime, user_id: int = 1
) -> None:
    for i in range(n):
        signals.delivery(org, feature, at, at + HOUR if i < read else None, user_id=user_id)


def policy(org: Organization, feature: str) -> DeliveryPolicy:
    db.session.expire_all()
    return db.session.execute(
        select(DeliveryPolicy).where(
            DeliveryPolicy.org_id == org.id, DeliveryPolicy.feature == feature
        )
    ).scalar_one()


def changes(org: Organization) -> list[tuple[str, str | None, str | None, str]]:
    db.session.expire_all()
    rows = db.session.execute(
        select(PolicyChange).where(PolicyChange.org_id == org.id).order_by(PolicyChange.id)
    ).scalars()
    return [(c.action, c.feature, c.mode, c.actor) for c in rows]


@pytest.fixture
def acme(make: Any, signals: Any) -> Organization:
    """A tuned tenant: report.ready read 5% of the time (digest), mention 75% (immediate)."""
    org = make.org("acme", "Acme Analytics")
    week_ago = utcnow() - 7 * DAY
    deliveries(signals, org, "report.ready", 200, read=10, at=week_ago)
    deliveries(signals, org, "mention", 200, read=150, at=week_ago)
    run_in_process([org.id], trigger=RunTrigger.CLI, requested_by="test", now=utcnow())
    assert policy(org, "report.ready").mode == "digest"
    assert policy(org, "mention").mode == "immediate"
    return org


@pytest.fixture
def admin(client: FlaskClient, make: Any) -> FlaskClient:
    login(client, make.user(ADMIN, Role.ADMIN))
    return client


@pytest.fixture
def viewer(client: FlaskClient, make: Any) -> FlaskClient:
    login(client, make.user("viewer@example.com", Role.VIEWER))
    return client


# --- reading it ----------------------------------------------------------------------


def test_section_shows_each_features_mode_reason_interval_and_since(
    acme: Organization, viewer: FlaskClient
) -> None:
    html = section(viewer.get("/tenants/acme").get_data(as_text=True))
    assert 'data-state="shadow"' in html and "every notification is delivered at once" in html
    digest = row(html, "report.ready")
    assert 'data-mode="digest"' in digest and "badge-mode-digest" in digest
    assert "ratio 0.05 [0.03, 0.09] &lt; 0.20 over 200 deliveries" in digest
    # The interval as a range: the drawn bar and the numbers as text.
    assert 'class="range-bar"' in digest and 'class="range-band"' in digest
    assert '<strong>5.0%</strong> <span class="muted">[2.7%\u20139.0%]</span>' in digest
    assert "n=200" in digest
    assert "95% interval 2.7% to 9.0%, over 200 delivered" in digest  # the bar's label
    assert "<time datetime=" in digest  # since: relative age with the exact UTC in a title
    assert 'data-mode="immediate"' in row(html, "mention")
    assert "75.0%" in row(html, "mention")
    assert "Holdout 10% of users · digests at 09:00 UTC · digest below 20.0%" in html


def test_viewer_sees_no_controls(acme: Organization, viewer: FlaskClient) -> None:
    html = section(viewer.get("/tenants/acme").get_data(as_text=True))
    assert "<form" not in html and "/policy/" not in html
    assert "Enforce" not in html and "Unpin" not in html


def test_admin_sees_the_controls(acme: Organization, admin: FlaskClient) -> None:
    html = section(admin.get("/tenants/acme").get_data(as_text=True))
    assert 'action="/tenants/acme/policy/enforce"' in html
    assert 'name="enforced" value="on"' in html
    assert 'action="/tenants/acme/policy/report.ready/pin"' in html
    assert 'name="mode" value="immediate"' in html and 'name="mode" value="digest"' in html
    assert "/unpin" not in html  # nothing is pinned yet


def test_no_decisions_yet_says_what_happens_next(make: Any, viewer: FlaskClient) -> None:
    make.org("quiet")
    html = section(viewer.get("/tenants/quiet").get_data(as_text=True))
    assert "No decisions yet." in html
    assert "The next tune run decides" in html and "every Monday at 05:30 UTC" in html


def test_the_partial_alone_reloads_after_a_run(acme: Organization, viewer: FlaskClient) -> None:
    response = viewer.get("/tenants/acme/delivery", headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and html.startswith('<section id="delivery"')
    assert 'hx-trigger="runs-finished from:body"' in html
    assert viewer.get("/tenants/nope/delivery").status_code == 404


def test_calibrations_show_the_ratio_interval_as_a_range_and_the_estimate(
    acme: Organization, viewer: FlaskClient
) -> None:
    html = viewer.get("/tenants/acme").get_data(as_text=True)
    cal = re.search(r'<tr[^>]*data-key="engagement-ratio:report.ready".*?</tr>', html, re.S)
    assert cal
    assert 'class="range-bar"' in cal.group(0) and "2.7%\u20139.0%" in cal.group(0)
    assert re.search(r'class="muted small estimate">estimate \d+\.\d%<', cal.group(0))
    rate = re.search(r'<tr[^>]*data-key="engagement-rate:report.ready".*?</tr>', html, re.S)
    assert rate and "range-bar" not in rate.group(0)


# --- changing it ---------------------------------------------------------------------


def test_admin_pins_and_unpins_in_place_and_each_change_is_recorded(
    acme: Organization, admin: FlaskClient
) -> None:
    token = csrf_token(admin, "/tenants/acme")
    pinned = htmx_post(admin, "/tenants/acme/policy/report.ready/pin", token, mode="immediate")
    assert pinned.status_code == 200
    html = pinned.get_data(as_text=True)
    assert html.startswith('<section id="delivery"')  # the partial, swapped in place
    assert "report.ready is pinned to immediate." in html
    pinned_row = row(html, "report.ready")
    assert 'data-mode="immediate"' in pinned_row and "badge-pinned" in pinned_row
    assert f"pinned to immediate by {ADMIN}" in pinned_row
    assert 'action="/tenants/acme/policy/report.ready/unpin"' in pinned_row
    p = policy(acme, "report.ready")
    assert (p.mode, p.pinned_by) == ("immediate", ADMIN) and p.pinned_at is not None

    unpinned = htmx_post(admin, "/tenants/acme/policy/report.ready/unpin", token)
    assert unpinned.status_code == 200
    assert "the next tune run decides its mode" in unpinned.get_data(as_text=True)
    p = policy(acme, "report.ready")
    assert p.pinned_by is None and p.mode == "immediate"
    assert changes(acme) == [
        ("pin", "report.ready", "immediate", ADMIN),
        ("unpin", "report.ready", "immediate", ADMIN),
    ]
    recent = section(unpinned.get_data(as_text=True)).split('class="changes"')[1]
    assert f'{ADMIN}</span> <span class="change-what">unpinned report.ready' in recent
    assert "pinned report.ready to immediate" in recent


def test_admin_enforces_and_switches_back_to_shadow(acme: Organization, admin: FlaskClient) -> None:
    token = csrf_token(admin, "/tenants/acme")
    before = utcnow()
    on = htmx_post(admin, "/tenants/acme/policy/enforce", token, enforced="on")
    assert on.status_code == 200
    html = on.get_data(as_text=True)
    assert 'data-state="enforced"' in html and f"by {ADMIN}" in html
    assert "Did the digest help?" in html and 'data-feature="report.ready"' in html
    assert 'name="enforced" value="off"' in html
    db.session.expire_all()
    org = db.session.get(Organization, acme.id)
    assert org is not None and org.policy_enforced and org.policy_enforced_by == ADMIN
    assert org.policy_enforced_at is not None and org.policy_enforced_at >= before

    again = htmx_post(admin, "/tenants/acme/policy/enforce", token, enforced="on")
    assert "(unchanged)" in again.get_data(as_text=True)
    off = htmx_post(admin, "/tenants/acme/policy/enforce", token, enforced="off")
    assert 'data-state="shadow"' in off.get_data(as_text=True)
    assert changes(acme) == [("enforce", None, None, ADMIN), ("shadow", None, None, ADMIN)]


def test_without_javascript_the_form_redirects_back_with_a_message(
    acme: Organization, admin: FlaskClient
) -> None:
    token = csrf_token(admin, "/tenants/acme")
    response = admin.post(
        "/tenants/acme/policy/mention/pin", data={"csrf_token": token, "mode": "digest"}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/tenants/acme#delivery"
    page = admin.get("/tenants/acme").get_data(as_text=True)
    assert "mention is pinned to digest." in page
    assert policy(acme, "mention").mode == "digest"


ROUTES = (
    ("/tenants/acme/policy/enforce", {"enforced": "on"}),
    ("/tenants/acme/policy/report.ready/pin", {"mode": "immediate"}),
    ("/tenants/acme/policy/report.ready/unpin", {}),
)


@pytest.mark.parametrize(("path", "data"), ROUTES)
def test_viewer_gets_403_even_with_a_valid_token(
    acme: Organization, viewer: FlaskClient, path: str, data: dict[str, str]
) -> None:
    token = csrf_token(viewer, "/tenants/acme")
    assert htmx_post(viewer, path, token, **data).status_code == 403
    assert viewer.post(path, data={"csrf_token": token, **data}).status_code == 403
    assert changes(acme) == []
    assert policy(acme, "report.ready").pinned_by is None


@pytest.mark.parametrize(("path", "data"), ROUTES)
def test_missing_or_forged_csrf_token_is_400(
    acme: Organization, admin: FlaskClient, path: str, data: dict[str, str]
) -> None:
    assert htmx_post(admin, path, None, **data).status_code == 400
    assert htmx_post(admin, path, "forged-token", **data).status_code == 400
    assert admin.post(path, data=data).status_code == 400
    assert changes(acme) == []


@pytest.mark.parametrize(("path", "data"), ROUTES)
def test_anonymous_is_sent_to_login(
    acme: Organization, client: FlaskClient, path: str, data: dict[str, str]
) -> None:
    token = csrf_token(client, "/login")
    response = client.post(path, data={"csrf_token": token, **data})
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert changes(acme) == []


def test_unknown_tenant_is_404(admin: FlaskClient) -> None:
    token = csrf_token(admin, "/")
    assert htmx_post(admin, "/tenants/nope/policy/enforce", token, enforced="on").status_code == (
        404
    )
    assert htmx_post(admin, "/tenants/nope/policy/x/pin", token, mode="digest").status_code == 404
    assert htmx_post(admin, "/tenants/nope/policy/x/unpin", token).status_code == 404


@pytest.mark.parametrize(
    ("path", "data", "message"),
    [
        ("/tenants/acme/policy/enforce", {"enforced": "maybe"}, "enforced must be on or off"),
        ("/tenants/acme/policy/mention/pin", {"mode": "weekly"}, "mode must be immediate or"),
        ("/tenants/acme/policy/mention/pin", {}, "mode must be immediate or"),
        ("/tenants/acme/policy/Bad%20Feature/pin", {"mode": "digest"}, "not a feature name"),
        ("/tenants/acme/policy/digest/pin", {"mode": "digest"}, "always delivered immediately"),
        ("/tenants/acme/policy/mention/unpin", {}, "mention is not pinned for acme"),
    ],
)
def test_bad_input_is_400_with_a_message_and_changes_nothing(
    acme: Organization, admin: FlaskClient, path: str, data: dict[str, str], message: str
) -> None:
    token = csrf_token(admin, "/tenants/acme")
    response = htmx_post(admin, path, token, **data)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert changes(acme) == []
    db.session.expire_all()
    assert db.session.get(Organization, acme.id).policy_enforced is False  # type: ignore[union-attr]


# --- lift ----------------------------------------------------------------------------


def _users(org: Organization, holdout: bool, count: int) -> list[int]:
    found = [u for u in range(1, 5000) if in_holdout(org.id, u, 10) == holdout]
    return found[:count]


def test_enforced_tenant_shows_holdout_vs_treated_lift_in_plain_words(
    acme: Organization, signals: Any, viewer: FlaskClient
) -> None:
    enforced_at = utcnow() - 3 * DAY
    delivery.set_enforced(acme, True, ADMIN, enforced_at)
    db.session.commit()
    at = enforced_at + DAY
    # Holdout: 5 of 20 read (25%); treated: 100 of 200 read (50%).
    for i, user in enumerate(_users(acme, True, 4)):
        deliveries(signals, acme, "report.ready", 5, read=2 if i == 0 else 1, at=at, user_id=user)
    for user in _users(acme, False, 4):
        deliveries(signals, acme, "report.ready", 50, read=25, at=at, user_id=user)
    # Before enforcement: not counted.
    deliveries(signals, acme, "report.ready", 30, read=30, at=enforced_at - DAY, user_id=1)

    html = section(viewer.get("/tenants/acme").get_data(as_text=True))
    lift = html.split('<div class="lift" data-feature="report.ready">')[1]
    holdout = re.search(r'<tr data-arm="holdout">.*?</tr>', lift, re.S)
    treated = re.search(r'<tr data-arm="treated">.*?</tr>', lift, re.S)
    assert holdout and treated
    assert "<strong>25.0%</strong>" in holdout.group(0) and "n=20<" in holdout.group(0)
    assert "5 of 20" in holdout.group(0)
    assert "[11.2%\u201346.9%]" in holdout.group(0)
    assert "<strong>50.0%</strong>" in treated.group(0) and "100 of 200" in treated.group(0)
    assert "difference, treated vs holdout: <strong>+25.0 points</strong>" in lift
    assert (
        "Treated users read 25 points more of report.ready than the holdout; "
        "the intervals overlap, so this is not yet conclusive." in lift
    )


def test_shadow_tenant_shows_no_lift(acme: Organization, viewer: FlaskClient) -> None:
    assert "Did the digest help?" not in viewer.get("/tenants/acme").get_data(as_text=True)


def test_lift_words_follow_the_intervals() -> None:
    since = utcnow()
    apart = LiftRow(
        "report.ready",
        since,
        holdout=Interval(0.10, 0.055, 0.174, 100, 10),
        treated=Interval(0.5, 0.451, 0.549, 400, 200),
    )
    assert apart.verdict == (
        "Treated users read 40 points more of report.ready than the holdout; the intervals "
        "do not overlap, so the difference is unlikely to be chance."
    )
    worse = LiftRow("x", since, Interval(0.5, 0.4, 0.6, 90, 45), Interval(0.49, 0.45, 0.53, 9, 4))
    assert worse.verdict.startswith("Treated users read 1 point less of x")
    same = LiftRow("x", since, Interval(0.5, 0.4, 0.6, 90, 45), Interval(0.502, 0.4, 0.6, 9, 4))
    assert same.verdict.startswith("Treated users read about as much of x as the holdout")
    empty = LiftRow("x", since, Interval(None, 0.0, 1.0, 0, 0), Interval(0.5, 0.4, 0.6, 9, 4))
    assert empty.verdict == (
        "Nothing of x delivered to the holdout since enforcement began: no comparison yet."
    )
    assert empty.difference is None and empty.difference_text == "—"


def test_range_bar_geometry_spans_low_to_high_with_the_point_inside() -> None:
    i = Interval(0.5, 0.25, 0.75, 100, threshold=0.2)
    assert (i.low_x, i.span, i.point_x) == (32.0, 56.0, 60.0)
    assert i.threshold_x == 26.4
    tight = Interval(1.0, 0.999, 1.0, 10_000)
    assert tight.span == 1.5 and tight.point_x == 116.0  # still visible, never off the track


# --- the overview ----------------------------------------------------------------------


def test_overview_counts_digest_features_per_tenant(
    acme: Organization, make: Any, viewer: FlaskClient
) -> None:
    make.org("quiet", "Quiet Co")
    html = viewer.get("/").get_data(as_text=True)
    assert "Digest</abbr></th>" in html
    acme_row = re.search(r'<tr data-slug="acme">.*?</tr>', html, re.S)
    quiet_row = re.search(r'<tr data-slug="quiet">.*?</tr>', html, re.S)
    assert acme_row and quiet_row
    assert 'data-digests="1">1 <span class="muted small">shadow</span>' in acme_row.group(0)
    assert 'data-digests="0"><span class="muted">0</span>' in quiet_row.group(0)

    delivery.set_enforced(acme, True, ADMIN, utcnow())
    delivery.pin(acme, "mention", DeliveryMode.DIGEST, ADMIN, utcnow())
    db.session.commit()
    html = viewer.get("/").get_data(as_text=True)
    acme_row = re.search(r'<tr data-slug="acme">.*?</tr>', html, re.S)
    assert acme_row and 'data-digests="2">2 <span class="muted small">enforced' in acme_row.group(0)
