"""The OpenAPI 3 document for /api/v1, kept beside the routes it describes."""

from __future__ import annotations

from typing import Any

from loops.notifications import BULK_MAX_IDS, LIST_MAX_LIMIT, TITLE_MAX_LENGTH


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


ERRORS_AUTH = {
    "401": _error("Missing, unknown or revoked bearer token."),
}

NOTIFICATION_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "Notification id; anything not one of the caller's notifications is 404.",
    "schema": {"type": "string"},
}


# A created notification's id feeds the per-notification operations (clients, and
# stateful fuzzers, follow these).
NEW_ID_LINKS = {
    "MarkRead": {"operationId": "markRead", "parameters": {"id": "$response.body#/id"}},
    "MarkUnread": {"operationId": "markUnread", "parameters": {"id": "$response.body#/id"}},
}


INTERVAL = {
    "type": "array",
    "items": {"type": "number", "minimum": 0, "maximum": 1},
    "minItems": 2,
    "maxItems": 2,
}


def openapi_document() -> dict[str, Any]:
    timestamp = {"type": "string", "format": "date-time"}
    nullable_timestamp = {"type": ["string", "null"], "format": "date-time"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "engagement-loops API",
            "version": "1",
            "description": (
                "Mark notifications read; the first read of each notification records one "
                "ENGAGE signal for the reader's primary organization."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "field": {"type": "string"},
                            },
                        }
                    },
                },
                "Notification": {
                    "type": "object",
                    "required": ["id", "feature", "title", "created_at", "read_at"],
                    "properties": {
                        "id": {"type": "integer"},
                        "feature": {"type": "string"},
                        "title": {"type": "string"},
                        "created_at": timestamp,
                        "read_at": nullable_timestamp,
                    },
                },
                "ReadResult": {
                    "allOf": [
                        _ref("Notification"),
                        {
                            "type": "object",
                            "required": ["first_read"],
                            "properties": {"first_read": {"type": "boolean"}},
                        },
                    ]
                },
                "Calibration": {
                    "type": "object",
                    "required": ["key", "value", "sample_size", "computed_at"],
                    "properties": {
                        "key": {"type": "string"},
                        "value": {"type": ["number", "null"]},
                        "sample_size": {"type": "integer"},
                        "window_days": {"type": "integer"},
                        "computed_at": nullable_timestamp,
                        "engaged": {
                            "type": "integer",
                            "description": "engagement-ratio keys: delivered notifications "
                            "first-read (the numerator).",
                        },
                        "interval": {
                            **INTERVAL,
                            "description": "engagement-ratio keys: the 95% Wilson score "
                            "interval of engaged / sample_size ([0, 1] when sample_size is 0).",
                        },
                        "estimate": {
                            "type": ["number", "null"],
                            "description": "engagement-ratio keys: the ratio shrunk toward "
                            "the feature's pooled ratio across tenants (empirical Bayes).",
                        },
                    },
                },
                "Delivery": {
                    "type": "object",
                    "required": ["mode", "deliver_at", "shadow", "holdout"],
                    "properties": {
                        "mode": {"enum": ["immediate", "digest"]},
                        "deliver_at": {
                            **nullable_timestamp,
                            "description": "Set when the notification is held for a digest.",
                        },
                        "shadow": {"type": "boolean"},
                        "holdout": {"type": "boolean"},
                    },
                },
                "CreatedNotification": {
                    "allOf": [
                        _ref("Notification"),
                        {
                            "type": "object",
                            "required": ["delivery"],
                            "properties": {"delivery": _ref("Delivery")},
                        },
                    ]
                },
                "DeliveryPolicy": {
                    "type": "object",
                    "required": [
                        "org",
                        "enforced",
                        "holdout_percent",
                        "digest_hour_utc",
                        "features",
                    ],
                    "properties": {
                        "org": {"type": "string"},
                        "enforced": {"type": "boolean"},
                        "holdout_percent": {"type": "integer", "minimum": 0, "maximum": 100},
                        "digest_hour_utc": {"type": "integer", "minimum": 0, "maximum": 23},
                        "features": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": [
                                    "feature",
                                    "mode",
                                    "pinned",
                                    "reason",
                                    "ratio",
                                    "interval",
                                    "sample_size",
                                    "decided_at",
                                ],
                                "properties": {
                                    "feature": {"type": "string"},
                                    "mode": {"enum": ["immediate", "digest"]},
                                    "pinned": {"type": "boolean"},
                                    "pinned_by": {"type": ["string", "null"]},
                                    "pinned_at": nullable_timestamp,
                                    "reason": {"type": "string"},
                                    "ratio": {"type": ["number", "null"]},
                                    "interval": INTERVAL,
                                    "sample_size": {"type": "integer"},
                                    "decided_at": timestamp,
                                    "mode_since": timestamp,
                                },
                            },
                        },
                    },
                },
            },
        },
        "paths": {
            "/api/v1/notifications": {
                "get": {
                    "operationId": "listNotifications",
                    "summary": "The caller's notifications, newest first (by id).",
                    "parameters": [
                        {"name": "unread", "in": "query", "schema": {"type": "boolean"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": LIST_MAX_LIMIT},
                        },
                        {
                            "name": "before",
                            "in": "query",
                            "description": "Only notifications with id < before (pagination).",
                            "schema": {"type": "integer", "minimum": 1},
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["notifications", "unread_count", "next_before"],
                                "properties": {
                                    "notifications": {
                                        "type": "array",
                                        "items": _ref("Notification"),
                                    },
                                    "unread_count": {"type": "integer"},
                                    "next_before": {
                                        "type": ["integer", "null"],
                                        "description": "`before` for the next page; "
                                        "null on the last page.",
                                    },
                                },
                            },
                            "A page of notifications and the caller's unread count.",
                        ),
                        "400": _error("A query parameter is malformed."),
                        **ERRORS_AUTH,
                    },
                },
                "post": {
                    "operationId": "createNotification",
                    "summary": "Create a notification (admin tokens only).",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["feature", "title"],
                                    "properties": {
                                        "user_email": {"type": "string"},
                                        "user_id": {"type": "integer"},
                                        "feature": {
                                            "type": "string",
                                            "pattern": "^[a-z0-9_.-]{1,64}$",
                                        },
                                        "title": {"type": "string", "maxLength": TITLE_MAX_LENGTH},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _json(
                            _ref("CreatedNotification"),
                            "Created; `delivery` says whether it was delivered or held.",
                        )
                        | {"links": NEW_ID_LINKS},
                        "400": _error(
                            "A field is invalid or names no user (`field` says which), or the "
                            "body is not JSON sent with `Content-Type: application/json`."
                        ),
                        **ERRORS_AUTH,
                        "403": _error("The token's user is not an admin."),
                    },
                },
            },
            "/api/v1/notifications/read": {
                "post": {
                    "operationId": "markManyRead",
                    "summary": "Mark several (or all) of the caller's notifications read.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {
                                            "type": "object",
                                            "required": ["ids"],
                                            "properties": {
                                                "ids": {
                                                    "type": "array",
                                                    "items": {"type": "integer"},
                                                    "maxItems": BULK_MAX_IDS,
                                                }
                                            },
                                        },
                                        {
                                            "type": "object",
                                            "required": ["all"],
                                            "properties": {"all": {"const": True}},
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["marked"],
                                "properties": {"marked": {"type": "integer"}},
                            },
                            "How many notifications were newly marked read.",
                        ),
                        "400": _error(
                            "Malformed body (not JSON sent with `Content-Type: "
                            "application/json`), or more than 1,000 ids."
                        ),
                        **ERRORS_AUTH,
                    },
                },
            },
            "/api/v1/notifications/{id}/read": {
                "parameters": [NOTIFICATION_ID],
                "post": {
                    "operationId": "markRead",
                    "summary": "Mark one notification read; the first read records ENGAGE.",
                    "responses": {
                        "200": _json(
                            _ref("ReadResult"), "Read (first_read says if this was the first)."
                        ),
                        **ERRORS_AUTH,
                        "404": _error("No such notification of the caller's."),
                    },
                },
                "delete": {
                    "operationId": "markUnread",
                    "summary": "Mark one notification unread. A later read is not a first read.",
                    "responses": {
                        "200": _json(_ref("Notification"), "Unread (read_at is null)."),
                        **ERRORS_AUTH,
                        "404": _error("No such notification of the caller's."),
                    },
                },
            },
            "/api/v1/orgs/{slug}/calibrations/{key}": {
                "parameters": [
                    {"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "get": {
                    "operationId": "getCalibration",
                    "summary": "One calibration of a tenant; value is null on cold start.",
                    "responses": {
                        "200": _json(
                            _ref("Calibration"), "The calibration (value null if none yet)."
                        ),
                        **ERRORS_AUTH,
                        "403": _error("The token's user is neither viewer nor admin."),
                        "404": _error("No such tenant."),
                    },
                },
            },
            "/api/v1/orgs/{slug}/delivery-policy": {
                "parameters": [
                    {"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "get": {
                    "operationId": "getDeliveryPolicy",
                    "summary": "How a tenant's notifications of each feature are delivered.",
                    "responses": {
                        "200": _json(_ref("DeliveryPolicy"), "The tenant's delivery policy."),
                        **ERRORS_AUTH,
                        "403": _error("The token's user is neither viewer nor admin."),
                        "404": _error("No such tenant."),
                    },
                },
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness of the database (required) and Redis (reported).",
                    "security": [],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["database", "redis"],
                                "properties": {
                                    "database": {"const": "ok"},
                                    "redis": {"enum": ["ok", "down"]},
                                },
                            },
                            "The database answers.",
                        ),
                        "503": _json(
                            {
                                "type": "object",
                                "required": ["database", "redis"],
                                "properties": {
                                    "database": {"const": "down"},
                                    "redis": {"enum": ["ok", "down"]},
                                },
                            },
                            "The database does not answer.",
                        ),
                    },
                },
            },
        },
    }
