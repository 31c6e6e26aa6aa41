"""Creating users, tenants and memberships: the operations behind the CLI (and tests)."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from werkzeug.security import generate_password_hash

from loops.database import db
from loops.models import Organization, OrgMembership, Role, User
from loops.timeutil import utcnow

SLUG_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+")
MIN_PASSWORD_LENGTH = 8


class AccountError(ValueError):
    """Bad input for an account operation; the message is shown to the operator as is."""


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if not EMAIL_PATTERN.fullmatch(email) or len(email) > 254:
        raise AccountError(f"not a valid email address: {email!r}")
    return email


def find_user(email: str) -> User | None:
    return db.session.execute(
        select(User).where(User.email == normalise_email(email))
    ).scalar_one_or_none()


def find_org(slug: str) -> Organization | None:
    return db.session.execute(
        select(Organization).where(Organization.slug == slug)
    ).scalar_one_or_none()


def check_role(role: str) -> str:
    if role not in {r.value for r in Role}:
        raise AccountError(f"invalid role {role!r}: choose member, viewer or admin")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    return password


def create_user(email: str, role: str, password: str | None) -> User:
    email = normalise_email(email)
    check_role(role)
    if find_user(email) is not None:
        raise AccountError(f"a user with email {email} already exists")
    if password is not None:
        check_password(password)
    user = User(
        email=email,
        role=role,
        password_hash=generate_password_hash(password) if password else None,
    )
    db.session.add(user)
    db.session.commit()
    return user


def create_org(slug: str, name: str) -> Organization:
    if not SLUG_PATTERN.fullmatch(slug):
        raise AccountError(
            f"invalid slug {slug!r}: use 1-64 lowercase letters, digits and inner hyphens"
        )
    if not name.strip():
        raise AccountError("name must not be empty")
    if find_org(slug) is not None:
        raise AccountError(f"a tenant with slug {slug} already exists")
    org = Organization(slug=slug, name=name.strip())
    db.session.add(org)
    db.session.commit()
    return org


def add_member(slug: str, email: str, joined_at: datetime | None = None) -> OrgMembership:
    org = find_org(slug)
    if org is None:
        raise AccountError(f"no tenant with slug {slug}")
    user = find_user(email)
    if user is None:
        raise AccountError(f"no user with email {normalise_email(email)}")
    exists = db.session.execute(
        select(OrgMembership).where(
            OrgMembership.user_id == user.id, OrgMembership.org_id == org.id
        )
    ).scalar_one_or_none()
    if exists is not None:
        raise AccountError(f"{user.email} is already a member of {slug}")
    membership = OrgMembership(user_id=user.id, org_id=org.id, joined_at=joined_at or utcnow())
    db.session.add(membership)
    db.session.commit()
    return membership


def existing_user(email: str) -> User:
    user = find_user(email)
    if user is None:
        raise AccountError(f"no user with email {normalise_email(email)}")
    return user


def set_role(email: str, role: str) -> User:
    """Change a user's role; it applies from their next request (roles are read per request)."""
    user = existing_user(email)
    user.role = check_role(role)
    db.session.commit()
    return user


def set_password(email: str, password: str) -> User:
    """Set a dashboard password; every session signed in with the old one ends."""
    user = existing_user(email)
    user.password_hash = generate_password_hash(check_password(password))
    user.session_version = (user.session_version or 0) + 1
    db.session.commit()
    return user


def list_users(role: str | None = None) -> list[tuple[User, list[str]]]:
    """Users by id, each with their tenants' slugs, primary tenant first."""
    query = select(User).order_by(User.id)
    if role is not None:
        query = query.where(User.role == check_role(role))
    users = list(db.session.execute(query).scalars())
    tenants: dict[int, list[str]] = {u.id: [] for u in users}
    rows = db.session.execute(
        select(OrgMembership.user_id, Organization.slug)
        .join(Organization, Organization.id == OrgMembership.org_id)
        .where(OrgMembership.user_id.in_(list(tenants)))
        .order_by(OrgMembership.user_id, OrgMembership.joined_at, OrgMembership.org_id)
    )
    for user_id, slug in rows:
        tenants[user_id].append(slug)
    return [(u, tenants[u.id]) for u in users]
