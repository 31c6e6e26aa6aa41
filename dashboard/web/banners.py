"""System status shown on every page: loops switch, Redis, workers, scheduler, next run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import g
from redis.exceptions import RedisError

from dashboard.web.formatting import cron_text, weekday_text
from jobs import settings as job_settings
from loops.redis_conn import get_redis, redis_up
from loops.signals import loops_on

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Banner:
    level: str  # "warning" | "error" | "info"
    title: str
    text: str


@dataclass(frozen=True)
class SystemStatus:
    loops_enabled: bool
    redis_up: bool
    workers: int | None  # None: unknown (Redis down)
    scheduler_alive: bool | None
    next_run: datetime | None
    cron: str

    @property
    def banners(self) -> list[Banner]:
        out: list[Banner] = []
        if not self.loops_enabled:
            out.append(
                Banner(
                    "warning",
                    "Loops are disabled.",
                    'LOOPS_ENABLED is not "true": reads record no signals and tune runs '
                    "are recorded as skipped without writing calibrations.",
                )
            )
        if not self.redis_up:
            out.append(
                Banner(
                    "error",
                    "Redis is unreachable.",
                    "Run now cannot queue runs and worker and scheduler status is unknown. "
                    "Pages and the API keep working; this clears by itself when Redis is back.",
                )
            )
            return out
        if not self.workers:
            out.append(
                Banner(
                    "warning",
                    "No worker is running.",
                    "Queued runs wait until one starts: flask --app wsgi rq worker",
                )
            )
        if not self.scheduler_alive:
            out.append(
                Banner(
                    "warning",
                    "The scheduler is not running.",
                    "The weekly run will not be enqueued until it starts: "
                    "flask --app wsgi rq scheduler",
                )
            )
        return out

    @property
    def schedule_text(self) -> str:
        """The configured cron in words: "every Monday at 05:30 UTC"."""
        return cron_text(self.cron)

    @property
    def next_run_text(self) -> str:
        if not self.redis_up:
            return "unknown (Redis is unreachable)"
        if self.next_run is None:
            return "not scheduled (start the scheduler)"
        text = weekday_text(self.next_run)
        return text if self.loops_enabled else f"{text} — will be skipped (loops disabled)"


def _probe(name: str, func: Any, *args: Any) -> Any:
    try:
        return func(*args)
    except (RedisError, OSError) as exc:
        log.warning("event=status_probe_failed probe=%s error=%s", name, type(exc).__name__)
        return None


def collect() -> SystemStatus:
    """Ask Redis once per request (cached on ``g``); never raises when Redis is down."""
    cached: SystemStatus | None = g.get("system_status")
    if cached is not None:
        return cached
    from jobs.queue import worker_count
    from jobs.schedule import next_scheduled_run, scheduler_alive

    redis = get_redis()
    up = redis_up(redis)
    status = SystemStatus(
        loops_enabled=loops_on(),
        redis_up=up,
        workers=_probe("workers", worker_count, redis) if up else None,
        scheduler_alive=_probe("scheduler", scheduler_alive, redis) if up else None,
        next_run=_probe("next_run", next_scheduled_run, redis) if up else None,
        cron=job_settings.cron(),
    )
    g.system_status = status
    return status
