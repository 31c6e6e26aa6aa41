"""/healthz: database required, Redis reported; the read path does not need Redis."""

from __future__ import annotations

import socket

from dashboard import create_app
from loops.database import db
from loops.models import LoopSignal


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_healthz_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"database": "ok", "redis": "ok"}


def test_redis_down_healthz_and_mark_read_still_work(app_config, make):
    config = dict(app_config, REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    app = create_app(config)
    with app.app_context():
        user = make.user()
        make.member(user, make.org())
        n = make.notification(user)
        token = make.token(user)
        client = app.test_client()
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.get_json() == {"database": "ok", "redis": "down"}
        read = client.post(
            f"/api/v1/notifications/{n.id}/read", headers={"Authorization": f"Bearer {token}"}
        )
        assert read.status_code == 200
        assert read.get_json()["first_read"] is True
        assert db.session.query(LoopSignal).count() == 1
        db.session.remove()
        db.engine.dispose()


def test_database_down_is_503_json(app_config):
    config = dict(
        app_config,
        SQLALCHEMY_DATABASE_URI=f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/none",
        DB_CONNECT_TIMEOUT_S=1,
    )
    app = create_app(config)
    with app.app_context():
        response = app.test_client().get("/healthz")
        assert response.status_code == 503
        assert response.get_json()["database"] == "down"
        api = app.test_client().get("/api/v1/notifications", headers={"Authorization": "Bearer x"})
        assert api.status_code == 503
        assert api.get_json()["error"]["code"] == "unavailable"
        db.engine.dispose()
