"""Making, checking and revoking personal API tokens (``ApiToken``).

Anyone with a role (ops or managers) may hold tokens; a token acts with its owner's role, read at every request,
so a manager's token reads and a token stops working the moment its owner is deactivated.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from .models import ApiToken
from .roles import require_reader

SCHEME = "ust_"
TOKEN_FORMAT = re.compile(r"ust_[A-Za-z0-9_-]{43}")
PREFIX_LENGTH = len(SCHEME) + 8
# How long a token lives, as offered when it is made (days; None: until revoked).
LIFETIMES = {"30": 30, "90": 90, "365": 365, "never": None}
MAX_ACTIVE_PER_USER = 20
# last_used_at is written at most this often per token: it answers "is this token still in use?", and a write on
# every request would be a database write on every read.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


class TokenError(ValueError):
    pass


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@transaction.atomic
def issue(user, name: str, days: int | None) -> tuple[ApiToken, str]:
    """A new token for ``user``: the row and the token itself, which is not stored and cannot be shown again."""
    require_reader(user)
    name = (name or "").strip()
    if not name:
        raise TokenError("give the token a name saying what it is for")
    if len(name) > 100:
        raise TokenError("a token's name is at most 100 characters")
    if days is not None and not 1 <= days <= 3650:
        raise TokenError("a token lives 1 to 3650 days, or until revoked")
    active = ApiToken.objects.select_for_update().filter(user=user, revoked_at__isnull=True)
    if sum(1 for t in active if not t.is_expired) >= MAX_ACTIVE_PER_USER:
        raise TokenError(f"you have {MAX_ACTIVE_PER_USER} active tokens; revoke one you no longer use first")
    token = SCHEME + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(user=user, name=name, prefix=token[:PREFIX_LENGTH], digest=digest_of(token),
                                  expires_at=timezone.now() + dt.timedelta(days=days) if days else None)
    return row, token


def user_for(token: str) -> ApiToken | None:
    """The usable token row ``token`` names (its owner active), or None."""
    if not TOKEN_FORMAT.fullmatch(token):
        return None
    row = ApiToken.objects.select_related("user").filter(digest=digest_of(token)).first()
    if row is None or not row.is_usable or not row.user.is_active:
        return None
    now = timezone.now()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
        row.last_used_at = now
    return row


@transaction.atomic
def revoke(row: ApiToken, user) -> ApiToken:
    """Revoke one of ``user``'s own tokens; from now on it is refused (401)."""
    row = ApiToken.objects.select_for_update().get(pk=row.pk)
    if row.user_id != user.pk:
        raise PermissionDenied("a token can only be revoked by its owner")
    if row.revoked_at is None:
        row.revoked_at = timezone.now()
        row.save(update_fields=["revoked_at"])
    return row
