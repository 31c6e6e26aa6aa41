"""Digests: held notifications whose time has come, delivered as one notification per user.

Exactly once, whatever the concurrency, retries or crashes: a user's due items are
claimed by one UPDATE (``delivered_at`` set where it is still NULL), and the digest,
the items' ``digest_id`` and the DELIVER signals are written in that same transaction.
Two digesters racing for one user: the second one's UPDATE waits on the first's row
locks (PostgreSQL) or the write lock (SQLite), then finds nothing left to claim and
writes nothing. A crash before commit leaves every item held, for the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update

from loops.database import db
from loops.models import Notification, SignalKind
from loops.policy_rules import DIGEST_FEATURE
from loops.signals import emit_many

TITLE_ITEMS = 3
TITLE_MAX = 300


@dataclass(frozen=True)
class DigestOutcome:
    digests: int
    items: int

    def __str__(self) -> str:
        d = "digest" if self.digests == 1 else "digests"
        i = "item" if self.items == 1 else "items"
        return f"delivered {self.digests} {d} with {self.items} {i}"


def digest_title(titles: list[str]) -> str:
    """``"3 updates: A · B · C"``; more than TITLE_ITEMS end with ``"+N more"``."""
    n = len(titles)
    head = " · ".join(t.strip() for t in titles[:TITLE_ITEMS])
    more = f" · +{n - TITLE_ITEMS} more" if n > TITLE_ITEMS else ""
    text = f"{n} update{'s' if n != 1 else ''}: {head}{more}"
    return text if len(text) <= TITLE_MAX else text[: TITLE_MAX - 1] + "…"


def due_groups(now: datetime, limit: int = 1000) -> list[tuple[int, datetime]]:
    """(user, due time) pairs with held notifications due by ``now``, oldest first."""
    rows = db.session.execute(
        select(Notification.user_id, Notification.deliver_at)
        .where(Notification.delivered_at.is_(None), Notification.deliver_at <= now)
        .group_by(Notification.user_id, Notification.deliver_at)
        .order_by(Notification.deliver_at, Notification.user_id)
        .limit(limit)
    ).all()
    db.session.rollback()
    return [(int(u), d) for u, d in rows if d is not None]


def deliver_group(
    user_id: int,
    due: datetime,
    now: datetime,
    loops_enabled: bool,
    before_commit: Callable[[], None] | None = None,
) -> int:
    """Deliver one user's items due at ``due`` as one digest; the number released (0: none left).

    One transaction, committed here (``before_commit`` runs just before: a test hook).
    """
    claimed = db.session.execute(
        update(Notification)
        .where(
            Notification.user_id == user_id,
            Notification.deliver_at == due,
            Notification.delivered_at.is_(None),
        )
        .values(delivered_at=now)
        .returning(Notification.id, Notification.feature, Notification.title)
        .execution_options(synchronize_session=False)
    ).all()
    if not claimed:
        db.session.rollback()
        return 0
    items = sorted(claimed, key=lambda r: r.id)
    digest_id = db.session.execute(
        insert(Notification)
        .values(
            user_id=user_id,
            feature=DIGEST_FEATURE,
            title=digest_title([r.title for r in items]),
            created_at=now,
            delivered_at=now,
        )
        .returning(Notification.id)
    ).scalar_one()
    db.session.execute(
        update(Notification)
        .where(Notification.id.in_([r.id for r in items]))
        .values(digest_id=digest_id)
        .execution_options(synchronize_session=False)
    )
    if loops_enabled:
        # One primary-org lookup and one batched exactly-once insert for the digest and its items.
        emit_many(
            SignalKind.DELIVER,
            user_id=user_id,
            subjects=[(digest_id, DIGEST_FEATURE)] + [(r.id, r.feature) for r in items],
            at=now,
        )
    if before_commit is not None:
        before_commit()
    db.session.commit()
    return len(items)


def deliver_due(
    now: datetime,
    loops_enabled: bool,
    progress: Callable[[int, int], None] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> DigestOutcome:
    """Deliver every held notification due by ``now``: one digest per user and due time.

    Held items are delivered even when the loop has since been switched off (nothing
    that was held is ever lost); DELIVER signals are recorded only while it is on.
    """
    groups = due_groups(now)
    digests = items = 0
    while groups:
        for done, (user_id, due) in enumerate(groups, start=1):
            released = deliver_group(user_id, due, now, loops_enabled, before_commit)
            if released:
                digests += 1
                items += released
            if progress is not None:
                progress(done, len(groups))
        groups = due_groups(now)
    return DigestOutcome(digests, items)
