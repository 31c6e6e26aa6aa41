"""The digest job: hourly, deliver the held notifications that have fallen due."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from flask import current_app
from rq import get_current_job

from loops import observe
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
        outcome = deliver_due(now or utcnow(), loops_on(), progress, _test_pause())
    except Exception:
        log.exception("event=digest_run state=failed job=%s", job.id if job else None)
        observe.run_finished("digest", "failed", time.perf_counter() - started)
        raise
    observe.run_finished("digest", "succeeded", time.perf_counter() - started)
    log.info(
        "event=digest_run state=succeeded digests=%d items=%d ms=%d job=%s",
        outcome.digests,
        outcome.items,
        int((time.perf_counter() - started) * 1000),
        job.id if job else None,
    )
    return outcome


def _test_pause() -> Callable[[], None] | None:
    """TEST-ONLY (DIGEST_TEST_DELAY_S): stall each digest with its items claimed, uncommitted,
    so a test can kill the process mid-digest or race two of them."""
    delay = float(current_app.config.get("DIGEST_TEST_DELAY_S") or 0.0)
    if delay <= 0:
        return None

    def pause() -> None:
        log.warning("event=digest_test_pause seconds=%s", delay)
        time.sleep(delay)

    return pause


def deliver_due_digests() -> dict[str, int]:
    """RQ entry point (scheduled hourly); runs inside the worker's app context."""
    outcome = run_digests()
    return {"digests": outcome.digests, "items": outcome.items}
