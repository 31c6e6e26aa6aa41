"""The app for gunicorn (``wsgi:app``) and for ``flask --app wsgi`` commands."""

from dashboard import create_app
from dashboard.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # A bad setting stops every entry point with one line naming it, exit status 1.
    raise SystemExit(f"error: {exc}") from None
