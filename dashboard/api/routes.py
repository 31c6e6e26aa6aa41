"""The JSON API under /api/v1: parse, call the domain, serialise; errors are JSON."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from dashboard.api import docs
from dashboard.api.auth import bearer_secret, current_api_user, token_required
from dashboard.api.openapi import openapi_document
from dashboard.errors import ApiError
from dashboard.extensions import csrf, db
from loops import delivery, notifications
from loops.accounts import find_org
from loops.calibrations import read_payload
from loops.delivery import PolicySettings
from loops.models import Role, User
from loops.signals import loops_on
from loops.timeutil import utcnow

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)  # token-authenticated, not cookie-authenticated


MAX_ID = 2**63 - 1
MAX_USER_ID = 2**31 - 1  # users.id is a 32-bit integer; a larger id names no user


# Set in the WSGI environ by the mark-read route in front of Flask (read_route) when
# its attempt failed: read_one raises it again, so that Flask answers it (503 when the
# database is down, 500 otherwise), logs and counts it as its own.
FAILED_FAST_READ = "engagement_loops.failed_fast_read"


def parse_notification_id(raw: str) -> int | None:
    """The id a path names; None when it is not a positive 64-bit integer (no notification)."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ID else None


def _notification_id(raw: str) -> int:
    """Path ids that are not a positive 64-bit integer name no notification: 404."""
    value = parse_notification_id(raw)
    if value is None:
        raise ApiError(404, "Not found.")
    return value


def _json_body() -> dict[str, Any]:
    # curl -d sends a form's content type; such a body was parsed as a form, not JSON.
    if not request.is_json:
        raise ApiError(
            400, "Send the body as JSON, with the header Content-Type: application/json."
        )
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _storable(value: str) -> bool:
    """PostgreSQL text holds no NUL, and UTF-8 no lone surrogate (JSON can send both)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(openapi_document())


bp.add_url_rule("/docs", view_func=docs.api_docs)  # Swagger UI over openapi.json


@bp.post("/notifications/<raw_id>/read")
def read_one(raw_id: str) -> ResponseReturnValue:
    failed = request.environ.get(FAILED_FAST_READ)
    if failed is not None:
        raise failed
    secret = bearer_secret()
    if secret is None:
        raise ApiError(401, "Missing bearer token.")
    # A bad id is a 404, but only once the token is known to be good.
    notification_id = parse_notification_id(raw_id)
    principal, result = notifications.read_with_token(
        secret, notification_id, now=utcnow(), loops_enabled=loops_on()
    )
    if principal is None:
        raise ApiError(401, "Invalid or revoked token.")
    if result is None:
        raise ApiError(404, "Not found.")
    return jsonify(read_body(result))


def read_body(result: notifications.ReadResult) -> dict[str, Any]:
    """What mark-read answers (200): the notification, and whether this was its first read."""
    return notifications.serialize(result.notification) | {"first_read": result.first_read}


@bp.delete("/notifications/<raw_id>/read")
@token_required()
def unread_one(raw_id: str) -> ResponseReturnValue:
    notification = notifications.mark_unread(current_api_user().id, _notification_id(raw_id))
    if notification is None:
        raise ApiError(404, "Not found.")
    return jsonify(notifications.serialize(notification))


@bp.post("/notifications/read")
@token_required()
def read_many() -> ResponseReturnValue:
    body = _json_body()
    ids: list[int] | None
    if body.get("all") is True and "ids" not in body:
        ids = None
    elif "ids" in body and "all" not in body:
        raw = body["ids"]
        if not isinstance(raw, list) or not all(_is_int(i) for i in raw):
            raise ApiError(400, "ids must be a list of integers.", field="ids")
        if len(raw) > notifications.BULK_MAX_IDS:
            raise ApiError(400, f"At most {notifications.BULK_MAX_IDS} ids per call.", field="ids")
        ids = sorted({i for i in raw if 0 < i <= MAX_ID})
    else:
        raise ApiError(400, 'Send either {"ids": [...]} or {"all": true}.')
    if ids == []:
        return jsonify({"marked": 0})
    marked = notifications.mark_many_read(
        current_api_user().id, ids, now=utcnow(), loops_enabled=loops_on()
    )
    return jsonify({"marked": marked})


def _query_int(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not low <= int(raw) <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}.", field=name)
    return int(raw)


def _query_bool(name: str) -> bool:
    raw = request.args.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiError(400, f"{name} must be true or false.", field=name)
    return raw in ("true", "1")


@bp.get("/notifications")
@token_required()
def list_notifications() -> ResponseReturnValue:
    limit = _query_int("limit", notifications.LIST_DEFAULT_LIMIT, 1, notifications.LIST_MAX_LIMIT)
    assert limit is not None
    before = _query_int("before", None, 1, MAX_ID)
    page = notifications.list_for_user(
        current_api_user().id, unread_only=_query_bool("unread"), limit=limit, before=before
    )
    return jsonify(
        {
            "notifications": [notifications.serialize(n) for n in page.items],
            "unread_count": page.unread_count,
            "next_before": page.next_before,
        }
    )


def _recipient(body: dict[str, Any]) -> User:
    if "user_id" in body:
        if not _is_int(body["user_id"]) or not 0 < body["user_id"] <= MAX_ID:
            raise ApiError(400, "user_id must be a positive integer.", field="user_id")
        user = db.session.get(User, body["user_id"]) if body["user_id"] <= MAX_USER_ID else None
        if user is None:
            raise ApiError(400, "user_id names no user.", field="user_id")
        return user
    if "user_email" in body:
        email = body["user_email"]
        if not isinstance(email, str) or not email.strip() or not _storable(email):
            raise ApiError(400, "user_email must be a non-empty string.", field="user_email")
        user = db.session.execute(
            select(User).where(User.email == email.strip().lower())
        ).scalar_one_or_none()
        if user is None:
            raise ApiError(400, "user_email names no user.", field="user_email")
        return user
    raise ApiError(400, "Give the recipient as user_email or user_id.", field="user_email")


@bp.post("/notifications")
@token_required(Role.ADMIN)
def create_notification() -> ResponseReturnValue:
    body = _json_body()
    feature = body.get("feature")
    if not isinstance(feature, str) or not notifications.FEATURE_PATTERN.fullmatch(feature):
        raise ApiError(400, "feature must be 1-64 characters of [a-z0-9_.-].", field="feature")
    title = body.get("title")
    if (
        not isinstance(title, str)
        or not title.strip()
        or len(title) > notifications.TITLE_MAX_LENGTH
        or not _storable(title)
    ):
        raise ApiError(
            400,
            f"title must be a non-empty string of at most {notifications.TITLE_MAX_LENGTH} "
            "characters, without NUL or unpaired surrogates.",
            field="title",
        )
    created = notifications.create(
        _recipient(body),
        feature=feature,
        title=title,
        now=utcnow(),
        loops_enabled=loops_on(),
        policy=PolicySettings.from_config(current_app.config),
    )
    payload = notifications.serialize(created.notification)
    return jsonify(payload | {"delivery": created.delivery.as_json()}), 201


@bp.get("/orgs/<slug>/calibrations/<path:key>")
@token_required(Role.VIEWER, Role.ADMIN)
def calibration(slug: str, key: str) -> ResponseReturnValue:
    if not (_storable(slug) and _storable(key)):
        raise ApiError(404, "Not found.")
    org = find_org(slug)
    if org is None:
        raise ApiError(404, "Not found.")
    return jsonify(read_payload(org.id, key))


@bp.get("/orgs/<slug>/delivery-policy")
@token_required(Role.VIEWER, Role.ADMIN)
def delivery_policy(slug: str) -> ResponseReturnValue:
    if not _storable(slug):
        raise ApiError(404, "Not found.")
    org = find_org(slug)
    if org is None:
        raise ApiError(404, "Not found.")
    settings = PolicySettings.from_config(current_app.config)
    return jsonify(
        {
            "org": org.slug,
            "enforced": bool(org.policy_enforced),
            "holdout_percent": settings.holdout_percent,
            "digest_hour_utc": settings.digest_hour_utc,
            "features": [delivery.policy_json(p) for p in delivery.policies_of(org.id)],
        }
    )
