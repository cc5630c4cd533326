"""HTML views for operators: thin; state changes go through rehearsals.actions."""
from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from . import actions, services
from .models import Rehearsal
from .permissions import require_reader
from .steps import registry


def rehearsal_state(rehearsal: Rehearsal) -> dict:
    """Everything the page and the API show about a rehearsal, as plain data."""
    latest = rehearsal.latest_runs()
    nxt = services.next_step(rehearsal) if rehearsal.status == Rehearsal.Status.RUNNING else None
    steps = []
    findings_by_run: dict[int, list] = {}
    for f in rehearsal.findings.order_by("step_run_id", "-selected", "verdict", "path")[:2000]:
        findings_by_run.setdefault(f.step_run_id, []).append({
            "id": f.pk, "path": f.path, "change": f.change, "change_label": f.get_change_display(),
            "verdict": f.verdict, "verdict_label": f.get_verdict_display(), "size_clone": f.size_clone,
            "size_production": f.size_production, "chunks_differ": f.chunks_differ, "chunk_count": f.chunk_count,
            "drift": f.drift, "selected": f.selected})
    for spec in rehearsal.runbook.steps.order_by("position"):
        run = latest.get(spec.pk)
        approval = run.approvals.first() if run else None
        steps.append({
            "id": spec.pk, "position": spec.position, "title": spec.title, "kind": spec.kind,
            "kind_label": registry.get(spec.kind).label, "target": spec.target,
            "needs_approval": spec.needs_approval, "estimated_seconds": spec.estimated_seconds,
            "summary": registry.get(spec.kind).summary(spec.params), "params": spec.params,
            "is_next": nxt is not None and nxt.pk == spec.pk,
            "run": None if run is None else {
                "id": run.pk, "attempt": run.attempt, "status": run.status,
                "status_label": run.get_status_display(), "error": run.error, "result": run.result,
                "progress": run.progress, "last_seq": run.last_seq,
                "started_at": run.started_at.isoformat() if run.started_at else None,
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                "duration": run.duration_seconds,
                "findings": findings_by_run.get(run.pk, []),
                "approval": None if approval is None else {
                    "requested_by": approval.requested_by.username,
                    "approver": approval.approver.username if approval.approver else None,
                    "decision": approval.decision, "note": approval.note,
                },
            },
        })
    return {
        "id": rehearsal.pk, "status": rehearsal.status, "status_label": rehearsal.get_status_display(),
        "mode": rehearsal.mode, "incident": rehearsal.incident_id, "runbook": str(rehearsal.runbook),
        "hypervisor": rehearsal.hypervisor.name, "steps": steps,
        "timeline": [{"at": e.at.strftime("%Y-%m-%d %H:%M:%S"), "actor": e.actor.username if e.actor else None,
                      "action": e.action, "message": e.message}
                     for e in rehearsal.timeline.select_related("actor").order_by("at", "pk")],
    }


@login_required
def rehearsal_detail(request, pk: int):
    require_reader(request.user)
    rehearsal = get_object_or_404(Rehearsal.objects.select_related("incident", "runbook", "hypervisor"), pk=pk)
    state = rehearsal_state(rehearsal)
    return render(request, "rehearsals/detail.html", {
        "rehearsal": rehearsal, "state": state, "state_json": json.dumps(state, default=str),
        "timeline": rehearsal.timeline.select_related("actor").all(),
    })


@login_required
@require_POST
def rehearsal_action(request, pk: int, action: str):
    try:
        message = actions.perform(pk, action, request.user, request.POST.dict())
        messages.success(request, message)
    except PermissionDenied:
        raise
    except actions.ActionError as exc:
        messages.error(request, str(exc))
    return redirect("rehearsals:detail", pk=pk)
