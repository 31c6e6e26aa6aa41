"""Bearer API tokens: minted with `secrets`, stored as a SHA-256 hash only."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update

from loops.database import db
from loops.models import ApiToken, User
from loops.timeutil import utcnow

TOKEN_PREFIX = "elp_"
# last_used_at is bumped at most this often, so a busy client does not turn
# every read into a write on its token row.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who a valid, unrevoked token speaks for."""

    user_id: int
    role: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(user: User, name: str = "default") -> tuple[ApiToken, str]:
    """Create a token for ``user``; returns the row and the only copy of the secret."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name, token_hash=hash_token(secret))
    db.session.add(row)
    db.session.flush()
    return row, secret


# Prebuilt (parameters bound at execution): this runs on every API request.
_TOKEN_AND_USER = (
    select(ApiToken.id, ApiToken.token_hash, ApiToken.revoked_at, ApiToken.last_used_at, User)
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("digest"))
)


def plausible_secret(secret: str) -> bool:
    """Worth a lookup at all: not empty and not absurdly long."""
    return bool(secret) and len(secret) <= 256


def grants_access(found: Any, digest: str) -> bool:
    """Whether a token row found by ``digest`` lets its holder in: same hash, not revoked.

    The lookup is by hash; the constant-time compare guards the equality itself.
    """
    return hmac.compare_digest(found.token_hash, digest) and found.revoked_at is None


def authenticate(secret: str, now: datetime | None = None) -> User | None:
    """The token's user, or None if the token is unknown or revoked."""
    if not plausible_secret(secret):
        return None
    digest = hash_token(secret)
    # Token and user in one round trip: this runs on every API request.
    found = db.session.execute(_TOKEN_AND_USER, {"digest": digest}).first()
    if found is None or not grants_access(found, digest):
        return None
    now = now or utcnow()
    user: User = found.User
    if found.last_used_at is None or now - found.last_used_at >= LAST_USED_RESOLUTION:
        db.session.execute(update(ApiToken).where(ApiToken.id == found.id).values(last_used_at=now))
        # Kept out of the commit's expiry and attached again: otherwise the view's
        # first look at the user would reload it with one more query.
        db.session.expunge(user)
        db.session.commit()
        db.session.add(user)
    return user


def revoke(token_id: int, now: datetime | None = None) -> bool:
    result = db.session.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    db.session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def list_tokens(user_id: int | None = None) -> list[tuple[ApiToken, str]]:
    """Token rows (never a secret: only hashes are stored) with their user's email, by id."""
    query = select(ApiToken, User.email).join(User, User.id == ApiToken.user_id)
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    return [(row, email) for row, email in db.session.execute(query.order_by(ApiToken.id))]
