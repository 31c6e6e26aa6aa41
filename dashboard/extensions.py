"""Extension singletons, bound to an app in create_app()."""

from __future__ import annotations

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_wtf import CSRFProtect

from loops.database import db

__all__ = ["csrf", "db", "limiter", "login_manager", "migrate"]
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
# Login throttling; storage (Redis, in-memory fallback) is configured in auth.init_app.
limiter = Limiter(key_func=get_remote_address, key_prefix="el-limit")
