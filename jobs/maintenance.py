"""The daily maintenance job: prune signals past SIGNAL_RETENTION_DAYS, create partitions ahead."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from flask import current_app
from rq import get_current_job

from loops import observe
from loops.retention import Progress, PruneOutcome, prune
from loops.timeutil import utcnow

log = logging.getLogger(__name__)


def retention_days() -> int:
    """SIGNAL_RETENTION_DAYS, read and validated at start (0: keep signals forever)."""
    return int(current_app.config["SIGNAL_RETENTION_DAYS"])


def prune_signals(
    now: datetime | None = None, *, dry_run: bool = False, progress: Progress | None = None
) -> PruneOutcome:
    """Prune at ``now`` (default: the current time) with the app's retention; logged."""
    started = time.perf_counter()
    job = get_current_job()
    try:
        outcome = prune(now or utcnow(), retention_days(), dry_run=dry_run, progress=progress)
    except Exception:
        log.exception("event=maintenance state=failed job=%s", job.id if job else None)
        if not dry_run:
            observe.run_finished("maintenance", "failed", time.perf_counter() - started)
        raise
    if not dry_run:
        observe.run_finished("maintenance", "succeeded", time.perf_counter() - started)
    log.info(
        "event=maintenance state=succeeded dry_run=%s removed=%d partitions_dropped=%d "
        "partitions_created=%d ms=%d job=%s",
        dry_run,
        outcome.removed,
        len(outcome.dropped),
        len(outcome.created),
        int((time.perf_counter() - started) * 1000),
        job.id if job else None,
    )
    return outcome


def run_maintenance() -> dict[str, Any]:
    """RQ entry point (scheduled daily); runs inside the worker's app context."""
    outcome = prune_signals()
    return {
        "removed": outcome.removed,
        "cutoff": outcome.cutoff.isoformat() if outcome.cutoff else None,
        "partitions_dropped": list(outcome.dropped),
        "partitions_created": list(outcome.created),
    }
