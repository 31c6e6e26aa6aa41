"""The RQ queue the tune jobs go to, and how many workers listen on it."""

from __future__ import annotations

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker

from jobs import settings
from loops.redis_conn import get_redis


def get_queue(connection: Redis | None = None) -> Queue:
    return Queue(settings.queue_name(), connection=connection or get_redis())


def worker_count(redis: Redis) -> int:
    """Workers registered on the tune queue; 0 when Redis is unreachable.

    A worker's registration lapses ~7 minutes after it dies (rq's worker TTL), so a
    killed worker is still counted for that long.
    """
    try:
        return int(Worker.count(connection=redis, queue=get_queue(redis)))
    except (RedisError, OSError):
        return 0
