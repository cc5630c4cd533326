"""JSON API: the same state and actions as the UI, for scripts and the browser."""
from __future__ import annotations

import json

from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET, require_POST

from accounts.roles import require_reader

from . import actions
from .models import Rehearsal, StepEvent
from .state import rehearsal_state

MAX_LIMIT = 5000
MAX_SEQ = 2**63 - 1
MAX_BODY_BYTES = 64 * 1024


def _json_login_required(view):
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return JsonResponse({"error": "authentication required"}, status=401)
        try:
            return view(request, *args, **kwargs)
        except PermissionDenied as exc:
            return JsonResponse({"error": str(exc) or "permission denied"}, status=403)
    wrapped.__name__ = view.__name__
    return wrapped


@_json_login_required
@require_GET
def rehearsal(request, pk: int):
    require_reader(request.user)
    return JsonResponse(rehearsal_state(get_object_or_404(Rehearsal, pk=pk), request.user))


@_json_login_required
@require_GET
def events(request, pk: int, step_run: int):
    """Events of one StepRun after ``?after=SEQ`` (at most ``limit``), for polling clients."""
    require_reader(request.user)
    get_object_or_404(Rehearsal, pk=pk)
    try:
        after = int(request.GET.get("after", 0))
        limit = int(request.GET.get("limit", 1000))
    except ValueError:
        return JsonResponse({"error": "after and limit must be integers"}, status=400)
    if not 0 <= after <= MAX_SEQ or not 1 <= limit <= MAX_LIMIT:
        return JsonResponse({"error": f"after must be 0..{MAX_SEQ} and limit 1..{MAX_LIMIT}"}, status=400)
    rows = StepEvent.objects.filter(step_run_id=step_run, step_run__rehearsal_id=pk, seq__gt=after).order_by("seq")
    return JsonResponse({"events": [r.as_frame() for r in rows[:limit]]})


@_json_login_required
@require_POST
def action(request, pk: int, action: str):
    if len(request.body) > MAX_BODY_BYTES:
        return JsonResponse({"ok": False, "error": f"the body is larger than {MAX_BODY_BYTES} bytes"}, status=413)
    try:
        data = json.loads(request.body or b"{}")
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
    except RecursionError:
        return JsonResponse({"ok": False, "error": "invalid JSON: nested too deeply"}, status=400)
    except ValueError as exc:
        return JsonResponse({"ok": False, "error": f"invalid JSON: {str(exc)[:200]}"}, status=400)
    try:
        message = actions.perform(pk, action, request.user, data)
    except actions.ActionError as exc:
        return JsonResponse({"ok": False, "error": str(exc)}, status=409)
    return JsonResponse({"ok": True, "message": message, "state": rehearsal_state(Rehearsal.objects.get(pk=pk), request.user)})
