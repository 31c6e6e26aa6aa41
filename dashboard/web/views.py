"""Dashboard pages and HTMX partials: parse, call a read model or a job function, render."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import timedelta

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required
from htmx_flask import make_response, request
from werkzeug.exceptions import HTTPException

from dashboard.web import banners, formatting, overview, runs_page, tenant_page, trends
from dashboard.web.auth import admin_required, is_safe_next
from dashboard.web.tenant_page import CHART_RANGES, LOW_SAMPLE_THRESHOLD
from jobs import settings as job_settings
from loops.accounts import find_org
from loops.models import Organization, RunTrigger
from loops.signals import loops_on
from loops.timeutil import utcnow

bp = Blueprint("views", __name__)
log = logging.getLogger(__name__)

# A download's name carries the feature only when it is plain (the header is not escaped).
FILENAME_SAFE = re.compile(r"[A-Za-z0-9_.-]{1,120}")

# Sent (as HX-Trigger) by the last poll of a batch: sections listening for it reload once.
RUNS_FINISHED_EVENT = "runs-finished"
# htmx under a strict CSP: no eval, no injected <style>; a 503 (queue down) is swapped
# in like a success so the error shows in place, other 4xx/5xx are not.
HTMX_CONFIG = {
    "includeIndicatorStyles": False,
    "allowEval": False,
    "allowScriptTags": False,
    "selfRequestsOnly": True,
    "responseHandling": [
        {"code": "204", "swap": False},
        {"code": "[23]..", "swap": True},
        {"code": "503", "swap": True, "error": False},
        {"code": "[45]..", "swap": False, "error": True},
        {"code": "...", "swap": False},
    ],
}


@bp.app_context_processor
def template_helpers() -> dict[str, object]:
    return {
        "system_status": banners.collect,
        "fmt": formatting,
        "htmx_config": HTMX_CONFIG,
        "now": utcnow,
        "low_sample_threshold": LOW_SAMPLE_THRESHOLD,
    }


ERROR_PAGES = {
    400: (
        "The request was refused",
        "The form was incomplete or its security token was missing or expired. "
        "Reload the page and try again.",
    ),
    403: ("Not allowed", "Your role cannot do this. Viewers read; admins also run tuning."),
    404: ("Not found", "There is no such tenant or page."),
}


@bp.errorhandler(400)
@bp.errorhandler(403)
@bp.errorhandler(404)
def error_page(exc: HTTPException) -> ResponseReturnValue:
    code = exc.code or 500
    title, text = ERROR_PAGES.get(code, (exc.name, exc.description or ""))
    return render_template("error.html", code=code, title=title, text=text), code


@bp.teardown_app_request
def _forget_status(exc: BaseException | None = None) -> None:
    # The status is per request; an app context can outlive one (tests).
    g.pop("system_status", None)


def _int_arg(name: str, default: int | None = None) -> int | None:
    raw = request.args.get(name, "")
    return int(raw) if raw.isdigit() and len(raw) < 12 else default


def _id_list(raw: str | None, limit: int = overview.PER_PAGE) -> list[int]:
    ids = [int(p) for p in (raw or "").split(",") if p.isdigit() and len(p) < 12]
    return ids[:limit]


def _wants_partial(target: str) -> bool:
    """An htmx request aimed at one section (not a history restore, which needs the page)."""
    return (
        bool(request.htmx)
        and request.htmx.target == target
        and not (request.htmx.history_restore_request)
    )


# --- pages ------------------------------------------------------------------


@bp.get("/")
@login_required
def index() -> ResponseReturnValue:
    lookback = job_settings.lookback_days()
    page = overview.load(
        now=utcnow(),
        days=overview.parse_days(request.args.get("days"), lookback),
        lookback_days=lookback,
        q=request.args.get("q", ""),
        sort=overview.parse_sort(request.args.get("sort")),
        page=_int_arg("page", 1) or 1,
    )
    if _wants_partial("tenant-table"):
        return render_template(
            "_tenant_table.html", page=page, ranges=overview.ranges(lookback), oob_state=True
        )
    panel = runs_page.status(runs_page.first_active_id(), cells=page.org_ids)
    return render_template("index.html", page=page, panel=panel, ranges=overview.ranges(lookback))


def _shared_scale() -> bool:
    return request.args.get("scale") == "shared"


def _tenant_state() -> tuple[int, int, bool]:
    """The tenant page's days, weeks and scale from its query string (each falls back to
    its default)."""
    days = tenant_page.parse_range(request.args.get("days"))
    return days, trends.parse_weeks(request.args.get("weeks")), _shared_scale()


def _tenant_view(days: int, weeks: int, shared: bool) -> dict[str, object]:
    return {
        "days": days,
        "weeks": weeks,
        "shared": shared,
        "ranges": CHART_RANGES,
        "week_ranges": trends.TREND_RANGES,
    }


@bp.get("/tenants/<slug>")
@login_required
def tenant(slug: str) -> ResponseReturnValue:
    org = _org_or_404(slug)
    days, weeks, shared = _tenant_state()
    view = _tenant_view(days, weeks, shared)
    # The feature whose history is charted (?trend=); the range links carry it along.
    trend = request.args.get("trend") or None
    if _wants_partial("charts"):
        charts, _since, _today = tenant_page.feature_charts(org.id, utcnow(), days, shared)
        # The history's links come along (out of band) to carry the days now charted.
        features = trends.load_features(org.id)
        nav = trends.Nav(features, trends.choose(features, trend))
        return render_template(
            "_charts.html", org=org, charts=charts, trend=trend, oob_state=nav, **view
        )
    page = tenant_page.load(org, utcnow(), days, weeks, shared, trend)
    active = page.active_run
    panel = runs_page.status(active.id if active else None, org_id=org.id, cells=[org.id])
    return render_template("tenant.html", t=page, panel=panel, **view)


@bp.get("/tenants/<slug>/trends")
@login_required
def tenant_trends(slug: str) -> ResponseReturnValue:
    """The history section charting one feature: what the feature selector and the range
    switch swap in. Opened without htmx, it is the tenant page showing that feature."""
    org = _org_or_404(slug)
    feature = request.args.get("feature") or None
    features = trends.load_features(org.id)
    if feature is not None and feature not in features:
        abort(404)
    if not request.htmx:
        kept = {k: v for k, v in request.args.items() if k in ("weeks", "days", "scale")}
        return redirect(url_for("views.tenant", slug=org.slug, trend=feature, **kept))
    days, weeks, shared = _tenant_state()
    data = trends.load(org.id, utcnow(), weeks, features, feature, shared)
    return render_template(
        "_trends.html", org=org, trends=data, oob_state=True, **_tenant_view(days, weeks, shared)
    )


@bp.get("/tenants/<slug>/calibrations")
@login_required
def tenant_calibrations(slug: str) -> ResponseReturnValue:
    org = _org_or_404(slug)
    now = utcnow()
    views = tenant_page.calibration_views(
        tenant_page.load_calibrations(org.id), tenant_page.last_success(org.id), now
    )
    return render_template("_calibrations.html", org=org, calibrations=views)


@bp.get("/tenants/<slug>/history")
@login_required
def tenant_history(slug: str) -> ResponseReturnValue:
    org = _org_or_404(slug)
    return render_template("_history.html", org=org, history=tenant_page.history(org.id))


@bp.get("/tenants/<slug>/preview")
@login_required
def tenant_preview(slug: str) -> ResponseReturnValue:
    """Dry run on demand (it aggregates raw signals, so never on a plain page view).

    htmx swaps the section into the tenant page; without JavaScript the link opens it
    as a page of its own.
    """
    from jobs.tune_engagement import dry_run

    org = _org_or_404(slug)
    changes = tenant_page.preview_rows(dry_run(org.id, utcnow()))
    template = "_preview.html" if request.htmx else "preview.html"
    return render_template(
        template,
        org=org,
        changes=changes,
        days=job_settings.lookback_days(),
        loops_on=loops_on(),
    )


def _csv(body: str, filename: str) -> Response:
    response = Response(body, mimetype="text/csv")
    stamp = utcnow().strftime("%Y%m%d")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}-{stamp}.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/tenants/<slug>/calibrations.csv")
@login_required
def calibrations_csv(slug: str) -> ResponseReturnValue:
    org = _org_or_404(slug)
    body = tenant_page.calibrations_csv(tenant_page.load_calibrations(org.id))
    return _csv(body, f"{org.slug}-calibrations")


@bp.get("/tenants/<slug>/signals.csv")
@login_required
def signals_csv(slug: str) -> ResponseReturnValue:
    """The daily ENGAGE and DELIVER counts behind the charts (one feature with ?feature=)."""
    org = _org_or_404(slug)
    days = tenant_page.parse_range(request.args.get("days"))
    feature = request.args.get("feature") or None
    body = tenant_page.daily_csv(org.id, utcnow(), days, feature)
    name = f"{org.slug}-signals-{days}d" + (f"-{feature}" if feature else "")
    return _csv(body, name if FILENAME_SAFE.fullmatch(name) else f"{org.slug}-signals")


@bp.get("/tenants/<slug>/history.csv")
@login_required
def history_csv(slug: str) -> ResponseReturnValue:
    """Every value the runs of the last weeks wrote, each with its change from the run before."""
    org = _org_or_404(slug)
    weeks = trends.parse_weeks(request.args.get("weeks"))
    since = utcnow() - timedelta(weeks=weeks)
    body = trends.history_csv(trends.load_entries(org.id, since))
    return _csv(body, f"{org.slug}-history-{weeks}w")


@bp.get("/runs")
@login_required
def runs() -> ResponseReturnValue:
    data = runs_page.recent(
        state=runs_page.parse_state(request.args.get("state")), before=_int_arg("before")
    )
    if _wants_partial("runs-table"):
        return render_template("_runs_table.html", data=data)
    panel = runs_page.status(runs_page.first_active_id())
    return render_template("runs.html", data=data, panel=panel)


# --- Run now and live status -------------------------------------------------


@bp.post("/tune/run")
@admin_required
def tune_all() -> ResponseReturnValue:
    return _request(None)


@bp.post("/tenants/<slug>/tune")
@admin_required
def tune_tenant(slug: str) -> ResponseReturnValue:
    return _request(_org_or_404(slug))


@bp.post("/tune/rerun-failed")
@admin_required
def tune_rerun_failed() -> ResponseReturnValue:
    from jobs.exceptions import QueueUnavailable
    from jobs.runs import request_failed_reruns

    cells = _id_list(request.form.get("cells"))
    try:
        started = request_failed_reruns(requested_by=current_user.email)
    except QueueUnavailable as exc:
        return _queue_down(None, cells, str(exc))
    if not started:
        return _answer(
            runs_page.StatusPanel(None, None, [], {}, runs_page.last_runs(cells), error=None),
            cells,
            message="No tenant's last run failed: nothing to re-run.",
        )
    return _answer(runs_page.status(min(r.id for r in started), cells=cells), cells)


@bp.get("/tune/status")
@login_required
def tune_status() -> ResponseReturnValue:
    """The self-polling partial: re-rendered every second while a run it shows is active."""
    from jobs.runs import sweep_abandoned

    swept = sweep_abandoned(utcnow())
    if swept:
        log.info("event=abandoned_runs_swept count=%s source=status_poll", swept)
    org_id = _int_arg("org")
    cells = _id_list(request.args.get("cells"))
    panel = runs_page.status(_int_arg("since"), org_id=org_id, cells=cells)
    trigger = None if panel.active else RUNS_FINISHED_EVENT
    return make_response(
        render_template("_run_status.html", panel=panel, cells=cells, oob=True), trigger=trigger
    )


def _request(org: Organization | None) -> ResponseReturnValue:
    from jobs.exceptions import QueueUnavailable
    from jobs.runs import request_runs

    cells = _id_list(request.form.get("cells"))
    try:
        started = request_runs(
            [org.id] if org else None, trigger=RunTrigger.MANUAL, requested_by=current_user.email
        )
    except QueueUnavailable as exc:
        log.warning("event=run_now_refused reason=queue_unavailable tenant=%s", org and org.slug)
        return _queue_down(org, cells, str(exc))
    log.info(
        "event=run_now tenant=%s runs=%s by=%s",
        org.slug if org else "*",
        len(started),
        current_user.id,
    )
    first = min((r.id for r in started), default=None)
    panel = runs_page.status(first, org_id=org.id if org else None, cells=cells)
    return _answer(panel, cells)


def _answer(
    panel: runs_page.StatusPanel,
    cells: Sequence[int],
    *,
    message: str | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    if not request.htmx:
        # Without JavaScript the form posts normally: say what happened on the page it came from.
        if panel.error:
            flash(panel.error, "error")
        elif message:
            flash(message, "info")
        else:
            queued = formatting.plural(panel.total, "run")
            flash(f"Queued {queued}; the status updates on the page.", "info")
        back = request.form.get("next", "")
        return redirect(back if is_safe_next(back) else url_for("views.index"))
    html = render_template("_run_status.html", panel=panel, cells=cells, message=message, oob=True)
    return make_response(html, status)


def _queue_down(
    org: Organization | None, cells: Sequence[int], message: str
) -> ResponseReturnValue:
    panel = runs_page.StatusPanel(
        None, org.id if org else None, [], {}, runs_page.last_runs(cells), error=message
    )
    return _answer(panel, cells, status=503)


def _org_or_404(slug: str) -> Organization:
    org = find_org(slug)
    if org is None:
        abort(404)
    return org
