"""Minimal-Flask baseline for mark-read: Flask alone (no extensions, no hooks) over the
product's two statements (``bench.twostatement``).

Between this and ``bench.baseline_twostatement`` (plain WSGI, same statements) lies
the cost of Flask itself; between this and the product, the cost of what the product
adds on top (security headers, body limits, JSON errors, log redaction, metrics).
"""

from __future__ import annotations

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from bench.twostatement import healthy, mark_read

app = Flask(__name__)


@app.get("/healthz")
def healthz() -> ResponseReturnValue:
    healthy()
    return jsonify(database="ok")


@app.post("/api/v1/notifications/<int:notification_id>/read")
def read_one(notification_id: int) -> ResponseReturnValue:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return jsonify(error={"code": "unauthorized", "message": "Missing bearer token."}), 401
    status, body = mark_read(secret.strip(), notification_id)
    return jsonify(body), status
