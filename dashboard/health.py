"""/healthz: the database must answer; Redis is reported but not required."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from dashboard.extensions import db
from dashboard.redis_conn import redis_up

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


def database_up() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
        return True
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning("event=healthz_database_down error=%s", type(exc).__name__)
        return False


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    database = database_up()
    body = {"database": "ok" if database else "down", "redis": "ok" if redis_up() else "down"}
    return jsonify(body), 200 if database else 503
