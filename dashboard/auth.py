"""Dashboard login: sessions for viewers and admins (members use API tokens only)."""

from __future__ import annotations

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import login_user, logout_user
from sqlalchemy import select
from werkzeug.security import check_password_hash

from dashboard.extensions import db, login_manager
from dashboard.models import User

bp = Blueprint("auth", __name__)


@login_manager.user_loader
def load_user(session_id: str) -> User | None:
    user_id, _, version = session_id.partition(":")
    if not user_id.isdigit():
        return None
    user = db.session.get(User, int(user_id))
    if user is None or str(user.session_version) != version or not user.can_view_dashboard:
        return None
    return user


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    if request.method == "POST":
        email = request.form.get("email", "").strip().lower()
        password = request.form.get("password", "")
        user = db.session.execute(select(User).where(User.email == email)).scalar_one_or_none()
        if (
            user is None
            or not user.password_hash
            or not check_password_hash(user.password_hash, password)
        ):
            flash("Wrong email or password.", "error")
        elif not user.can_view_dashboard:
            flash(
                "Members cannot sign in to the dashboard; ask an admin for viewer access.", "error"
            )
        else:
            login_user(user)
            return redirect(url_for("views.index"))
    return render_template("login.html")


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    logout_user()
    return redirect(url_for("auth.login"))


def init_app(app: Flask) -> None:
    login_manager.login_view = "auth.login"
    app.register_blueprint(bp)
