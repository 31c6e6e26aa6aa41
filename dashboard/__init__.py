"""engagement-loops: the Flask application factory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from htmx_flask import Htmx

from dashboard import config as settings
from dashboard import logs


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings from the environment, overridden by ``config``, then each part."""
    app = Flask(
        __name__,
        instance_relative_config=True,
        template_folder="../templates",
        static_folder="../static",
    )
    # Read once, here: the environment over .env, the caller's config over both. The
    # typed values go to app.config under their variables' names.
    loaded = settings.read_settings(config)
    app.config.from_mapping(config or {})
    app.config.from_mapping(settings.flask_config(loaded, app.instance_path))
    app.extensions["settings"] = loaded
    relaxed = bool(app.config.get("TESTING") or app.config.get("DEBUG"))
    settings.require_secret_key(loaded, relaxed=relaxed)
    if not app.config.get("SECRET_KEY"):
        # Debug/testing only (production was refused above): a per-process key.
        app.config["SECRET_KEY"] = os.urandom(32).hex()
    logs.configure_logging(app)

    from loops import database

    app.config.setdefault(
        "SQLALCHEMY_ENGINE_OPTIONS",
        database.engine_options(app.config["SQLALCHEMY_DATABASE_URI"], dict(app.config)),
    )
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        os.makedirs(app.instance_path, exist_ok=True)

    from dashboard import cli, errors, health, metrics, security
    from dashboard.api import read_route
    from dashboard.api import routes as api
    from dashboard.extensions import csrf, db, login_manager, migrate
    from dashboard.web import admin_rq, auth, delivery, views
    from dashboard.web import features as insight
    from loops import read_fastpath, redis_conn

    db.init_app(app)
    with app.app_context():
        database.init_engine(app, db.engine)
        read_fastpath.init_app(app, db.engine)
    database.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(__file__), "..", "migrations"))
    csrf.init_app(app)
    login_manager.init_app(app)
    redis_conn.init_app(app)
    errors.init_app(app)
    read_route.init_app(app)  # mark-read in front of Flask, behind security's ProxyFix
    security.init_app(app)
    metrics.init_app(app)
    auth.init_app(app)
    Htmx(app)
    admin_rq.init_app(app)

    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(delivery.bp)
    app.register_blueprint(insight.bp)
    cli.init_app(app)
    return app
