"""Dashboard login: sessions for viewers and admins (members use API tokens only)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import cache, wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    g,
    has_request_context,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from flask.typing import ResponseReturnValue
from flask.wrappers import Request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from dashboard.extensions import db, login_manager
from loops.models import User

bp = Blueprint("auth", __name__)

# Failed sign-ins per client address and per (address, email); successful ones
# are not counted (see deduct_when).
LOGIN_LIMIT_PER_ADDRESS = "20 per minute; 100 per hour"
LOGIN_LIMIT_PER_ACCOUNT = "5 per minute"
FAILED_LOGIN_STATUS = 401


@cache
def _dummy_hash() -> str:
    """Compared against when the email is unknown, so a miss costs as much as a hit (no
    user enumeration by timing). Made on the first sign-in, not at import: hashing
    costs as much as a sign-in, and most processes (workers, commands) never need it."""
    return generate_password_hash("not-a-real-password")


F = TypeVar("F", bound=Callable[..., Any])


@login_manager.user_loader
def load_user(session_id: str) -> User | None:
    user_id, _, version = session_id.partition(":")
    if not user_id.isdigit():
        return None
    user = db.session.get(User, int(user_id))
    if user is None or str(user.session_version) != version or not user.can_view_dashboard:
        return None
    return user


@login_manager.unauthorized_handler
def unauthorized() -> ResponseReturnValue:
    if getattr(request, "htmx", False):
        # An expired session inside an htmx request: send the whole page to the
        # login form instead of swapping the form into a table cell.
        response = Response("Sign in again.", 401, mimetype="text/plain")
        response.headers["HX-Redirect"] = url_for("auth.login", next=_current_page())
        return response
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _current_page() -> str:
    current = request.headers.get("HX-Current-URL", "")
    parts = urlsplit(current)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return path if is_safe_next(path) else "/"


def is_safe_next(target: str | None) -> bool:
    """Only same-site absolute paths: never another host, scheme or protocol-relative URL."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc and "\\" not in target


def admin_required(view: F) -> F:
    """Signed-in admins only: anonymous users go to the login page, viewers get 403."""

    @wraps(view)
    @login_required
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return cast(F, wrapped)


def _email_key() -> str:
    email = request.form.get("email", "").strip().lower()
    return f"{request.remote_addr}|{email}"


def _failed(response: Response) -> bool:
    return response.status_code == FAILED_LOGIN_STATUS


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    next_page = request.values.get("next", "")
    if not is_safe_next(next_page):
        next_page = ""
    if current_user.is_authenticated:
        return redirect(next_page or url_for("views.index"))
    email = ""
    if request.method == "POST":
        email = request.form.get("email", "").strip().lower()
        password = request.form.get("password", "")
        user = db.session.execute(select(User).where(User.email == email)).scalar_one_or_none()
        ok = check_password_hash(
            user.password_hash if user and user.password_hash else _dummy_hash(), password
        )
        if user is None or not user.password_hash or not ok:
            flash("Wrong email or password.", "error")
            return render_template("login.html", email=email, next=next_page), FAILED_LOGIN_STATUS
        if not user.can_view_dashboard:
            flash(
                "This account is a member account: members use the API, not the dashboard. "
                "Ask an admin for viewer access.",
                "error",
            )
            return render_template("login.html", email=email, next=next_page), 403
        # A fresh session at sign-in: nothing planted before it (session fixation)
        # survives into the authenticated session.
        session.clear()
        login_user(user, remember=bool(request.form.get("remember")))
        return redirect(next_page or url_for("views.index"))
    return render_template("login.html", email=email, next=next_page)


@bp.errorhandler(RateLimitExceeded)
def throttled(exc: RateLimitExceeded) -> ResponseReturnValue:
    flash("Too many failed sign-in attempts. Wait a minute and try again.", "error")
    return render_template("login.html", email="", next=""), 429


@bp.post("/logout")
@login_required
def logout() -> ResponseReturnValue:
    # Bumping the version invalidates every cookie (session or remember-me) that
    # carries the old one, on every device.
    user = db.session.get(User, current_user.id)
    if user is not None:
        user.session_version = (user.session_version or 0) + 1
        db.session.commit()
    logout_user()
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("auth.login"))


class _SessionInterface(SecureCookieSessionInterface):
    """The session cookie is Secure when configured so, or when this request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(super().get_cookie_secure(app) or (has_request_context() and request.is_secure))

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        # No cookie, nothing to verify: an empty session without building the signing
        # serializer (the API's requests never carry one; mark-read's CPU, profiled).
        if app.config["SECRET_KEY"] and self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        super().save_session(app, session, response)
        # Flask saves the session after every after_request hook has run, flask-login's
        # remember-me cookie included: the one point that sees every cookie of the response.
        _secure_cookies_over_https(response)


def _forget_user(exc: BaseException | None = None) -> None:
    # flask-login caches the user, Flask-WTF the CSRF token, on g; when an app
    # context outlives one request (tests), the next request must derive its own.
    g.pop("_login_user", None)
    g.pop(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)


def _secure_cookies_over_https(response: Response) -> None:
    # SESSION_COOKIE_SECURE covers deployments that always use HTTPS; this covers
    # the rest (the remember-me cookie): any cookie set on an HTTPS request is Secure.
    if has_request_context() and request.is_secure:
        cookies = response.headers.getlist("Set-Cookie")
        if cookies and any("secure" not in c.lower() for c in cookies):
            response.headers.remove("Set-Cookie")
            for cookie in cookies:
                if "; secure" not in cookie.lower():
                    cookie += "; Secure"
                response.headers.add("Set-Cookie", cookie)


def init_app(app: Flask) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Sign in to see the dashboard."
    login_manager.login_message_category = "info"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config.setdefault("REMEMBER_COOKIE_DURATION", timedelta(days=14))
    app.config["REMEMBER_COOKIE_HTTPONLY"] = True
    app.config["REMEMBER_COOKIE_SAMESITE"] = "Lax"
    if app.config["SESSION_COOKIE_SECURE"]:
        app.config["REMEMBER_COOKIE_SECURE"] = True
    app.session_interface = _SessionInterface()
    app.teardown_request(_forget_user)

    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"])
    app.config.setdefault(
        "RATELIMIT_STORAGE_OPTIONS", {"socket_connect_timeout": 1, "socket_timeout": 1}
    )
    # Redis down must not lock everyone out: count in this process until it returns.
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
    _login_limiter().init_app(app)
    app.register_blueprint(bp)


def _signing_in() -> bool:
    return request.endpoint == "auth.login"


def _login_limiter() -> Limiter:
    """Each app's own limiter (kept in app.extensions by Flask-Limiter): its storage and
    its verdict on that storage (down: counting in memory) belong to that app alone."""
    limiter = Limiter(key_func=get_remote_address, key_prefix="el-limit")
    limiter.limit(LOGIN_LIMIT_PER_ADDRESS, methods=["POST"], deduct_when=_failed)(bp)
    limiter.limit(
        LOGIN_LIMIT_PER_ACCOUNT, methods=["POST"], key_func=_email_key, deduct_when=_failed
    )(bp)
    # Only sign-in is limited. Every other request (the API's mark-read among them) is
    # let through before the limiter resolves limits, which cost about a tenth of a
    # mark-read's CPU when profiled (docs/PERFORMANCE.md).
    limiter.request_filter(lambda: not _signing_in())
    return limiter
