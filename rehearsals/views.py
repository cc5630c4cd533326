"""HTML views for operators: thin; state changes go through rehearsals.actions."""
from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from workers.engines.ssh import fingerprint

from . import actions, services
from .models import Clone, Hypervisor, Rehearsal
from .permissions import require_operator, require_reader
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
            "drift": f.drift, "selected": f.selected, "drift_override": f.drift_override})
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
    clone = Clone.objects.filter(rehearsal=rehearsal).first()
    return {
        "clone": None if clone is None else {
            "status": clone.status, "status_label": clone.get_status_display(), "domain": clone.domain_name,
            "ssh": f"{clone.user}@{clone.address}:{clone.port}" if clone.address else "",
            "host_key_fingerprint": fingerprint(clone.host_key) if clone.host_key else "",
            "point_in_time": clone.point_in_time.isoformat() if clone.point_in_time else None,
            "consistency": clone.consistency, "keep": rehearsal.keep_clone, "disk": clone.disk_path},
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


@login_required
def hypervisor_list(request):
    require_reader(request.user)
    hypervisors = []
    for hv in Hypervisor.objects.all():
        clones = Clone.objects.filter(hypervisor=hv).exclude(status=Clone.Status.DESTROYED).select_related(
            "rehearsal")
        hypervisors.append({"hv": hv, "clones": clones, "scan": (hv.last_scan or {}).get("domains", [])})
    return render(request, "rehearsals/hypervisors.html", {"hypervisors": hypervisors})


@login_required
@require_POST
def hypervisor_scan(request, pk: int):
    from workers.tasks import scan_hypervisor

    require_operator(request.user)
    hv = get_object_or_404(Hypervisor, pk=pk)
    scan_hypervisor.apply_async(args=[hv.pk], queue=hv.queue)
    messages.success(request, f"Asked the worker on {hv.queue} to list its clone domains; reload in a moment.")
    return redirect("rehearsals:hypervisors")


@login_required
@require_POST
def hypervisor_destroy_leftover(request, pk: int):
    from workers.tasks import destroy_leftover

    require_operator(request.user)
    hv = get_object_or_404(Hypervisor, pk=pk)
    name = request.POST.get("domain", "")
    if name not in {d["name"] for d in (hv.last_scan or {}).get("domains", []) if d.get("leftover")}:
        messages.error(request, f"{name!r} is not a leftover clone of {hv} (scan again?)")
    else:
        destroy_leftover.apply_async(args=[hv.pk, name], queue=hv.queue)
        messages.success(request, f"Destroying leftover {name} on {hv}.")
    return redirect("rehearsals:hypervisors")
