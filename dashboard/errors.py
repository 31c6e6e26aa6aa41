"""Error responses: JSON under /api (and /healthz), HTML pages in the app's layout elsewhere;
never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request
from flask_login import AnonymousUserMixin
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """Raised by API code to answer with a JSON error."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or CODES.get(status, "error")
        self.extra = extra


def json_error(status: int, message: str, code: str | None = None, **extra: Any) -> Response:
    body: dict[str, Any] = {"code": code or CODES.get(status, "error"), "message": message}
    body.update(extra)
    response = jsonify({"error": body})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="engagement-loops"'
    return response


# The dashboard's own words for the failures it cannot recover from in a page.
ERROR_PAGES = {
    500: (
        "Something went wrong",
        "The error was logged. Try again; if it keeps happening, tell whoever runs this "
        "dashboard (the log line says event=unhandled_error).",
    ),
    503: (
        "Temporarily unavailable",
        "The database is unavailable; retry shortly. The page comes back by itself once it "
        "answers again.",
    ),
}


def html_error(status: int, *, database_down: bool = False) -> Response:
    """An error page in the app's layout, rendered without touching what just failed.

    With the database down, the page is drawn as for a signed-out visitor: the
    layout's user, navigation and banners would each query it again. If even
    that rendering fails, plain text.
    """
    title, text = ERROR_PAGES.get(status, ERROR_PAGES[500])
    attempts = [database_down, True] if not database_down else [True]
    for anonymous in attempts:
        if anonymous:
            g._login_user = AnonymousUserMixin()  # flask-login's current user, loaded no more
        try:
            page = render_template("error.html", code=status, title=title, text=text)
        except Exception:
            log.exception("event=error_page_failed status=%s anonymous=%s", status, anonymous)
            from loops.database import discard_session

            discard_session()
            continue
        return Response(page, status, mimetype="text/html")
    return Response(f"{title}. {text}", status, mimetype="text/plain")


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def _database_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def handle_api_error(exc: ApiError) -> Response:
        return json_error(exc.status, exc.message, exc.code, **exc.extra)

    @app.errorhandler(HTTPException)
    def handle_http(exc: HTTPException) -> Any:
        if not wants_json():
            if exc.code in ERROR_PAGES:
                return html_error(exc.code)
            return exc
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 404:
            message = "Not found."
        response = json_error(status, message)
        if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> Any:
        from loops.database import discard_session

        discard_session()  # a plain rollback raises again on a dropped connection
        if _database_unavailable(exc):
            # The driver's first line says why (refused, too many clients, timeout…).
            reason = str(getattr(exc, "orig", exc)).splitlines()[0][:200] if str(exc) else ""
            log.warning(
                "event=database_unavailable path=%s error=%s reason=%r",
                request.path,
                type(exc).__name__,
                reason,
            )
            if wants_json():
                return json_error(503, "The database is unavailable; retry shortly.")
            return html_error(503, database_down=True)
        log.exception("event=unhandled_error path=%s", request.path)
        if wants_json():
            return json_error(500, "Internal server error.")
        return html_error(500)
