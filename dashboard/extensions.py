"""Extension singletons, bound to an app in create_app()."""

from __future__ import annotations

from flask_login import LoginManager
from flask_migrate import Migrate
from flask_wtf import CSRFProtect

from loops.database import db

__all__ = ["csrf", "db", "login_manager", "migrate"]
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
