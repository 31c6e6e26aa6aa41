"""The RQ worker: runs each job inside the Flask app context and sweeps abandoned runs."""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask
from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.worker import SimpleWorker

from loops.timeutil import utcnow

log = logging.getLogger(__name__)


class Sweeper:
    """A daemon thread: every ``interval_s`` s, fail abandoned runs and refresh daily counts."""

    def __init__(self, app: Flask, interval_s: float) -> None:
        self.app = app
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tune-sweeper", daemon=True)

    def sweep_once(self) -> int:
        from jobs.runs import sweep_abandoned

        with self.app.app_context():
            return sweep_abandoned(utcnow())

    def refresh_rollups(self) -> bool:
        from jobs import settings
        from jobs.rollup_refresh import refresh_if_due
        from loops.redis_conn import get_redis

        with self.app.app_context():
            return refresh_if_due(get_redis(), utcnow(), settings.rollup_refresh_interval_s())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep_once()
            except Exception:
                log.exception("event=sweep_failed where=worker")
            # Between weekly runs the dashboard's charts would go stale: recount
            # recent days every few minutes (once across all workers).
            try:
                self.refresh_rollups()
            except Exception:
                log.exception("event=rollup_refresh_failed where=worker")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


class AppWorker(SimpleWorker):
    """An RQ worker that performs jobs in-process inside ``app``'s context.

    In-process (no fork per job): a tenant's tuning takes milliseconds, so a fork,
    a fresh database pool and a re-import per job would cost more than the work.
    The app is created once per worker process by whoever builds the worker (the
    ``rq worker`` command passes the app it already has), never at import time.
    A worker process killed mid-job leaves its runs to the heartbeat sweep.
    """

    def __init__(
        self, *args: Any, app: Flask, sweep_interval_s: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.app = app
        self.sweep_interval_s = sweep_interval_s

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        with self.app.app_context():
            return super().perform_job(job, queue, execution)

    def unsubscribe(self) -> None:
        """Stop listening for commands without waiting out the listener's poll.

        RQ's listener thread polls every 60 s, and once unsubscribed it sleeps a whole
        poll; RQ's ``unsubscribe`` joins it with no timeout, so a SIGTERM soon after
        start-up could keep the worker alive for a minute (a process manager then kills
        it). The thread is a daemon: a short join is enough.
        """
        if self.pubsub_thread:
            self.log.info("Worker %s: unsubscribing from commands", self.name)
            self.pubsub.unsubscribe()
            self.pubsub_thread.stop(timeout=1)

    def work(self, *args: Any, **kwargs: Any) -> bool:
        sweeper = None
        if self.sweep_interval_s:
            sweeper = Sweeper(self.app, self.sweep_interval_s)
            sweeper.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            if sweeper is not None:
                sweeper.stop()
