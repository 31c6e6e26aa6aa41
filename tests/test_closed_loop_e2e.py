"""The loop closes, end to end: real HTTP (gunicorn), a real RQ worker and rq-scheduler.

Create notifications → read some → tune → the policy says digest → enforce → new
notifications are held → the scheduled digest job delivers them → reads → the next
tune, and the lift figures reflect them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from jobs.schedule import DIGEST, SCHEDULED_JOBS_KEY, periodic_jobs
from loops.database import db
from loops.models import Notification, Organization, Role, TuneRun
from loops.policy_rules import in_holdout
from loops.timeutil import utcnow
from tests.support.jobs import proc_output
from tests.support.live_server import LiveServer, start_gunicorn

pytestmark = pytest.mark.slow

TREATED, HELD_OUT = 16, 4


@pytest.fixture
def live(proc_env, tmp_path: Path) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    server = start_gunicorn(proc_env(), tmp_path / "gunicorn.log", workers=2, threads=4)
    yield server
    server.stop()


@pytest.fixture
def http(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client


def members(make, org: Organization) -> tuple[list[Any], list[Any]]:  # type: ignore[no-untyped-def]
    """Members of ``org``: TREATED outside its holdout, HELD_OUT inside it."""
    treated: list[Any] = []
    held_out: list[Any] = []
    while len(treated) < TREATED or len(held_out) < HELD_OUT:
        user = make.user()
        group = held_out if in_holdout(org.id, user.id, 10) else treated
        if len(group) < (HELD_OUT if group is held_out else TREATED):
            make.member(user, org)
            group.append(user)
    return treated, held_out


def finish(proc) -> str:  # type: ignore[no-untyped-def]
    assert proc.wait(timeout=180) == 0, proc_output(proc)
    return proc_output(proc)


def tune_through_the_worker(spawn) -> None:  # type: ignore[no-untyped-def]
    finish(spawn("tune", "run"))
    finish(spawn("rq", "worker", "--burst"))
    db.session.rollback()
    states = db.session.execute(select(TuneRun.state).order_by(TuneRun.id)).scalars().all()
    assert states and states[-1] == "succeeded", states


def test_the_loop_closes(app, make, spawn, http, redis_conn, runner) -> None:  # type: ignore[no-untyped-def]
    org = make.org("acme")
    treated, held_out = members(make, org)
    everyone = treated + held_out
    admin = {"Authorization": f"Bearer {make.token(make.user(role=Role.ADMIN))}"}
    viewer = {"Authorization": f"Bearer {make.token(make.user(role=Role.VIEWER))}"}
    auth = {u.id: {"Authorization": f"Bearer {make.token(u)}"} for u in everyone}

    def create(user, feature: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        r = http.post(
            "/api/v1/notifications",
            headers=admin,
            json={"user_id": user.id, "feature": feature, "title": f"{feature} for you"},
        )
        assert r.status_code == 201, r.text
        return r.json()

    def read(user, nid: int) -> None:  # type: ignore[no-untyped-def]
        r = http.post(f"/api/v1/notifications/{nid}/read", headers=auth[user.id])
        assert r.status_code == 200, r.text

    # 1. Shadow: everything is delivered at once; people read mentions, rarely reports.
    for i, user in enumerate(everyone):
        for j in range(6):
            report = create(user, "report.ready")
            assert report["delivery"]["deliver_at"] is None
            if (i * 6 + j) % 15 == 0:
                read(user, report["id"])
        for _ in range(2):
            read(user, create(user, "mention")["id"])

    # 2. The tune (enqueued, run by a real worker) decides: reports go to the digest.
    tune_through_the_worker(spawn)
    policy = http.get("/api/v1/orgs/acme/delivery-policy", headers=viewer).json()
    modes = {f["feature"]: f["mode"] for f in policy["features"]}
    assert modes == {"report.ready": "digest", "mention": "immediate"}, policy
    assert policy["enforced"] is False

    # 3. Enforce; new reports are held for treated users, delivered at once in the holdout.
    assert runner.invoke(args=["policy", "enforce", "acme", "on"]).exit_code == 0
    held_ids = []
    for user in treated:
        for _ in range(2):
            body = create(user, "report.ready")
            assert body["delivery"]["deliver_at"] is not None, body
            held_ids.append(body["id"])
    holdout_ids = []
    for user in held_out:
        for _ in range(2):
            body = create(user, "report.ready")
            assert body["delivery"] == {
                "mode": "digest",
                "deliver_at": None,
                "shadow": False,
                "holdout": True,
            }
            holdout_ids.append(body["id"])
    listing = http.get("/api/v1/notifications", headers=auth[treated[0].id]).json()
    assert not set(held_ids) & {n["id"] for n in listing["notifications"]}

    # 4. Time passes: the held reports fall due (moved into the past rather than waiting
    #    for DIGEST_HOUR_UTC), and the hourly schedule fires the digest job.
    db.session.execute(
        update(Notification)
        .where(Notification.id.in_(held_ids))
        .values(deliver_at=utcnow().replace(microsecond=0))
    )
    db.session.commit()
    finish(spawn("rq", "scheduler", "--burst"))  # registers the schedules
    digest_job = periodic_jobs(app.config["TUNE_ENGAGEMENT_CRON"])[1]
    assert digest_job.name == DIGEST
    redis_conn.zadd(SCHEDULED_JOBS_KEY, {digest_job.job_id(app.config["RQ_QUEUE"]): 1})
    finish(spawn("rq", "scheduler", "--burst"))  # enqueues the due digest job
    finish(spawn("rq", "worker", "--burst"))  # delivers it
    db.session.rollback()
    released = db.session.execute(
        select(Notification).where(Notification.id.in_(held_ids))
    ).scalars()
    digest_of = {n.id: n.digest_id for n in released}
    assert all(digest_of.values()) and len(set(digest_of.values())) == TREATED

    # 5. Treated users read half of their digested reports; the holdout reads none.
    for user in treated:
        listing = http.get("/api/v1/notifications", headers=auth[user.id]).json()
        mine = [n for n in listing["notifications"] if n["id"] in digest_of]
        titles = [n["title"] for n in listing["notifications"] if n["feature"] == "digest"]
        assert len(mine) == 2 and titles == [
            "2 updates: report.ready for you · report.ready for you"
        ]
        read(user, mine[0]["id"])

    # 6. The next tune runs; lift shows treated 50% vs holdout 0% since enforcement.
    tune_through_the_worker(spawn)
    shown = runner.invoke(args=["policy", "show", "acme"])
    assert shown.exit_code == 0, shown.output
    lift_line = next(line for line in shown.output.splitlines() if "lift report.ready" in line)
    assert f"treated 0.50 {[0.3363, 0.6637]} n={2 * TREATED}" in lift_line, lift_line
    assert f"holdout 0.00 {[0.0, 0.3244]} n={2 * HELD_OUT}" in lift_line, lift_line
    ratio = http.get(
        "/api/v1/orgs/acme/calibrations/engagement-ratio:report.ready", headers=viewer
    ).json()
    # The second tune counted the digested reports (delivered in the window) too.
    assert ratio["sample_size"] == 6 * len(everyone) + 2 * len(everyone)
