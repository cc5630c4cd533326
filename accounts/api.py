"""Who is calling the REST API, and what their role lets them do there.

Authentication: a personal token (``Authorization: Bearer ust_…``, see ``accounts.tokens``) or the browser's session
(DRF's ``SessionAuthentication``, which checks the CSRF token). Permissions: the same functions as the pages, the
WebSocket and the transitions (``accounts.roles``) — reading needs the ops or managers role, anything else ops.
The transitions check again (and the production-run permission) whichever way they are reached.
"""
from __future__ import annotations

from django.core.exceptions import PermissionDenied
from rest_framework import authentication, exceptions, permissions

from . import tokens
from .roles import require_operator, require_reader

KEYWORDS = {b"bearer", b"token"}


class TokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <token>`` (or ``Token <token>``). A token request carries no cookie, so it needs no
    CSRF token."""

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower() not in KEYWORDS:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("the Authorization header is 'Bearer <token>'")
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("invalid, expired or revoked token")
        row = tokens.user_for(raw)
        if row is None:
            raise exceptions.AuthenticationFailed("invalid, expired or revoked token")
        return row.user, row

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="understudy"'


class _RoleCheck(permissions.BasePermission):
    """Ask ``accounts.roles``; its refusal is the 403's message. Anonymous: 401 (DRF, from the token challenge)."""

    def check(self, request):
        raise NotImplementedError

    def has_permission(self, request, view) -> bool:
        try:
            self.check(request)
        except PermissionDenied as exc:
            self.message = str(exc)
            return False
        return True


class ReadOrOperate(_RoleCheck):
    """The default: GET/HEAD/OPTIONS for ops and managers, every other method for ops only."""

    def check(self, request):
        if request.method in permissions.SAFE_METHODS:
            require_reader(request.user)
        else:
            require_operator(request.user)


class Reader(_RoleCheck):
    """Ops and managers, whatever the method: for a change that is not ops' (a manager marks a report reviewed);
    the function making the change decides who may."""

    def check(self, request):
        require_reader(request.user)
