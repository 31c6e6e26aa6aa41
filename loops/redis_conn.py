"""The app's Redis connection, kept in app.extensions and created lazily (no I/O at import)."""

from __future__ import annotations

from flask import Flask, current_app
from redis import Redis
from redis.exceptions import RedisError

EXTENSION_KEY = "redis"


def make_redis(url: str) -> Redis:
    # Short timeouts: a dead Redis must turn into a banner, not a hung page.
    return Redis.from_url(
        url, socket_connect_timeout=1.0, socket_timeout=5.0, health_check_interval=30
    )


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION_KEY] = make_redis(app.config["REDIS_URL"])


def get_redis() -> Redis:
    conn: Redis = current_app.extensions[EXTENSION_KEY]
    return conn


def redis_up(conn: Redis | None = None) -> bool:
    try:
        return bool((conn or get_redis()).ping())
    except (RedisError, OSError):
        return False
