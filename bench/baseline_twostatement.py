"""Raw baseline for mark-read: plain WSGI over the product's own two statements.

Exactly what the product's fast path does (``loops.read_fastpath``) and nothing
else: a psycopg 3 ``ConnectionPool`` in autocommit, the token statement, then the
read statement (``bench.twostatement``). Served by the product's gunicorn config
(``gunicorn -c gunicorn.conf.py bench.baseline_twostatement:app``), so the two differ
only in the code between the socket and those two statements.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from bench.twostatement import NOT_FOUND, healthy, mark_read

StartResponse = Callable[..., Any]

REASONS = {200: "200 OK", 401: "401 Unauthorized", 404: "404 Not Found"}


def _json(start_response: StartResponse, status: int, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        REASONS[status],
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path: str = environ.get("PATH_INFO", "")
    if path == "/healthz":
        healthy()
        return _json(start_response, 200, {"database": "ok"})
    parts = path.strip("/").split("/")
    # POST api/v1/notifications/<id>/read
    if (
        environ.get("REQUEST_METHOD") == "POST"
        and len(parts) == 5
        and parts[:3] == ["api", "v1", "notifications"]
        and parts[4] == "read"
        and parts[3].isdigit()
        and len(parts[3]) <= 18
    ):
        scheme, _, secret = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return _json(
                start_response,
                401,
                {"error": {"code": "unauthorized", "message": "Missing bearer token."}},
            )
        status, body = mark_read(secret.strip(), int(parts[3]))
        return _json(start_response, status, body)
    return _json(start_response, 404, NOT_FOUND)
