"""Bearer-token authentication and role checks for the JSON API."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import g, request

from dashboard.errors import ApiError
from loops import tokens
from loops.models import Role, User

F = TypeVar("F", bound=Callable[..., Any])


def bearer_secret() -> str | None:
    return bearer_secret_of(request.headers.get("Authorization", ""))


def bearer_secret_of(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header's value; None if there is none."""
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return secret.strip()


def token_required(*roles: Role) -> Callable[[F], F]:
    """Require a valid bearer token; with ``roles``, also one of those roles (else 403)."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            secret = bearer_secret()
            if secret is None:
                raise ApiError(401, "Missing bearer token.")
            user = tokens.authenticate(secret)
            if user is None:
                raise ApiError(401, "Invalid or revoked token.")
            if roles and user.role not in {r.value for r in roles}:
                raise ApiError(403, "This token's user may not do that.")
            g.api_user = user
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorator


def current_api_user() -> User:
    return cast(User, g.api_user)
