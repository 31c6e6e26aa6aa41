"""The one gunicorn launcher: browser, concurrency, reliability and end-to-end tests, and the
benchmarks, all serve the app (or the benchmark's baseline) this way, with gunicorn.conf.py."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.procs import ROOT, free_port, kill_group, wait_until

__all__ = ["ROOT", "LiveServer", "start_gunicorn"]


@dataclass
class LiveServer:
    """gunicorn with the production config on 127.0.0.1, in its own process group.

    ``workers``/``threads`` None leave gunicorn.conf.py's defaults (the benchmarks measure
    those); ``env`` entries win over everything else, the inherited environment included.
    Its output goes to ``log_path`` (appended: a restart on the same port keeps the log).
    """

    env: Mapping[str, str]
    log_path: Path
    app: str = "wsgi:app"
    workers: int | None = 2
    threads: int | None = 8
    port: int = 0
    name: str = "gunicorn"
    extra_args: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, *, timeout: float = 60, healthy: bool = True) -> LiveServer:
        """Start and wait until /healthz answers 200 (``healthy=False``: answers at all)."""
        self.port = self.port or free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.workers is not None:
            env["WEB_CONCURRENCY"] = str(self.workers)
        if self.threads is not None:
            env["GUNICORN_THREADS"] = str(self.threads)
        env.update(self.env)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--config",
                    str(ROOT / "gunicorn.conf.py"),
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    *self.extra_args,
                    self.app,
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(
            lambda: self._answers(healthy),
            timeout,
            interval=0.2,
            what=f"{self.name} on {self.url}",
        )
        return self

    def _answers(self, healthy: bool) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited early:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return not healthy  # answering, though a dependency is down
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            kill_group(self.process)


def start_gunicorn(
    env: Mapping[str, str], log_path: Path, *, workers: int = 2, threads: int = 16
) -> LiveServer:
    """The app under gunicorn on a free port, answering /healthz with 200."""
    return LiveServer(dict(env), log_path, workers=workers, threads=threads).start()
