"""The delivery policy end to end in one process: tune decides, admins pin and enforce,
creation holds, the digest delivers, and the API reports it all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from jobs.runs import run_in_process
from loops import delivery
from loops.database import db
from loops.digest import deliver_due
from loops.models import (
    DeliveryPolicy,
    LoopSignal,
    Notification,
    Organization,
    PolicyChange,
    Role,
    RunTrigger,
)
from loops.policy_rules import DeliveryMode, in_holdout
from loops.timeutil import utcnow
from tests.support.jobs import NOW

DAY = timedelta(days=1)


def tune(org_ids: list[int] | None = None, now: datetime = NOW) -> None:
    run_in_process(org_ids, trigger=RunTrigger.CLI, requested_by="test", now=now)


def deliveries(signals, org, feature: str, n: int, read: int, at: datetime = NOW - 2 * DAY):  # type: ignore[no-untyped-def]
    for i in range(n):
        signals.delivery(org, feature, at, at + timedelta(hours=1) if i < read else None)


def policy(org_id: int, feature: str) -> DeliveryPolicy | None:
    db.session.expire_all()
    return db.session.execute(
        select(DeliveryPolicy).where(
            DeliveryPolicy.org_id == org_id, DeliveryPolicy.feature == feature
        )
    ).scalar_one_or_none()


def test_tune_decides_digest_for_confidently_low_engagement_and_says_why(
    app, make, signals
) -> None:
    org = make.org("acme")
    deliveries(signals, org, "report.ready", 200, read=10)  # 5%
    deliveries(signals, org, "mention", 200, read=150)  # 75%
    deliveries(signals, org, "comment.reply", 10, read=2)  # 20%, far too few to tell
    tune([org.id])
    low = policy(org.id, "report.ready")
    assert low is not None and low.mode == "digest"
    assert low.reason == "ratio 0.05 [0.03, 0.09] < 0.20 over 200 deliveries"
    assert (low.interval_low, low.interval_high, low.sample_size) == (0.0274, 0.0896, 200)
    assert policy(org.id, "mention").mode == "immediate"  # type: ignore[union-attr]
    unsure = policy(org.id, "comment.reply")
    assert unsure is not None and unsure.mode == "immediate"
    assert "straddles 0.20" in unsure.reason


def test_hysteresis_keeps_the_mode_across_a_run_whose_interval_straddles(
    app, make, signals
) -> None:
    org = make.org()
    deliveries(signals, org, "report.ready", 200, read=10, at=NOW - 20 * DAY)
    tune([org.id])
    assert policy(org.id, "report.ready").mode == "digest"  # type: ignore[union-attr]
    since = policy(org.id, "report.ready").mode_since  # type: ignore[union-attr]
    # Three weeks on only a few recent deliveries are in the window, at 25%: unsure.
    later = NOW + 21 * DAY
    deliveries(signals, org, "report.ready", 8, read=2, at=later - 2 * DAY)
    tune([org.id], now=later)
    after = policy(org.id, "report.ready")
    assert after is not None and after.mode == "digest" and after.mode_since == since
    assert "stays digest" in after.reason and after.sample_size == 8
    # Confidently high engagement then switches it back.
    deliveries(signals, org, "report.ready", 300, read=240, at=later + 5 * DAY)
    tune([org.id], now=later + 7 * DAY)
    assert policy(org.id, "report.ready").mode == "immediate"  # type: ignore[union-attr]


def test_a_pinned_feature_keeps_its_mode_and_unpinning_hands_it_back(app, make, signals) -> None:
    org = make.org()
    deliveries(signals, org, "report.ready", 200, read=10)
    delivery.pin(org, "report.ready", DeliveryMode.IMMEDIATE, "admin@example.com", NOW)
    db.session.commit()
    tune([org.id])
    pinned = policy(org.id, "report.ready")
    assert pinned is not None and pinned.mode == "immediate"
    assert pinned.pinned_by == "admin@example.com" and "pinned" in pinned.reason
    delivery.unpin(org, "report.ready", "admin@example.com", NOW)
    db.session.commit()
    tune([org.id], now=NOW + timedelta(minutes=1))
    assert policy(org.id, "report.ready").mode == "digest"  # type: ignore[union-attr]
    actions = db.session.execute(select(PolicyChange.action).order_by(PolicyChange.id)).scalars()
    assert list(actions) == ["pin", "unpin"]


def test_the_digest_feature_is_never_digested(app, make, signals) -> None:
    org = make.org()
    deliveries(signals, org, "digest", 300, read=3)
    tune([org.id])
    assert policy(org.id, "digest").mode == "immediate"  # type: ignore[union-attr]
    with pytest.raises(delivery.PolicyError):
        delivery.pin(org, "digest", DeliveryMode.DIGEST, "a@example.com", NOW)


def test_loops_disabled_decides_nothing_and_holds_nothing(app, make, signals, api_as) -> None:
    org = make.org()
    deliveries(signals, org, "report.ready", 200, read=10)
    app.config["LOOPS_ENABLED"] = "false"
    tune([org.id])
    assert policy(org.id, "report.ready") is None
    # Even a pinned digest on an enforced tenant is not applied while the loop is off.
    delivery.pin(org, "report.ready", DeliveryMode.DIGEST, "a@example.com", NOW)
    delivery.set_enforced(org, True, "a@example.com", NOW)
    db.session.commit()
    user = outside_holdout(make, org)
    body = (
        admin_api(make, api_as)
        .post(
            "/api/v1/notifications",
            json={"user_id": user.id, "feature": "report.ready", "title": "Weekly report"},
        )
        .get_json()
    )
    assert body["delivery"] == {
        "mode": "digest",
        "deliver_at": None,
        "shadow": True,
        "holdout": False,
    }


# --- applying it --------------------------------------------------------------


def admin_api(make, api_as):  # type: ignore[no-untyped-def]
    return api_as(make.user(role=Role.ADMIN))


def outside_holdout(make, org: Organization, holdout: bool = False):  # type: ignore[no-untyped-def]
    while True:
        user = make.user()
        if in_holdout(org.id, user.id, 10) is holdout:
            make.member(user, org, joined_at=utcnow() - 10 * DAY)
            return user


def digest_tenant(make, enforced: bool) -> Organization:  # type: ignore[no-untyped-def]
    org = make.org()
    delivery.pin(org, "report.ready", DeliveryMode.DIGEST, "pm@example.com", utcnow())
    delivery.set_enforced(org, enforced, "pm@example.com", utcnow())
    db.session.commit()
    return org


def create(api, user, feature: str = "report.ready", title: str = "Report ready"):  # type: ignore[no-untyped-def]
    response = api.post(
        "/api/v1/notifications", json={"user_id": user.id, "feature": feature, "title": title}
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_shadow_tenant_reports_the_mode_but_delivers_at_once(app, make, api_as) -> None:
    org = digest_tenant(make, enforced=False)
    user = outside_holdout(make, org)
    body = create(admin_api(make, api_as), user)
    assert body["delivery"] == {
        "mode": "digest",
        "deliver_at": None,
        "shadow": True,
        "holdout": False,
    }
    row = db.session.get(Notification, body["id"])
    assert row is not None and row.delivered_at == row.created_at


def test_enforced_tenant_holds_until_the_next_digest_hour(app, make, api_as) -> None:
    org = digest_tenant(make, enforced=True)
    user = outside_holdout(make, org)
    body = create(admin_api(make, api_as), user)
    due = datetime.fromisoformat(body["delivery"]["deliver_at"])
    assert body["delivery"]["mode"] == "digest" and body["delivery"]["shadow"] is False
    assert (due.hour, due.minute, due.second) == (9, 0, 0) and due > utcnow()
    assert due - utcnow() <= DAY
    row = db.session.get(Notification, body["id"])
    assert row is not None and row.delivered_at is None
    # Nothing was delivered, so no DELIVER yet.
    assert db.session.execute(select(func.count()).select_from(LoopSignal)).scalar_one() == 0


def test_holdout_users_and_other_features_are_delivered_at_once(app, make, api_as) -> None:
    org = digest_tenant(make, enforced=True)
    admin = admin_api(make, api_as)
    held_out = outside_holdout(make, org, holdout=True)
    body = create(admin, held_out)
    assert body["delivery"] == {
        "mode": "digest",
        "deliver_at": None,
        "shadow": False,
        "holdout": True,
    }
    other = create(admin, outside_holdout(make, org), feature="mention")
    assert other["delivery"]["mode"] == "immediate" and other["delivery"]["deliver_at"] is None


def test_a_held_notification_is_invisible_until_delivered(app, make, api_as) -> None:
    org = digest_tenant(make, enforced=True)
    user = outside_holdout(make, org)
    held = create(admin_api(make, api_as), user)["id"]
    visible = make.notification(user, feature="mention")
    me = api_as(user)
    listing = me.get("/api/v1/notifications").get_json()
    assert [n["id"] for n in listing["notifications"]] == [visible.id]
    assert listing["unread_count"] == 1
    assert me.post(f"/api/v1/notifications/{held}/read").status_code == 404
    assert me.delete(f"/api/v1/notifications/{held}/read").status_code == 404
    assert me.post("/api/v1/notifications/read", json={"all": True}).get_json() == {"marked": 1}
    assert me.post("/api/v1/notifications/read", json={"ids": [held]}).get_json() == {"marked": 0}

    outcome = deliver_due(datetime.now(UTC) + 2 * DAY, loops_enabled=True)
    assert (outcome.digests, outcome.items) == (1, 1)
    listing = me.get("/api/v1/notifications").get_json()
    titles = {n["id"]: n["title"] for n in listing["notifications"]}
    assert held in titles and titles[max(titles)] == "1 update: Report ready"
    assert me.post(f"/api/v1/notifications/{held}/read").get_json()["first_read"] is True


# --- the digest -----------------------------------------------------------------


def test_one_digest_per_user_and_due_time_with_its_items_and_deliver_signals(
    app, make, api_as
) -> None:
    org = digest_tenant(make, enforced=True)
    admin = admin_api(make, api_as)
    alice, bob = outside_holdout(make, org), outside_holdout(make, org)
    for title in ("Q1 report", "Q2 report", "Q3 report", "Q4 report"):
        create(admin, alice, title=title)
    create(admin, bob, title="Bob's report")
    release = datetime.now(UTC) + 2 * DAY
    assert str(deliver_due(release, loops_enabled=True)) == "delivered 2 digests with 5 items"
    assert str(deliver_due(release, loops_enabled=True)) == "delivered 0 digests with 0 items"

    digests = (
        db.session.execute(select(Notification).where(Notification.feature == "digest"))
        .scalars()
        .all()
    )
    by_user = {d.user_id: d for d in digests}
    assert set(by_user) == {alice.id, bob.id}
    assert by_user[alice.id].title == "4 updates: Q1 report · Q2 report · Q3 report · +1 more"
    items = db.session.execute(select(Notification).where(Notification.feature != "digest"))
    for item in items.scalars():
        assert item.delivered_at == release
        assert item.digest_id == by_user[item.user_id].id
    delivered = db.session.execute(
        select(LoopSignal.feature, LoopSignal.created_at, LoopSignal.org_id).where(
            LoopSignal.kind == "DELIVER"
        )
    ).all()
    assert len(delivered) == 7  # 5 items + 2 digests, at the release time, for the tenant
    assert {(at, o) for _, at, o in delivered} == {(release, org.id)}
    assert sorted(f for f, _, _ in delivered).count("digest") == 2


def test_nothing_is_released_before_its_time(app, make, api_as) -> None:
    org = digest_tenant(make, enforced=True)
    create(admin_api(make, api_as), outside_holdout(make, org))
    assert deliver_due(datetime.now(UTC), loops_enabled=True).items == 0


# --- lift and the read API --------------------------------------------------------


def test_lift_compares_holdout_and_treated_since_enforcement(app, make, signals) -> None:
    org = make.org()
    org.policy_enforced, org.policy_enforced_at = True, NOW - 10 * DAY
    db.session.commit()
    held_out = [u for u in range(1, 400) if in_holdout(org.id, u, 10)][:5]
    treated = [u for u in range(1, 400) if not in_holdout(org.id, u, 10)][:5]
    at = NOW - 5 * DAY
    for u in held_out:  # 2 of 4 read each
        for i in range(4):
            signals.delivery(org, "report.ready", at, at + DAY if i < 2 else None, user_id=u)
    for u in treated:  # 3 of 4 read each
        for i in range(4):
            signals.delivery(org, "report.ready", at, at + DAY if i < 3 else None, user_id=u)
    # Before enforcement: not counted.
    signals.delivery(org, "report.ready", NOW - 20 * DAY, None, user_id=treated[0])
    [lift] = delivery.lift(org, ["report.ready"], 10, NOW)
    assert (lift.holdout.engaged, lift.holdout.n, lift.holdout.ratio) == (10, 20, 0.5)
    assert (lift.treated.engaged, lift.treated.n, lift.treated.ratio) == (15, 20, 0.75)
    assert lift.difference == 0.25
    assert lift.treated.interval == (0.5313, 0.8881)


def test_delivery_policy_api(app, make, signals, api_as) -> None:
    org = make.org("acme")
    viewer = api_as(make.user(role=Role.VIEWER))
    empty = viewer.get("/api/v1/orgs/acme/delivery-policy")
    assert empty.status_code == 200
    assert empty.get_json() == {
        "org": "acme",
        "enforced": False,
        "holdout_percent": 10,
        "digest_hour_utc": 9,
        "features": [],
    }
    deliveries(signals, org, "report.ready", 200, read=10)
    tune([org.id])
    body = viewer.get("/api/v1/orgs/acme/delivery-policy").get_json()
    [feature] = body["features"]
    assert feature["feature"] == "report.ready" and feature["mode"] == "digest"
    assert feature["pinned"] is False and feature["sample_size"] == 200
    assert feature["ratio"] == 0.05 and feature["interval"] == [0.0274, 0.0896]
    assert feature["decided_at"] == "2026-11-23T12:00:00Z"
    assert viewer.get("/api/v1/orgs/nope/delivery-policy").status_code == 404
    member = api_as(make.user())
    assert member.get("/api/v1/orgs/acme/delivery-policy").status_code == 403
    assert app.test_client().get("/api/v1/orgs/acme/delivery-policy").status_code == 401


def test_ratio_calibrations_carry_numerator_interval_and_estimate(
    app, make, signals, api_as
) -> None:
    small, big = make.org("small"), make.org("big")
    deliveries(signals, big, "mention", 400, read=300)  # 75%
    deliveries(signals, small, "mention", 4, read=0)  # 0 of 4
    tune()
    viewer = api_as(make.user(role=Role.VIEWER))
    body = viewer.get("/api/v1/orgs/small/calibrations/engagement-ratio:mention").get_json()
    assert body["value"] == 0.0 and body["engaged"] == 0 and body["sample_size"] == 4
    assert body["interval"] == [0.0, 0.4899]
    # Pulled visibly toward the pooled ratio (about 0.74), never past it.
    assert 0.2 < body["estimate"] < 0.75
    cold = viewer.get("/api/v1/orgs/small/calibrations/engagement-ratio:unknown").get_json()
    assert cold == {
        "key": "engagement-ratio:unknown",
        "value": None,
        "sample_size": 0,
        "computed_at": None,
        "engaged": 0,
        "interval": [0.0, 1.0],
        "estimate": None,
    }


def test_enforcing_records_who_and_when(app, make) -> None:
    org = make.org()
    assert delivery.set_enforced(org, True, "pm@example.com", NOW)
    assert not delivery.set_enforced(org, True, "pm@example.com", NOW)
    db.session.commit()
    fresh = db.session.get(Organization, org.id)
    assert fresh is not None and fresh.policy_enforced
    assert (fresh.policy_enforced_by, fresh.policy_enforced_at) == ("pm@example.com", NOW)
