"""The notifications API: first-read guard, attribution, bulk reads, listing, creation, errors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from loops.database import db
from loops.models import LoopSignal, Notification, Role, SignalKind
from loops.timeutil import utcnow


def engage_rows(subject_id: int | None = None) -> list[LoopSignal]:
    query = select(LoopSignal).where(LoopSignal.kind == SignalKind.ENGAGE.value)
    if subject_id is not None:
        query = query.where(LoopSignal.subject_id == subject_id)
    return list(db.session.execute(query).scalars())


@pytest.fixture
def reader(make):
    user = make.user("reader@example.com")
    org = make.org("acme")
    make.member(user, org)
    return user, org


def test_first_read_marks_read_and_emits_one_engage(reader, make, api_as):
    user, org = reader
    n = make.notification(user, feature="comment.reply", title="Ana replied")
    response = api_as(user).post(f"/api/v1/notifications/{n.id}/read")
    assert response.status_code == 200
    body = response.get_json()
    assert body["first_read"] is True
    assert (
        body["id"] == n.id and body["feature"] == "comment.reply" and body["title"] == "Ana replied"
    )
    assert body["read_at"] is not None and body["read_at"].endswith("Z")
    [signal] = engage_rows(n.id)
    assert signal.org_id == org.id
    assert signal.feature == "comment.reply"
    assert signal.user_id == user.id
    db.session.expire_all()
    stored = db.session.get(Notification, n.id)
    assert stored is not None and stored.read_at == signal.created_at


def test_repeat_read_keeps_read_at_and_emits_nothing(reader, make, api_as):
    user, _ = reader
    n = make.notification(user)
    api = api_as(user)
    first = api.post(f"/api/v1/notifications/{n.id}/read").get_json()
    second = api.post(f"/api/v1/notifications/{n.id}/read")
    assert second.status_code == 200
    assert second.get_json()["first_read"] is False
    assert second.get_json()["read_at"] == first["read_at"]
    assert len(engage_rows(n.id)) == 1


def test_signal_goes_to_the_oldest_membership(make, api_as):
    user = make.user()
    newer, older = make.org("newer"), make.org("older")
    now = utcnow()
    make.member(user, newer, joined_at=now - timedelta(days=1))
    make.member(user, older, joined_at=now - timedelta(days=300))
    n = make.notification(user)
    api_as(user).post(f"/api/v1/notifications/{n.id}/read")
    [signal] = engage_rows(n.id)
    assert signal.org_id == older.id


def test_membership_tie_goes_to_the_lowest_org_id(make, api_as):
    user = make.user()
    first, second = make.org("first"), make.org("second")
    joined = utcnow() - timedelta(days=5)
    make.member(user, second, joined_at=joined)
    make.member(user, first, joined_at=joined)
    n = make.notification(user)
    api_as(user).post(f"/api/v1/notifications/{n.id}/read")
    [signal] = engage_rows(n.id)
    assert signal.org_id == min(first.id, second.id)


def test_user_without_membership_reads_without_signal(make, api_as):
    user = make.user()
    n = make.notification(user)
    response = api_as(user).post(f"/api/v1/notifications/{n.id}/read")
    assert response.status_code == 200
    assert response.get_json()["first_read"] is True
    assert engage_rows() == []


@pytest.mark.parametrize("setting", ["false", "TRUE", "1", "yes", ""])
def test_loops_disabled_reads_without_signal(app, reader, make, api_as, setting):
    app.config["LOOPS_ENABLED"] = setting
    user, _ = reader
    n = make.notification(user)
    response = api_as(user).post(f"/api/v1/notifications/{n.id}/read")
    assert response.status_code == 200
    assert response.get_json()["read_at"] is not None
    assert engage_rows() == []


@pytest.mark.parametrize(
    "raw", ["999999", "abc", "1.5", "-1", "0", "99999999999999999999999", "9223372036854775808"]
)
def test_unknown_or_malformed_ids_are_404(reader, make, api_as, raw):
    user, _ = reader
    response = api_as(user).post(f"/api/v1/notifications/{raw}/read")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_another_users_notification_is_404_and_stays_unread(reader, make, api_as):
    user, _ = reader
    other = make.user()
    theirs = make.notification(other)
    response = api_as(user).post(f"/api/v1/notifications/{theirs.id}/read")
    assert response.status_code == 404
    assert response.get_json() == api_as(user).post("/api/v1/notifications/424242/read").get_json()
    db.session.expire_all()
    assert db.session.get(Notification, theirs.id).read_at is None
    assert engage_rows() == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
    ],
)
def test_missing_or_bad_token_is_401_with_challenge(client, reader, make, headers):
    user, _ = reader
    n = make.notification(user)
    response = client.post(f"/api/v1/notifications/{n.id}/read", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_revoked_token_is_refused_at_once(client, reader, make):
    from loops import tokens

    user, _ = reader
    row, secret = tokens.create_token(user)
    db.session.commit()
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/notifications", headers=headers).status_code == 200
    assert tokens.revoke(row.id)
    assert client.get("/api/v1/notifications", headers=headers).status_code == 401


def test_wrong_method_is_405_json(reader, api_as, make):
    user, _ = reader
    n = make.notification(user)
    response = api_as(user).get(f"/api/v1/notifications/{n.id}/read")
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_unknown_api_path_is_json_404(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.is_json


def test_mark_unread_then_read_again_is_not_a_first_read(reader, make, api_as):
    user, _ = reader
    n = make.notification(user)
    api = api_as(user)
    api.post(f"/api/v1/notifications/{n.id}/read")
    unread = api.delete(f"/api/v1/notifications/{n.id}/read")
    assert unread.status_code == 200
    assert unread.get_json()["read_at"] is None
    assert api.get("/api/v1/notifications?unread=true").get_json()["unread_count"] == 1
    again = api.post(f"/api/v1/notifications/{n.id}/read")
    assert again.status_code == 200
    assert again.get_json()["first_read"] is False
    assert again.get_json()["read_at"] is not None
    assert len(engage_rows(n.id)) == 1


def test_mark_unread_of_someone_elses_is_404(reader, make, api_as):
    user, _ = reader
    theirs = make.notification(make.user(), read_at=utcnow())
    assert api_as(user).delete(f"/api/v1/notifications/{theirs.id}/read").status_code == 404


def test_database_refuses_a_second_engage_for_one_notification(reader, make):
    """Written straight into loop_signals, a month apart (another partition on PostgreSQL):
    SQLite's unique index refuses the second row, PostgreSQL's guard drops it."""
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    user, org = reader
    n = make.notification(user)
    row = {
        "org_id": org.id,
        "kind": "ENGAGE",
        "feature": "x",
        "user_id": user.id,
        "subject_id": n.id,
    }
    db.session.execute(insert(LoopSignal).values(**row, created_at=utcnow()))
    db.session.commit()
    try:
        db.session.execute(
            insert(LoopSignal).values(**row, created_at=utcnow() + timedelta(days=40))
        )
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
    assert len(engage_rows(n.id)) == 1


# --- bulk -------------------------------------------------------------------


def test_bulk_read_by_ids_counts_newly_read_and_ignores_others(reader, make, api_as):
    user, _ = reader
    mine = [make.notification(user, feature=f"f{i}") for i in range(3)]
    already = make.notification(user, read_at=utcnow())
    theirs = make.notification(make.user())
    api = api_as(user)
    response = api.post(
        "/api/v1/notifications/read",
        json={"ids": [n.id for n in mine] + [already.id, theirs.id, 987654]},
    )
    assert response.status_code == 200
    assert response.get_json() == {"marked": 3}
    assert sorted(s.subject_id for s in engage_rows()) == sorted(n.id for n in mine)
    db.session.expire_all()
    assert db.session.get(Notification, theirs.id).read_at is None
    # Repeating the call marks nothing and emits nothing more.
    assert api.post(
        "/api/v1/notifications/read", json={"ids": [n.id for n in mine]}
    ).get_json() == {"marked": 0}
    assert len(engage_rows()) == 3


def test_bulk_read_all(reader, make, api_as):
    user, _ = reader
    for _ in range(4):
        make.notification(user)
    make.notification(make.user())
    response = api_as(user).post("/api/v1/notifications/read", json={"all": True})
    assert response.get_json() == {"marked": 4}
    assert len(engage_rows()) == 4


def test_bulk_reread_after_unread_counts_but_does_not_emit(reader, make, api_as):
    user, _ = reader
    n = make.notification(user)
    api = api_as(user)
    api.post(f"/api/v1/notifications/{n.id}/read")
    api.delete(f"/api/v1/notifications/{n.id}/read")
    assert api.post("/api/v1/notifications/read", json={"ids": [n.id]}).get_json() == {"marked": 1}
    assert len(engage_rows(n.id)) == 1


def test_bulk_read_keeps_a_signal_that_already_exists(make, api_as):
    """The bulk path's insert is the exactly-once one: an ENGAGE already recorded for a
    notification (a restored backup, an earlier import) is kept, not a 500."""
    user = make.user(password=None)
    org = make.org()
    make.member(user, org)
    restored, fresh = make.notification(user), make.notification(user)
    db.session.add(
        LoopSignal(
            org_id=org.id, kind="ENGAGE", feature="mention", user_id=user.id, subject_id=restored.id
        )
    )
    db.session.commit()
    response = api_as(user).post(
        "/api/v1/notifications/read", json={"ids": [restored.id, fresh.id]}
    )
    assert response.status_code == 200
    assert response.get_json() == {"marked": 2}
    assert sorted(s.subject_id for s in engage_rows()) == [restored.id, fresh.id]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"ids": "1,2"}',
        b'{"ids": [1, "2"]}',
        b'{"ids": [1.5]}',
        b'{"ids": [true]}',
        b'{"all": false}',
        b'{"all": "yes"}',
        b"{}",
        b'{"ids": [1], "all": true}',
    ],
)
def test_bulk_read_malformed_body_is_400(reader, api_as, body):
    user, _ = reader
    response = api_as(user).post(
        "/api/v1/notifications/read", data=body, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["message"]


def test_bulk_read_caps_ids_at_1000(reader, api_as):
    user, _ = reader
    api = api_as(user)
    assert (
        api.post("/api/v1/notifications/read", json={"ids": list(range(1, 1001))}).status_code
        == 200
    )
    response = api.post("/api/v1/notifications/read", json={"ids": list(range(1, 1002))})
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "ids"


# --- list -------------------------------------------------------------------


def test_list_newest_first_with_unread_count_and_paging(reader, make, api_as):
    user, _ = reader
    created = [make.notification(user, title=f"n{i}") for i in range(5)]
    make.notification(make.user(), title="not mine")
    api = api_as(user)
    api.post(f"/api/v1/notifications/{created[1].id}/read")

    page = api.get("/api/v1/notifications?limit=2").get_json()
    assert [n["title"] for n in page["notifications"]] == ["n4", "n3"]
    assert page["unread_count"] == 4
    rest = api.get(f"/api/v1/notifications?before={page['next_before']}").get_json()
    assert [n["title"] for n in rest["notifications"]] == ["n2", "n1", "n0"]
    assert rest["next_before"] is None

    unread = api.get("/api/v1/notifications?unread=true").get_json()
    assert [n["title"] for n in unread["notifications"]] == ["n4", "n3", "n2", "n0"]
    assert all(n["read_at"] is None for n in unread["notifications"])


@pytest.mark.parametrize(("count", "pages"), [(116, [116]), (117, [117]), (118, [117, 1])])
def test_next_before_is_null_on_the_last_page(make, api_as, count, pages):
    user = make.user(password=None)
    for i in range(count):
        make.notification(user, title=f"n{i}")
    api = api_as(user)
    seen, sizes, before = [], [], ""
    while True:
        page = api.get(f"/api/v1/notifications?limit=117{before}").get_json()
        sizes.append(len(page["notifications"]))
        seen += [n["title"] for n in page["notifications"]]
        if page["next_before"] is None:
            break
        before = f"&before={page['next_before']}"
    # Every page has something on it: a full last page does not lead to an empty one.
    assert sizes == pages
    assert seen == [f"n{i}" for i in reversed(range(count))]


def test_a_json_body_sent_as_a_form_is_told_the_content_type(reader, api_as):
    user, _ = reader
    # What `curl -d '{"all": true}'` sends: a form's content type.
    response = api_as(user).post(
        "/api/v1/notifications/read",
        data='{"all": true}',
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400
    assert "Content-Type: application/json" in response.get_json()["error"]["message"]
    sent_right = api_as(user).post(
        "/api/v1/notifications/read", data='{"all": true}', content_type="application/json"
    )
    assert sent_right.get_json() == {"marked": 0}


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=x", "before=-3", "unread=maybe"])
def test_list_rejects_bad_query(reader, api_as, query):
    user, _ = reader
    response = api_as(user).get(f"/api/v1/notifications?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] in query


# --- create -----------------------------------------------------------------


def test_admin_creates_notification_and_deliver_signal(make, api_as):
    admin = make.user(role=Role.ADMIN)
    recipient = make.user("bob@example.com")
    org = make.org()
    make.member(recipient, org)
    api = api_as(admin)
    by_email = api.post(
        "/api/v1/notifications",
        json={"user_email": "Bob@Example.com", "feature": "task.assigned", "title": "Do it"},
    )
    assert by_email.status_code == 201
    body = by_email.get_json()
    assert body["feature"] == "task.assigned" and body["read_at"] is None
    by_id = api.post(
        "/api/v1/notifications", json={"user_id": recipient.id, "feature": "mention", "title": "Hi"}
    )
    assert by_id.status_code == 201
    delivers = (
        db.session.execute(select(LoopSignal).where(LoopSignal.kind == SignalKind.DELIVER.value))
        .scalars()
        .all()
    )
    assert sorted(s.subject_id for s in delivers) == sorted([body["id"], by_id.get_json()["id"]])
    assert {s.org_id for s in delivers} == {org.id}
    # The recipient sees it.
    listed = api_as(recipient).get("/api/v1/notifications").get_json()
    assert listed["unread_count"] == 2


@pytest.mark.parametrize("role", [Role.MEMBER, Role.VIEWER])
def test_create_needs_admin_token(make, api_as, role):
    caller = make.user(role=role)
    response = api_as(caller).post(
        "/api/v1/notifications", json={"user_id": caller.id, "feature": "mention", "title": "x"}
    )
    assert response.status_code == 403
    assert db.session.execute(select(func.count()).select_from(Notification)).scalar_one() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_email": "nobody@example.com", "feature": "mention", "title": "x"}, "user_email"),
        ({"user_id": 999999, "feature": "mention", "title": "x"}, "user_id"),
        ({"user_id": "1", "feature": "mention", "title": "x"}, "user_id"),
        ({"feature": "mention", "title": "x"}, "user_email"),
        ({"user_email": "bob@example.com", "feature": "Mention", "title": "x"}, "feature"),
        ({"user_email": "bob@example.com", "feature": "", "title": "x"}, "feature"),
        ({"user_email": "bob@example.com", "feature": "a" * 65, "title": "x"}, "feature"),
        ({"user_email": "bob@example.com", "feature": "has space", "title": "x"}, "feature"),
        ({"user_email": "bob@example.com", "feature": "mention"}, "title"),
        ({"user_email": "bob@example.com", "feature": "mention", "title": ""}, "title"),
        ({"user_email": "bob@example.com", "feature": "mention", "title": 7}, "title"),
    ],
)
def test_create_validates_fields(make, api_as, body, field):
    admin = make.user(role=Role.ADMIN)
    make.user("bob@example.com")
    response = api_as(admin).post("/api/v1/notifications", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == field


def test_create_accepts_64_char_feature_and_unicode_title(make, api_as):
    admin = make.user(role=Role.ADMIN)
    bob = make.user("bob@example.com")
    title = "Привет <b>you</b> \u2603"
    response = api_as(admin).post(
        "/api/v1/notifications",
        json={"user_id": bob.id, "feature": "a.b-c_9" + "x" * 57, "title": title},
    )
    assert response.status_code == 201
    assert response.get_json()["title"] == title


def test_token_last_used_at_is_kept(reader, make, client):
    from loops import tokens
    from loops.models import ApiToken

    user, _ = reader
    row, secret = tokens.create_token(user)
    db.session.commit()
    assert row.last_used_at is None
    client.get("/api/v1/notifications", headers={"Authorization": f"Bearer {secret}"})
    db.session.expire_all()
    used = db.session.get(ApiToken, row.id)
    assert used is not None and used.last_used_at is not None
    assert utcnow() - used.last_used_at < timedelta(minutes=1)
