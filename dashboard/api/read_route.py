"""Mark-read's plain requests answered in front of Flask, exactly as Flask's route answers them.

``POST /api/v1/notifications/<id>/read`` is the API's hot path: client apps call it
for every notification read. Through Flask, the request context, the hooks, routing
and the Response object cost more CPU than the fast path's two statements
(``loops.read_fastpath``) themselves (``bench.markread_cpu``). This WSGI route sits
inside the app's middleware (ProxyFix: the scheme and client address it sees are the
trusted ones) and answers the plain requests whose read succeeds — POST to the route's
own path with a valid id, a bearer token, no body Flask would look at (none, or one
within the size limit that is not a form), no query string, no cookie — with
what Flask would send: the body of ``routes.read_body`` from Flask's JSON provider, the
headers of ``dashboard.security`` (HSTS over HTTPS), the request counted by
``dashboard.metrics`` under the route's template, and its ENGAGE signals as the web's.

Everything else is Flask's, which stays the one source of truth for the edge cases:

- requests that are not plain, and the disabled route (``MARK_READ_FAST_ROUTE=false``);
- reads that are not a 200 here (a token that is not valid, a notification that is
  not theirs, a read only the general path settles): Flask works them out again. The
  statements changed nothing in those cases but the token's last-used time, which the
  second run, a minute's resolution later, leaves alone;
- failures (database down: 503; anything else: 500): Flask's view raises them again
  (``routes.FAILED_FAST_READ``), so Flask answers, logs and counts them as its own.

SQLite apps have no fast path and no route: Flask answers all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from flask import Flask, Response

from dashboard import metrics, security
from dashboard.api import routes
from dashboard.api.auth import bearer_secret_of
from loops import notifications, read_fastpath
from loops.settings import loops_enabled
from loops.timeutil import utcnow

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

SETTING = "MARK_READ_FAST_ROUTE"
ENDPOINT = f"{routes.bp.name}.{routes.read_one.__name__}"
# Flask's session interface adds it to every response whose session was looked at, and
# flask-login looks at every response's (requests with a cookie go to Flask).
VARY_COOKIE = ("Vary", "Cookie")
SECURE_SCHEMES = ("https", "wss")  # werkzeug's Request.is_secure


class ReadRoute:
    """A WSGI app in front of Flask's: answers the plain mark-reads, hands on the rest."""

    def __init__(self, app: Flask, flask_wsgi: WSGIApplication) -> None:
        self.app = app
        self.flask_wsgi = flask_wsgi
        # Flask's rule for the route (its metrics label) and the path around the id,
        # read from the URL map on first use (blueprints register after this is built).
        self._rule: tuple[str, str, str] | None = None

    def rule(self) -> tuple[str, str, str]:
        """The route's template, and the parts of its path before and after the id."""
        if self._rule is None:
            rule = next(self.app.url_map.iter_rules(ENDPOINT))
            (argument,) = rule.arguments
            before, _, after = rule.rule.partition(f"<{argument}>")
            self._rule = (rule.rule, before, after)
        return self._rule

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ[metrics.ARRIVED] = started = time.perf_counter()
        plain = self.plain_read(environ)
        if plain is None:
            return self.flask_wsgi(environ, start_response)
        notification_id, secret = plain
        try:
            with metrics.serving_request():
                fast = notifications.fast_read(
                    secret,
                    notification_id,
                    now=utcnow(),
                    loops_enabled=loops_enabled(self.app.config.get("LOOPS_ENABLED")),
                    app=self.app,
                )
            if fast.result is None:  # 401, 404, or the general path's to settle
                return self.flask_wsgi(environ, start_response)
            # Flask's jsonify, without the app context it would look the app up in.
            response = cast(Response, self.app.json.response(routes.read_body(fast.result)))
            headers = response.headers.to_wsgi_list()
            path = environ["PATH_INFO"]
            headers.append(("Content-Security-Policy", security.content_security_policy(path)))
            headers.extend(security.default_headers(environ["wsgi.url_scheme"] in SECURE_SCHEMES))
            headers.append(VARY_COOKIE)
            body = response.get_data()
            metrics.count_request("POST", self.rule()[0], response.status_code, started)
        except Exception as exc:
            environ[routes.FAILED_FAST_READ] = exc
            return self.flask_wsgi(environ, start_response)
        start_response(response.status, headers)
        return [body]

    def plain_read(self, environ: WSGIEnvironment) -> tuple[int, str] | None:
        """(id, token) of a request this route may answer; None: Flask's to answer."""
        if (
            environ.get("REQUEST_METHOD") != "POST"
            or environ.get("QUERY_STRING")
            or environ.get("HTTP_COOKIE")
            or "HTTP_TRANSFER_ENCODING" in environ
        ):
            return None
        config = self.app.config
        if not self.ignored_body(environ.get("CONTENT_LENGTH"), environ.get("CONTENT_TYPE")):
            return None
        # Host checks (SERVER_NAME, TRUSTED_HOSTS) are Flask's routing's.
        if not config[SETTING] or config.get("SERVER_NAME") or config.get("TRUSTED_HOSTS"):
            return None
        _template, before, after = self.rule()
        path: str = environ.get("PATH_INFO", "")
        if len(path) <= len(before) + len(after) or not (
            path.startswith(before) and path.endswith(after)
        ):
            return None
        notification_id = routes.parse_notification_id(path[len(before) : len(path) - len(after)])
        secret = bearer_secret_of(environ.get("HTTP_AUTHORIZATION", ""))
        if notification_id is None or secret is None:
            return None
        return notification_id, secret

    def ignored_body(self, length: str | None, content_type: str | None) -> bool:
        """Whether Flask would answer as if the request had no body.

        Flask's view never reads it; its hooks refuse one only past MAX_CONTENT_LENGTH
        (413) or, for form bodies, with a NUL in a value (400). So a declared length
        within the limit that is not a form is ignored, as clients sending ``{}`` with
        every POST (fetch wrappers, h2load) need; anything else is Flask's to answer.
        """
        if not length or length == "0":
            return True
        if not length.isascii() or not length.isdigit():
            return False
        limit = self.app.config.get("MAX_CONTENT_LENGTH")
        if limit and int(length) > limit:
            return False
        mimetype = (content_type or "").partition(";")[0].strip().lower()
        return mimetype not in security.FORM_MIMETYPES


def init_app(app: Flask) -> None:
    """Put the route in front of Flask's WSGI app: before the middleware that wraps it
    (ProxyFix, in ``security.init_app``). PostgreSQL apps only: elsewhere there is no
    fast path."""
    if read_fastpath.available(app):
        app.wsgi_app = ReadRoute(app, app.wsgi_app)  # type: ignore[method-assign]
