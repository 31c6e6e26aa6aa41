"""Migration 0007 on PostgreSQL: an existing loop_signals becomes partitioned, nothing lost."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from dashboard import create_app
from dashboard.config import normalise_database_url
from loops.database import db

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow]

ROWS = 3000


@pytest.fixture
def scratch_url() -> Iterator[str]:
    """A database of this test's own, migrated by the test itself."""
    server = sa.make_url(normalise_database_url(os.environ["DATABASE_URL"]))
    name = f"el_test_mig_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _rows(conn: sa.Connection) -> list[tuple]:
    return [
        tuple(r)
        for r in conn.execute(
            sa.text(
                "SELECT id, org_id, kind, feature, user_id, subject_id, created_at "
                "FROM loop_signals ORDER BY id"
            )
        )
    ]


def test_the_conversion_keeps_rows_ids_and_exactly_once_and_reverses(scratch_url) -> None:
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": scratch_url})
    now = datetime.now(UTC)
    with app.app_context():
        upgrade(revision="0006")
        with db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO organizations (slug, name, created_at) VALUES ('a', 'A', now())"
                )
            )
            # Fourteen months of ENGAGE/DELIVER pairs, and a few kinds without a subject.
            conn.execute(
                sa.text(
                    "INSERT INTO loop_signals (org_id, kind, feature, user_id, subject_id, "
                    "created_at) SELECT 1, CASE WHEN g % 2 = 0 THEN 'ENGAGE' ELSE 'DELIVER' END, "
                    "'f', 1, g / 2, :now - make_interval(hours => g * 3) "
                    "FROM generate_series(1, :n) g"
                ),
                {"now": now, "n": ROWS},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO loop_signals (org_id, kind, feature, user_id, subject_id, "
                    "created_at) VALUES (1, 'DELIVER', 'f', 1, NULL, :now), "
                    "(1, 'DELIVER', 'f', 1, NULL, :now)"
                ),
                {"now": now},
            )
            before = _rows(conn)
        upgrade()
        with db.engine.begin() as conn:
            assert _rows(conn) == before
            kind = conn.execute(
                sa.text("SELECT relkind FROM pg_class WHERE relname = 'loop_signals'")
            ).scalar()
            assert kind == "p"
            parts = set(
                conn.execute(
                    sa.text(
                        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                        "WHERE i.inhparent = 'loop_signals'::regclass"
                    )
                ).scalars()
            )
            oldest = min(r[6] for r in before)
            # Each month from the oldest row's to three months after the current one.
            first = oldest.year * 12 + oldest.month - 1
            last = now.year * 12 + now.month - 1 + 3
            expected = {"loop_signals_default"} | {
                f"loop_signals_p{m // 12:04d}_{m % 12 + 1:02d}" for m in range(first, last + 1)
            }
            assert parts == expected
            # Every once-kind row holds its claim; the id sequence goes on from where it was.
            claims = conn.execute(sa.text("SELECT count(*) FROM loop_signal_once")).scalar()
            assert claims == ROWS
            new_id = conn.execute(
                sa.text(
                    "INSERT INTO loop_signals (org_id, kind, feature, user_id, subject_id, "
                    "created_at) VALUES (1, 'ENGAGE', 'f', 1, 999999, now()) RETURNING id"
                )
            ).scalar()
            assert new_id > max(r[0] for r in before)
            # A second ENGAGE for a converted row's subject, in another month, is dropped.
            dropped = conn.execute(
                sa.text(
                    "INSERT INTO loop_signals (org_id, kind, feature, user_id, subject_id, "
                    "created_at) VALUES (1, 'ENGAGE', 'f', 1, 2, now()) ON CONFLICT DO NOTHING"
                )
            )
            assert dropped.rowcount == 0
            after_upgrade = _rows(conn)

        downgrade(revision="0006")
        with db.engine.begin() as conn:
            assert _rows(conn) == after_upgrade
            indexes = set(
                conn.execute(
                    sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'loop_signals'")
                ).scalars()
            )
            assert "uq_loop_signals_once_per_subject" in indexes
        upgrade()
        with db.engine.begin() as conn:
            assert _rows(conn) == after_upgrade
        db.engine.dispose()
