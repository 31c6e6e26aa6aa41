"""Insight pages: features across tenants (/features, /features/<feature>) and a run's page."""

from __future__ import annotations

from flask import Blueprint, Response, abort, render_template
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required
from htmx_flask import request

from dashboard.web import feature_page, run_page, trends, views
from jobs import settings as job_settings
from loops.notifications import FEATURE_PATTERN
from loops.timeutil import utcnow

bp = Blueprint("insight", __name__)

# The same error pages as the rest of the dashboard.
for _code in (400, 403, 404):
    bp.register_error_handler(_code, views.error_page)

# A CSV of a feature holds every tenant, not a page of them.
CSV_ROWS = 100_000


def _feature_or_404(feature: str) -> str:
    if not FEATURE_PATTERN.fullmatch(feature) or not feature_page.exists(feature):
        abort(404)
    return feature


@bp.get("/features")
@login_required
def features() -> ResponseReturnValue:
    window = job_settings.lookback_days()
    return render_template(
        "features.html", features=feature_page.summaries(utcnow(), window), window_days=window
    )


def _load(feature: str, per_page: int = feature_page.PER_PAGE) -> feature_page.FeaturePage:
    raw_page = request.args.get("page", "")
    return feature_page.load(
        feature,
        now=utcnow(),
        window_days=job_settings.lookback_days(),
        q=request.args.get("q", ""),
        sort=feature_page.parse_sort(request.args.get("sort")),
        flag=feature_page.parse_flag(request.args.get("flag")),
        page=int(raw_page) if raw_page.isdigit() and len(raw_page) < 8 else 1,
        weeks=trends.parse_weeks(request.args.get("weeks")),
        per_page=per_page,
    )


@bp.get("/features/<feature>")
@login_required
def feature(feature: str) -> ResponseReturnValue:
    page = _load(_feature_or_404(feature))
    if views._wants_partial("feature-table"):
        return render_template(
            "_feature_table.html", page=page, ranges=trends.TREND_RANGES, oob_state=True
        )
    return render_template("feature.html", page=page, ranges=trends.TREND_RANGES)


@bp.get("/features/<feature>/tenants.csv")
@login_required
def feature_csv(feature: str) -> ResponseReturnValue:
    """Every tenant's ratio and rate of the feature (search and flag filters apply)."""
    page = _load(_feature_or_404(feature), per_page=CSV_ROWS)
    response = Response(feature_page.page_csv(page), mimetype="text/csv")
    stamp = utcnow().strftime("%Y%m%d")
    response.headers["Content-Disposition"] = f'attachment; filename="{feature}-{stamp}.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/runs/<int:run_id>")
@login_required
def run(run_id: int) -> ResponseReturnValue:
    page = run_page.load(run_id, with_job=bool(current_user.is_admin))
    if page is None:
        abort(404)
    return render_template("run.html", r=page)
