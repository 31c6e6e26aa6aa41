"""The digest job: hourly, deliver the held notifications that have fallen due."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from rq import get_current_job

from loops.digest import DigestOutcome, deliver_due
from loops.signals import loops_on
from loops.timeutil import utcnow

log = logging.getLogger(__name__)


def run_digests(
    now: datetime | None = None, progress: Callable[[int, int], None] | None = None
) -> DigestOutcome:
    """Deliver what is due at ``now`` (default: the current time); logged with its job id."""
    started = time.perf_counter()
    job = get_current_job()
    try:
        outcome = deliver_due(now or utcnow(), loops_on(), progress)
    except Exception:
        log.exception("event=digest_run state=failed job=%s", job.id if job else None)
        raise
    log.info(
        "event=digest_run state=succeeded digests=%d items=%d ms=%d job=%s",
        outcome.digests,
        outcome.items,
        int((time.perf_counter() - started) * 1000),
        job.id if job else None,
    )
    return outcome


def deliver_due_digests() -> dict[str, int]:
    """RQ entry point (scheduled hourly); runs inside the worker's app context."""
    outcome = run_digests()
    return {"digests": outcome.digests, "items": outcome.items}
