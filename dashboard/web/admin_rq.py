"""rq-dashboard under /admin/rq, for signed-in admins only (queues, workers, failed jobs)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, abort, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from dashboard.extensions import csrf
from loops.redis_conn import redis_up

URL_PREFIX = "/admin/rq"
BLUEPRINT_NAME = "rq_dashboard"


def _same_origin() -> bool:
    """rq-dashboard's own POSTs (requeue, delete) carry no CSRF token: require same origin."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if origin:
        return urlsplit(origin).netloc == request.host
    return request.headers.get("Sec-Fetch-Site") == "same-origin"


def _guard() -> ResponseReturnValue | None:
    if request.blueprint != BLUEPRINT_NAME:
        return None
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if not current_user.is_admin:
        abort(403)
    if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin():
        abort(403)
    if not redis_up():
        return Response(
            "Redis is unreachable, so rq-dashboard has nothing to show. "
            "The rest of the dashboard keeps working.",
            503,
            mimetype="text/plain",
        )
    return None


def init_app(app: Flask) -> None:
    import rq_dashboard
    from rq_dashboard.web import setup_rq_connection

    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", app.config["REDIS_URL"])
    app.config.setdefault("RQ_DASHBOARD_POLL_INTERVAL", 2500)
    setup_rq_connection(app)  # builds a client only; connects on first use
    # An app-wide hook: Flask runs those before any blueprint's own, rq-dashboard's
    # included, so nobody but a signed-in admin reaches its code.
    app.before_request(_guard)
    csrf.exempt(rq_dashboard.blueprint)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
