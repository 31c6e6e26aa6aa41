"""Fixtures for fault tests: our own redis-server, PostgreSQL cluster and gunicorn processes.

Every process here is started by the test, on a free port of 127.0.0.1, in its
own process group, and killed by a finalizer. The machine's shared PostgreSQL
and Redis are never stopped; on the shared Redis this suite owns db 9 only.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from dashboard import create_app
from loops.database import db
from tests.support.live_server import LiveServer
from tests.support.procs import (
    PG_BIN,
    RELIABILITY_REDIS_URL,
    PgCluster,
    RedisServer,
    as_postgres,
    free_port,
    kill_group,
    migrate,
)

# What every server of these tests runs with unless the test says otherwise: never the
# shared Redis's db 0 (login throttling writes there), never a developer's debug mode.
SERVER_ENV = {
    "SECRET_KEY": "reliability-secret",
    "LOOPS_ENABLED": "true",
    "LOG_LEVEL": "INFO",
    "REDIS_URL": RELIABILITY_REDIS_URL,
    "FLASK_DEBUG": "0",
}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    server.start()
    yield server
    if server.process is not None:
        kill_group(server.process, signal.SIGKILL)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        pytest.skip("needs PostgreSQL 15 server binaries and runuser")
    directory = Path(tempfile.mkdtemp(prefix="el-pg-"))
    shutil.chown(directory, "postgres", "postgres")
    cluster = PgCluster(directory, free_port())
    as_postgres(
        str(PG_BIN / "initdb"),
        "-D",
        str(cluster.data),
        "-U",
        "postgres",
        "-A",
        "trust",
        "--no-sync",
        "-E",
        "UTF8",
    )
    # fsync off only spares the disk: a commit's WAL still reaches the kernel before
    # the client hears "200", so an acknowledged read survives a server crash
    # (pg_ctl stop -m immediate); it would not survive losing the machine.
    with (cluster.data / "postgresql.conf").open("a") as conf:
        conf.write("\nmax_connections = 300\nfsync = off\nshared_buffers = 128MB\n")
    cluster.start()
    try:
        as_postgres(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(cluster.port), "loops")
        migrate(cluster.url)
        yield cluster
    finally:
        if cluster.running():
            cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``gunicorn(env={...})`` starts a server; every one is stopped at teardown.

    A server counts as up once it answers at all: a test may start it with a dependency
    down on purpose."""
    started: list[LiveServer] = []

    def start(env: Mapping[str, str], **kwargs: Any) -> LiveServer:
        log = tmp_path / f"gunicorn-{len(started)}.log"
        server = LiveServer({**SERVER_ENV, **env}, log, **kwargs)
        started.append(server)
        server.start(healthy=False)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def test_redis_url() -> str:
    return RELIABILITY_REDIS_URL


@pytest.fixture
def cluster_app(pg_cluster: PgCluster) -> Iterator[Flask]:
    """An app on our own cluster, its tables emptied, its context pushed."""
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "t",
            "SQLALCHEMY_DATABASE_URI": pg_cluster.url,
            "REDIS_URL": RELIABILITY_REDIS_URL,
            "LOOPS_ENABLED": "true",
        }
    )
    with app.app_context():
        tables = ", ".join(t.name for t in db.metadata.sorted_tables)
        with db.engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        yield app
        db.session.remove()
        db.engine.dispose()
