"""The tenant page's Delivery section: read it, and (admins) pin, unpin, enforce or shadow."""

from __future__ import annotations

import logging

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required
from htmx_flask import request

from dashboard.extensions import db
from dashboard.web import delivery_page, views
from dashboard.web.auth import admin_required
from loops import delivery
from loops.accounts import find_org
from loops.delivery import PolicyError
from loops.models import Calibration, Organization
from loops.notifications import FEATURE_PATTERN
from loops.policy_rules import DeliveryMode
from loops.signals import loops_on
from loops.timeutil import utcnow

bp = Blueprint("delivery", __name__)
log = logging.getLogger(__name__)

# The same error pages as the rest of the dashboard (a CSRF failure is a 400 too).
for _code in (400, 403, 404):
    bp.register_error_handler(_code, views.error_page)

ENFORCE_VALUES = {"on": True, "off": False}


def section(org: Organization) -> delivery_page.DeliverySection:
    return delivery_page.load(org, utcnow(), current_app.config, loops_on())


@bp.app_context_processor
def delivery_helpers() -> dict[str, object]:
    # The tenant page renders the section through this, so it reads the same as the partial.
    return {
        "delivery_section": section,
        "change_text": delivery_page.change_text,
        "fmt_pct": delivery_page.pct,
        "ratio_interval": _ratio_interval,
    }


def _ratio_interval(cal: Calibration) -> delivery_page.Interval | None:
    threshold = delivery.PolicySettings.from_config(current_app.config).digest_below
    return delivery_page.calibration_interval(cal, threshold)


def _org_or_404(slug: str) -> Organization:
    org = find_org(slug)
    if org is None:
        abort(404)
    return org


def _feature_or_400(feature: str) -> str:
    if not FEATURE_PATTERN.fullmatch(feature):
        raise PolicyError(f"not a feature name: {feature!r} (1 to 64 of a-z, 0-9, _ . -)")
    return feature


def _render(org: Organization, message: str | None = None) -> ResponseReturnValue:
    if not request.htmx:
        # Without JavaScript the form posts normally: back to the page, saying what happened.
        if message:
            flash(message, "info")
        return redirect(url_for("views.tenant", slug=org.slug) + "#delivery")
    return render_template("_delivery.html", d=section(org), message=message)


def _refused(org: Organization, exc: PolicyError) -> ResponseReturnValue:
    db.session.rollback()
    log.info("event=policy_change_refused tenant=%s reason=%s", org.slug, exc)
    return (
        render_template("error.html", code=400, title="The change was refused", text=str(exc)),
        400,
    )


@bp.get("/tenants/<slug>/delivery")
@login_required
def show(slug: str) -> ResponseReturnValue:
    """The section alone: the page reloads it when a run finishes (a run decides modes)."""
    org = _org_or_404(slug)
    return render_template("_delivery.html", d=section(org))


@bp.post("/tenants/<slug>/policy/enforce")
@admin_required
def enforce(slug: str) -> ResponseReturnValue:
    org = _org_or_404(slug)
    raw = request.form.get("enforced", "")
    if raw not in ENFORCE_VALUES:
        return _refused(org, PolicyError("enforced must be on or off"))
    changed = delivery.set_enforced(org, ENFORCE_VALUES[raw], current_user.email, utcnow())
    db.session.commit()
    log.info(
        "event=policy_enforce tenant=%s enforced=%s changed=%s by=%s",
        org.slug,
        raw,
        changed,
        current_user.id,
    )
    state = "enforced" if org.policy_enforced else "in shadow"
    return _render(org, f"{org.name} is {state}" + ("." if changed else " (unchanged)."))


@bp.post("/tenants/<slug>/policy/<feature>/pin")
@admin_required
def pin(slug: str, feature: str) -> ResponseReturnValue:
    org = _org_or_404(slug)
    try:
        _feature_or_400(feature)
        try:
            mode = DeliveryMode(request.form.get("mode", ""))
        except ValueError:
            raise PolicyError("mode must be immediate or digest") from None
        delivery.pin(org, feature, mode, current_user.email, utcnow())
    except PolicyError as exc:
        return _refused(org, exc)
    db.session.commit()
    log.info(
        "event=policy_pin tenant=%s feature=%s mode=%s by=%s",
        org.slug,
        feature,
        mode.value,
        current_user.id,
    )
    return _render(org, f"{feature} is pinned to {mode.value}.")


@bp.post("/tenants/<slug>/policy/<feature>/unpin")
@admin_required
def unpin(slug: str, feature: str) -> ResponseReturnValue:
    org = _org_or_404(slug)
    try:
        delivery.unpin(org, _feature_or_400(feature), current_user.email, utcnow())
    except PolicyError as exc:
        return _refused(org, exc)
    db.session.commit()
    log.info("event=policy_unpin tenant=%s feature=%s by=%s", org.slug, feature, current_user.id)
    return _render(org, f"{feature} is unpinned: the next tune run decides its mode.")
