"""Notifications: reading, marking read/unread, creating — and the signals those emit."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from flask import Flask
from sqlalchemy import BigInteger, Integer, bindparam, func, select, update

from loops import read_fastpath, tokens
from loops.database import db
from loops.delivery import Delivery, PolicySettings, plan_delivery
from loops.models import Notification, SignalKind, User
from loops.signals import emit_for_subject, emit_many
from loops.timeutil import UTCDateTime, iso

FEATURE_PATTERN = re.compile(r"[a-z0-9_.-]{1,64}")
TITLE_MAX_LENGTH = 1000
BULK_MAX_IDS = 1000
LIST_DEFAULT_LIMIT = 50
LIST_MAX_LIMIT = 200


class NotificationFields(Protocol):
    """What an answer about one notification shows (a model row, or the fast path's row)."""

    @property
    def id(self) -> int: ...
    @property
    def feature(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def read_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class ReadResult:
    notification: NotificationFields
    first_read: bool


def serialize(n: NotificationFields) -> dict[str, Any]:
    return {
        "id": n.id,
        "feature": n.feature,
        "title": n.title,
        "created_at": iso(n.created_at),
        "read_at": iso(n.read_at),
    }


RETURNED = (
    Notification.id,
    Notification.feature,
    Notification.title,
    Notification.created_at,
    Notification.read_at,
)


# A notification held for a digest does not exist for its user until it is delivered:
# not listed, not counted, not readable (404).
DELIVERED = Notification.delivered_at.is_not(None)


def _owned(user_id: int, notification_id: int) -> Any:
    return (Notification.id == notification_id, Notification.user_id == user_id, DELIVERED)


def _get_owned(user_id: int, notification_id: int) -> Notification | None:
    return db.session.execute(
        select(Notification).where(*_owned(user_id, notification_id))
    ).scalar_one_or_none()


# The mark-read hot path runs these prebuilt Core statements with bound parameters:
# building and ORM-executing fresh statements on every request cost more CPU than
# the database work itself (profiled under load, see docs/PERFORMANCE.md).
_notifications = Notification.__table__
_RETURNED_COLUMNS = [_notifications.c[c.key] for c in RETURNED]
_OWNED_BY = (
    _notifications.c.id == bindparam("nid", type_=BigInteger()),
    _notifications.c.user_id == bindparam("uid", type_=Integer()),
    _notifications.c.delivered_at.is_not(None),
)
_FIRST_READ = (
    update(_notifications)
    .where(
        *_OWNED_BY,
        _notifications.c.first_read_at.is_(None),
        _notifications.c.read_at.is_(None),
    )
    .values(
        read_at=bindparam("now", type_=UTCDateTime()),
        first_read_at=bindparam("now", type_=UTCDateTime()),
    )
    .returning(*_RETURNED_COLUMNS)
)
_REREAD = (
    update(_notifications)
    .where(*_OWNED_BY, _notifications.c.read_at.is_(None))
    .values(read_at=bindparam("now", type_=UTCDateTime()))
    .returning(*_RETURNED_COLUMNS)
)
_SELECT_OWNED = select(*_RETURNED_COLUMNS).where(*_OWNED_BY)


def _get_owned_row(user_id: int, notification_id: int) -> NotificationFields | None:
    row = db.session.execute(_SELECT_OWNED, {"nid": notification_id, "uid": user_id}).first()
    return None if row is None else row


def mark_read(
    user_id: int, notification_id: int, *, now: datetime, loops_enabled: bool
) -> ReadResult | None:
    """Mark the user's notification read; None if it is not theirs (or does not exist).

    The "was unread" guard is the database's: a conditional UPDATE decides which
    of any number of concurrent requests performs the first read, and that
    request's ENGAGE insert commits in the same transaction.
    """
    params = {"nid": notification_id, "uid": user_id, "now": now}
    first = db.session.execute(_FIRST_READ, params).first()
    if first is not None:
        if loops_enabled:
            emit_for_subject(
                SignalKind.ENGAGE,
                user_id=user_id,
                subject_id=notification_id,
                feature=first.feature,
                at=now,
            )
        db.session.commit()
        return ReadResult(first, first_read=True)

    current = _get_owned_row(user_id, notification_id)
    if current is None:
        db.session.rollback()
        return None
    if current.read_at is not None:
        db.session.rollback()
        return ReadResult(current, first_read=False)
    # Read again after a mark-unread: it becomes read, but is never a first read.
    reread = db.session.execute(_REREAD, params).first()
    db.session.commit()
    if reread is not None:
        return ReadResult(reread, first_read=False)
    # Someone else re-read it between our SELECT and UPDATE.
    again = _get_owned_row(user_id, notification_id)
    return None if again is None else ReadResult(again, first_read=False)


class FastRead(NamedTuple):
    """What the fast path settled: who the token speaks for and the read, as in
    ``read_with_token``; ``settled`` False leaves the read to the general path."""

    principal: tokens.Principal | None
    result: ReadResult | None
    settled: bool


def fast_read(
    secret: str,
    notification_id: int | None,
    *,
    now: datetime,
    loops_enabled: bool,
    app: Flask | None = None,
) -> FastRead:
    """Mark-read on the PostgreSQL fast path (``read_fastpath``), as far as it goes.

    Unsettled: the notification is unread but this was not its first read — read
    again after a mark-unread, or a concurrent first read committed meanwhile — which
    only the general path (``mark_read``) answers. ``app``: whose pool (default: the
    current app's).
    """
    principal, row = read_fastpath.authenticate_and_read(
        secret, notification_id, now=now, loops_enabled=loops_enabled, app=app
    )
    if principal is None or notification_id is None or row is None:
        return FastRead(principal, None, settled=True)
    if row.first or row.read_at is not None:
        return FastRead(principal, ReadResult(row, first_read=bool(row.first)), settled=True)
    return FastRead(principal, None, settled=False)


def read_with_token(
    secret: str,
    notification_id: int | None,
    *,
    now: datetime,
    loops_enabled: bool,
    fast_path: bool | None = None,
) -> tuple[tokens.Principal | None, ReadResult | None]:
    """The API's mark-read: who the token speaks for and, if it is valid, the read.

    (None, None): the token is unknown or revoked — checked before the id, so a bad
    token never learns whether an id exists. (principal, None): ``notification_id``
    is None (not a valid id) or names no notification of theirs.

    The path is chosen here: on PostgreSQL the two-statement fast path
    (``fast_read``), elsewhere the general one (token lookup, then ``mark_read``).
    Both give the same answers and write the same signal rows; ``fast_path`` forces
    one (tests compare them).
    """
    if fast_path is None:
        fast_path = read_fastpath.available()
    if fast_path:
        fast = fast_read(secret, notification_id, now=now, loops_enabled=loops_enabled)
        if fast.settled:
            return fast.principal, fast.result
        principal = fast.principal
        assert principal is not None and notification_id is not None  # settled otherwise
    else:
        user = tokens.authenticate(secret, now)
        if user is None:
            return None, None
        principal = tokens.Principal(user.id, user.role)
        if notification_id is None:
            return principal, None
    result = mark_read(principal.user_id, notification_id, now=now, loops_enabled=loops_enabled)
    return principal, result


def mark_unread(user_id: int, notification_id: int) -> Notification | None:
    result = db.session.execute(
        update(Notification)
        .where(*_owned(user_id, notification_id))
        .values(read_at=None)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    return _get_owned(user_id, notification_id)


def mark_many_read(
    user_id: int, ids: Sequence[int] | None, *, now: datetime, loops_enabled: bool
) -> int:
    """Bulk mark-read (``ids=None`` means all); returns how many were newly marked read.

    Ids that are not the user's are ignored. First reads emit ENGAGE as the
    single-notification path does: the same primary org, the same exactly-once
    insert, in the same transaction.
    """
    scope = [Notification.user_id == user_id, Notification.read_at.is_(None), DELIVERED]
    if ids is not None:
        scope.append(Notification.id.in_(ids))
    firsts = db.session.execute(
        update(Notification)
        .where(*scope, Notification.first_read_at.is_(None))
        .values(read_at=now, first_read_at=now)
        .returning(Notification.id, Notification.feature)
        .execution_options(synchronize_session=False)
    ).all()
    rereads = db.session.execute(
        update(Notification)
        .where(*scope)
        .values(read_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if loops_enabled:
        emit_many(
            SignalKind.ENGAGE,
            user_id=user_id,
            subjects=[(row.id, row.feature) for row in firsts],
            at=now,
        )
    db.session.commit()
    return len(firsts) + int(rereads)


@dataclass(frozen=True)
class NotificationPage:
    items: list[Notification]
    unread_count: int
    # The ``before`` of the next page; None when this page is the last one.
    next_before: int | None


def list_for_user(
    user_id: int, *, unread_only: bool, limit: int, before: int | None
) -> NotificationPage:
    """One page of the user's notifications, newest first by id, and their unread count.

    One row beyond ``limit`` is read to know whether another page follows, so a
    page that ends exactly at the last notification does not point at an empty one.
    """
    query = select(Notification).where(Notification.user_id == user_id, DELIVERED)
    if unread_only:
        query = query.where(Notification.read_at.is_(None))
    if before is not None:
        query = query.where(Notification.id < before)
    rows = list(
        db.session.execute(query.order_by(Notification.id.desc()).limit(limit + 1)).scalars()
    )
    items = rows[:limit]
    unread = db.session.execute(
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None), DELIVERED)
    ).scalar_one()
    next_before = items[-1].id if len(rows) > limit else None
    return NotificationPage(items, int(unread), next_before)


@dataclass(frozen=True)
class Created:
    notification: Notification
    delivery: Delivery


def create(
    recipient: User,
    *,
    feature: str,
    title: str,
    now: datetime,
    loops_enabled: bool,
    policy: PolicySettings | None = None,
) -> Created:
    """Create a notification under its tenant's delivery policy.

    Delivered at once (``delivered_at`` = ``created_at``, and with loops on its DELIVER
    signal in the same transaction), or held for the next digest when the policy
    says digest, the tenant is enforced and the recipient is not in the holdout.
    """
    delivery = plan_delivery(recipient.id, feature, now, policy or PolicySettings(), loops_enabled)
    notification = Notification(
        user_id=recipient.id,
        feature=feature,
        title=title,
        created_at=now,
        delivered_at=None if delivery.held else now,
        deliver_at=delivery.deliver_at,
    )
    db.session.add(notification)
    db.session.flush()
    if loops_enabled and not delivery.held:
        emit_for_subject(
            SignalKind.DELIVER,
            user_id=recipient.id,
            subject_id=notification.id,
            feature=feature,
            at=now,
        )
    db.session.commit()
    return Created(notification, delivery)
