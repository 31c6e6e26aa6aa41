"""gunicorn settings for production and `make run` (override with the environment)."""

import glob
import multiprocessing
import os
import shutil
import tempfile
from typing import Any

# Prometheus counts: every worker writes its own to files in this directory, and /metrics
# (answered by any one worker) sums them all. It must be set before a worker imports
# prometheus_client, hence here, in the master; an operator may name the directory
# (PROMETHEUS_MULTIPROC_DIR); otherwise each start gets a fresh one of its own.
_own_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _own_metrics_dir = tempfile.mkdtemp(prefix="engagement-loops-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
# Threads serve I/O-bound requests (each waits on the database); processes use the cores.
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESSLOG", None)
errorlog = "-"
# Which proxies' X-Forwarded-* headers to believe is the app's decision alone
# (TRUSTED_PROXY_COUNT, applied with werkzeug's ProxyFix): gunicorn believes none, not
# even loopback's, so a forged X-Forwarded-Proto changes nothing when no proxy is trusted.
forwarded_allow_ips = ""
# Each worker loads the app itself, after the fork: nothing the app makes as it loads
# (database pools, Redis clients, the health probe's thread) is shared across a fork.
# Bad settings still stop the master at once (check_environment below).
preload_app = False

# Bad settings stop gunicorn here, in the master, with one line naming the variable and
# exit status 1: a worker that fails to load the app would only be forked again.
from dashboard.config import ConfigError, check_environment  # noqa: E402

try:
    _settings = check_environment()
except ConfigError as exc:
    raise SystemExit(f"error: {exc}") from None

if _settings.LOG_FORMAT == "json":
    # gunicorn's own lines (start, workers, access log) as JSON too, like the app's.
    logconfig_dict = {
        # The app installs its own root handler (dashboard.logs), in the same format.
        "root": {"level": "INFO", "handlers": []},
        "formatters": {"json": {"()": "dashboard.logs.KeyValueJsonFormatter"}},
        "handlers": {
            "json_console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            name: {"level": "INFO", "handlers": ["json_console"], "propagate": False}
            for name in ("gunicorn.error", "gunicorn.access")
        },
    }


def on_starting(server: Any) -> None:
    """Counts start at zero with each start of gunicorn: empty a reused metrics directory."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for path in glob.glob(os.path.join(directory, "*.db")):
        os.remove(path)


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's counts stay (they are part of the totals); its live gauges go."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _own_metrics_dir is not None:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)
