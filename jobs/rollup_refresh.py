"""Keeps the dashboard's daily counts current between tune runs: a recount every few minutes."""

from __future__ import annotations

import logging
from datetime import datetime

from redis import Redis
from redis.exceptions import RedisError

from loops import rollup

log = logging.getLogger(__name__)

DUE_KEY = "engagement-loops:rollup:due"


def refresh_if_due(redis: Redis, now: datetime, interval_s: int) -> bool:
    """Recount recent days for every tenant unless another process did in the last interval.

    Called from every worker's sweep loop; a Redis key set with NX and a TTL makes it
    happen once per interval across all workers. Returns True when this call refreshed.
    """
    try:
        if not redis.set(DUE_KEY, now.isoformat(), nx=True, ex=interval_s):
            return False
    except (RedisError, OSError):
        return False
    try:
        rollup.refresh_recent(now)
    except Exception:
        # Let another worker try at its next sweep rather than in interval_s.
        redis.delete(DUE_KEY)
        raise
    return True
