"""The report over JSON: read it (managers and ops), change it (ops; managers only mark a
version reviewed) — the same lifecycle functions as the pages."""
from __future__ import annotations

import datetime as dt
import json

from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET, require_POST

from accounts.roles import require_reader
from rehearsals.errors import TransitionError
from rehearsals.models import Rehearsal

from . import data, lifecycle
from .models import ReportVersion


def _json_view(view):
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return JsonResponse({"error": "authentication required"}, status=401)
        try:
            require_reader(request.user)
            return view(request, *args, **kwargs)
        except PermissionDenied as exc:
            return JsonResponse({"ok": False, "error": str(exc) or "permission denied"}, status=403)
        except TransitionError as exc:
            return JsonResponse({"ok": False, "error": str(exc)}, status=409)
        except (ValueError, TypeError) as exc:
            return JsonResponse({"ok": False, "error": f"invalid request: {exc}"}, status=400)
    wrapped.__name__ = view.__name__
    return wrapped


def _versions(report) -> list[dict]:
    return [{"number": v.number, "published_by": v.published_by.username, "published_at": v.published_at.isoformat(),
             "reviewed_by": v.reviewed_by.username if v.reviewed_by else None} for v in report.versions.all()]


@_json_view
@require_GET
def report(request, pk: int):
    rehearsal = get_object_or_404(Rehearsal, pk=pk)
    r = lifecycle.report_for(rehearsal)
    return JsonResponse({"status": r.status, "versions": _versions(r), "snapshot": data.build(rehearsal)})


@_json_view
@require_GET
def version(request, pk: int, number: int):
    v = get_object_or_404(ReportVersion, report__rehearsal_id=pk, number=number)
    return JsonResponse({"number": v.number, "snapshot": v.snapshot})


def _edit(report, user, body):
    return lifecycle.edit_narrative(report, user, {k: str(v) for k, v in body.items() if k in lifecycle.NARRATIVE})


def _action_item(report, user, body):
    due = dt.date.fromisoformat(body["due"]) if body.get("due") else None
    return lifecycle.add_action_item(report, user, text=str(body.get("text", "")), owner=str(body.get("owner", "")),
                                     due=due)


def _reviewed(report, user, body):
    return lifecycle.mark_reviewed(get_object_or_404(ReportVersion, report=report, number=int(body["version"])), user)


ACTIONS = {
    "edit": _edit,
    "action_item": _action_item,
    "submit": lambda report, user, body: lifecycle.submit_for_review(report, user),
    "publish": lambda report, user, body: lifecycle.publish(report, user),
    "reviewed": _reviewed,
}


@_json_view
@require_POST
def action(request, pk: int, action: str):
    if action not in ACTIONS:
        return JsonResponse({"ok": False, "error": f"unknown action {action!r} (known: {', '.join(ACTIONS)})"},
                            status=404)
    body = json.loads(request.body or b"{}")
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    r = lifecycle.report_for(get_object_or_404(Rehearsal, pk=pk))
    ACTIONS[action](r, request.user, body)
    r.refresh_from_db()
    return JsonResponse({"ok": True, "status": r.status, "versions": _versions(r)})
