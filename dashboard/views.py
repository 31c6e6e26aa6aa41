"""Dashboard pages and HTMX partials."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue
from flask_login import login_required
from sqlalchemy import select

from dashboard.extensions import db
from dashboard.models import Organization

bp = Blueprint("views", __name__)


@bp.get("/")
@login_required
def index() -> ResponseReturnValue:
    orgs = db.session.execute(select(Organization).order_by(Organization.name)).scalars().all()
    return render_template("index.html", orgs=orgs)
