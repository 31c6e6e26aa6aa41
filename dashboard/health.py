"""/healthz: the database must answer; Redis is reported but not required."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as ProbeTimeout

from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from dashboard.extensions import db
from loops.redis_conn import redis_up

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


# A frozen database server (a stopped process, a black-holed network) accepts the
# bytes and never answers, and no client-side timeout covers an established
# connection. The probe runs beside the request so /healthz still says "down" within
# HEALTHZ_DB_TIMEOUT_S; at most two probes can be stuck at once.
_probes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="healthz-db")


def _probe(app: Flask) -> None:
    with app.app_context(), db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def database_up() -> bool:
    timeout: float = current_app.config["HEALTHZ_DB_TIMEOUT_S"]
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        _probes.submit(_probe, app).result(timeout=timeout)
        return True
    except ProbeTimeout:
        log.warning("event=healthz_database_down error=timeout after_s=%g", timeout)
        return False
    except SQLAlchemyError as exc:
        log.warning("event=healthz_database_down error=%s", type(exc).__name__)
        return False


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    database = database_up()
    body = {"database": "ok" if database else "down", "redis": "ok" if redis_up() else "down"}
    return jsonify(body), 200 if database else 503
