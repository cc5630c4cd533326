"""The API tokens page: a person makes, sees and revokes their own tokens. A new token is shown once, on the
page that answers its creation (never stored, never sent again: the response is not cached)."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from . import tokens
from .models import ApiToken
from .roles import require_reader


def _page(request, *, created=None, token: str = "", status: int = 200):
    return render(request, "accounts/api_tokens.html", {
        "tokens": ApiToken.objects.filter(user=request.user), "lifetimes": tokens.LIFETIMES,
        "created": created, "token": token,
    }, status=status)


@never_cache
@login_required
def api_tokens(request):
    require_reader(request.user)
    if request.method != "POST":
        return _page(request)
    lifetime = request.POST.get("lifetime", "90")
    if lifetime not in tokens.LIFETIMES:
        messages.error(request, f"choose a lifetime of {', '.join(tokens.LIFETIMES)}")
        return _page(request, status=400)
    try:
        row, token = tokens.issue(request.user, request.POST.get("name", ""), tokens.LIFETIMES[lifetime])
    except tokens.TokenError as exc:
        messages.error(request, str(exc))
        return _page(request, status=400)
    return _page(request, created=row, token=token)


@login_required
@require_POST
def revoke_api_token(request, pk: int):
    require_reader(request.user)
    row = get_object_or_404(ApiToken, pk=pk, user=request.user)
    tokens.revoke(row, request.user)
    messages.success(request, f"Revoked the token {row.name!r} ({row.prefix}…); requests with it now get 401.")
    return redirect("accounts:api_tokens")
