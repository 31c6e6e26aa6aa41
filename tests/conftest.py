"""Shared fixtures: a real database (PostgreSQL or SQLite) and a real Redis db of our own.

Backend: ``DATABASE_URL`` (a PostgreSQL server URL; the suite creates and drops its
own database on it) or SQLite in a temporary folder when unset.
Redis: ``TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/13``); the suite owns
that db index and flushes it between tests — never point it at a shared one. Under
pytest-xdist it lists one URL a worker (tests/support/procs.py).
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from redis import Redis

from dashboard import create_app
from loops.database import db
from loops.models import (
    Notification,
    Organization,
    OrgMembership,
    Role,
    User,
)
from loops.timeutil import utcnow
from loops.tokens import create_token
from tests.support.dashboard import TEST_PASSWORD
from tests.support.procs import WORKER_REDIS_URLS

TEST_REDIS_URL = WORKER_REDIS_URLS["TEST_REDIS_URL"]
# A developer's .env (written by `make run`) must not leak into the tests: neither the
# apps built here nor the `flask`/gunicorn processes they start read it (Flask's switch).
os.environ["FLASK_SKIP_DOTENV"] = "1"

pytest_plugins = ["tests.support.jobs"]


def _server_url() -> str | None:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres", "postgresql")) else None


def pytest_configure(config: pytest.Config) -> None:
    """Without xdist workers, a list of Redis URLs means its first (tests/support/procs.py)."""
    if os.environ.get("PYTEST_XDIST_WORKER") or getattr(config.option, "numprocesses", None):
        return
    for variable, url in WORKER_REDIS_URLS.items():
        if variable in os.environ:
            os.environ[variable] = url


# Modules whose assertions cannot depend on the database backend: no database at all
# (pure functions, settings, log lines), or the backend is a bystander to what is checked
# (what Chromium renders, gunicorn's processes and proxy headers, metrics, secrets in logs,
# a dead Redis). They get the marker any_backend, and CI's SQLite pass leaves them out
# (-m "not any_backend"): they run on PostgreSQL only. Everything else runs on both.
# A new module joins by marking itself (pytestmark = pytest.mark.any_backend) or here.
ANY_BACKEND = (
    "browser/",
    "reliability/test_xss_browser.py",
    "reliability/test_secrets.py",
    "reliability/test_redis_down.py",
    "test_bench_smoke.py",  # the benchmarks need PostgreSQL: it skips itself on SQLite
    "test_charts.py",
    "test_config.py",
    "test_logs.py",
    "test_metrics.py",
    "test_policy_rules.py",
    "test_proxy.py",
    "test_significance.py",
    "test_stats.py",
    "test_trend_charts.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked postgres_only run in the PostgreSQL pass of the suite only; the modules
    of ANY_BACKEND are marked any_backend."""
    tests = Path(__file__).parent
    for item in items:
        if item.path.relative_to(tests).as_posix().startswith(ANY_BACKEND):
            item.add_marker(pytest.mark.any_backend)
    if _server_url() is not None:
        return
    skip = pytest.mark.skip(reason="PostgreSQL pass only (set DATABASE_URL)")
    for item in items:
        if item.get_closest_marker("postgres_only"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, migrated database for this test session."""
    from dashboard.config import normalise_database_url

    server = _server_url()
    if server is None:
        path = Path(tmp_path_factory.mktemp("db")) / "test.db"
        url = f"sqlite:///{path}"
        _migrate(url)
        yield url
        return
    base = sa.make_url(normalise_database_url(server))
    name = f"el_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        # A throwaway database need not wait for the disk at every commit (~3 ms each,
        # thousands of commits); a crash loses nothing a test could still need.
        conn.execute(sa.text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        _migrate(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _migrate(url: str) -> None:
    from flask_migrate import upgrade

    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": TEST_REDIS_URL})
    with app.app_context():
        upgrade()
        db.engine.dispose()


def is_postgres(app: Flask) -> bool:
    return str(app.config["SQLALCHEMY_DATABASE_URI"]).startswith("postgresql")


def _truncate_all(app: Flask) -> None:
    """Empty every table, ids restarting at 1 (what TRUNCATE ... RESTART IDENTITY does)."""
    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    with db.engine.begin() as conn:
        if is_postgres(app):
            _empty_postgres(conn, tables)
        else:
            for name in tables:
                conn.execute(sa.text(f"DELETE FROM {name}"))
            if _has_sqlite_sequence(conn):
                conn.execute(sa.text("DELETE FROM sqlite_sequence"))


MANY_ROWS = 5000  # from here on TRUNCATE (a new file) is cheaper than DELETE (every row)


def _empty_postgres(conn: sa.Connection, tables: list[str]) -> None:
    """DELETE from the tables that have a few rows, TRUNCATE those with many, and restart
    the sequences that moved.

    TRUNCATE gives every table (and partition, and index) a new file: ~0.3 s per test, a
    few minutes over the suite, while most tests leave rows in a handful of small tables.
    ``tables`` is in dependency order (children first), so no foreign key is in the way.
    """
    probe = " UNION ALL ".join(
        f"SELECT {i}, (SELECT count(*) FROM (SELECT 1 FROM {name} LIMIT {MANY_ROWS}) AS r)"
        for i, name in enumerate(tables)
    )
    for i, rows in sorted(tuple(row) for row in conn.execute(sa.text(probe))):
        if rows >= MANY_ROWS:
            conn.execute(sa.text(f"TRUNCATE {tables[i]} CASCADE"))
        elif rows:
            conn.execute(sa.text(f"DELETE FROM {tables[i]}"))
    moved = conn.execute(
        sa.text(
            "SELECT format('%I.%I', s.schemaname, s.sequencename) FROM pg_sequences s"
            " JOIN pg_depend d ON d.objid = format('%I.%I', s.schemaname, s.sequencename)"
            "::regclass AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')"
            " JOIN pg_class t ON t.oid = d.refobjid"
            " WHERE s.last_value IS NOT NULL AND t.relname = ANY(:tables)"
        ),
        {"tables": tables},
    ).scalars()
    for sequence in moved:
        conn.execute(sa.text(f"ALTER SEQUENCE {sequence} RESTART"))


def _has_sqlite_sequence(conn: sa.Connection) -> bool:
    return bool(
        conn.execute(
            sa.text("SELECT 1 FROM sqlite_master WHERE type='table' AND name='sqlite_sequence'")
        ).first()
    )


@pytest.fixture
def test_redis_url() -> str:
    """The Redis db this suite owns; a folder's conftest may point its tests elsewhere."""
    return TEST_REDIS_URL


@pytest.fixture
def redis_conn(test_redis_url: str) -> Iterator[Redis]:
    conn = Redis.from_url(test_redis_url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture
def app_config(database_url: str, test_redis_url: str) -> dict[str, Any]:
    """Per-test overrides: override this fixture, or mutate app.config in the test."""
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": test_redis_url,
        "LOOPS_ENABLED": "true",
        "RATELIMIT_ENABLED": False,
    }


@pytest.fixture
def app(app_config: dict[str, Any], redis_conn: Redis) -> Iterator[Flask]:
    app = create_app(app_config)
    with app.app_context():
        _truncate_all(app)
        yield app
        db.session.remove()
        db.engine.dispose()
        app.extensions["redis"].close()


@pytest.fixture
def empty_database(app: Flask) -> Callable[[], None]:
    """Empties every table again, ids restarting at 1: for a test that replays a scenario."""

    def empty() -> None:
        db.session.remove()  # its open transaction would hold TRUNCATE back
        _truncate_all(app)

    return empty


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


# --- factories -------------------------------------------------------------


class Factory:
    """Creates rows with sensible defaults; every call commits."""

    def user(
        self,
        email: str | None = None,
        role: Role | str = Role.MEMBER,
        password: str | None = TEST_PASSWORD,
    ) -> User:
        from werkzeug.security import generate_password_hash

        user = User(
            email=email or f"user-{uuid.uuid4().hex[:10]}@example.com",
            role=str(role),
            password_hash=generate_password_hash(password) if password else None,
        )
        db.session.add(user)
        db.session.commit()
        return user

    def org(self, slug: str | None = None, name: str | None = None) -> Organization:
        slug = slug or f"org-{uuid.uuid4().hex[:8]}"
        org = Organization(slug=slug, name=name or slug.replace("-", " ").title())
        db.session.add(org)
        db.session.commit()
        return org

    def member(
        self, user: User, org: Organization, joined_at: datetime | None = None
    ) -> OrgMembership:
        membership = OrgMembership(user_id=user.id, org_id=org.id, joined_at=joined_at or utcnow())
        db.session.add(membership)
        db.session.commit()
        return membership

    def token(self, user: User) -> str:
        _, secret = create_token(user, name=f"t-{secrets.token_hex(3)}")
        db.session.commit()
        return secret

    def notification(
        self,
        user: User,
        feature: str = "mention",
        title: str = "Hello",
        created_at: datetime | None = None,
        read_at: datetime | None = None,
    ) -> Notification:
        created_at = created_at or utcnow()
        n = Notification(
            user_id=user.id,
            feature=feature,
            title=title,
            created_at=created_at,
            delivered_at=created_at,  # delivered at once, as without a digest policy
            read_at=read_at,
            first_read_at=read_at,
        )
        db.session.add(n)
        db.session.commit()
        return n


@pytest.fixture
def make(app: Flask) -> Factory:
    return Factory()


class Api:
    """A client app calling /api/v1 with a bearer token."""

    def __init__(self, client: FlaskClient, token: str | None):
        self.client = client
        self.token = token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self._headers(), **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post(path, headers=self._headers(), **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.client.delete(path, headers=self._headers(), **kw)


@pytest.fixture
def api_as(client: FlaskClient, make: Factory) -> Callable[[User], Api]:
    def build(user: User) -> Api:
        return Api(client, make.token(user))

    return build
