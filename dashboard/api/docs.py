"""GET /api/v1/docs: Swagger UI (vendored under static/, no CDN) over /api/v1/openapi.json."""

from __future__ import annotations

from flask import render_template
from flask.typing import ResponseReturnValue

# The vendored copy under static/vendor/ (`make assets` refreshes it from package.json).
SWAGGER_UI_VERSION = "5.35.0"


def api_docs() -> ResponseReturnValue:
    return render_template("api_docs.html", swagger_ui_version=SWAGGER_UI_VERSION)
