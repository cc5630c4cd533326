"""HTML views for operators: thin; state changes go through rehearsals.actions."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.roles import require_reader
from inventory.models import Hypervisor

from . import actions, transitions
from .models import Clone, Rehearsal, StepRun, TimelineEntry
from .state import rehearsal_state


@login_required
def rehearsal_detail(request, pk: int):
    require_reader(request.user)
    rehearsal = get_object_or_404(Rehearsal.objects.select_related("incident", "runbook", "hypervisor"), pk=pk)
    return render(request, "rehearsals/detail.html", {
        "rehearsal": rehearsal, "state": rehearsal_state(rehearsal, request.user),
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
        # a dress rehearsal's workbench and stand-in are listed together, workbench first
        clones = Clone.objects.filter(hypervisor=hv).exclude(status=Clone.Status.DESTROYED).select_related(
            "rehearsal").order_by("rehearsal_id", "-role")
        queue = StepRun.objects.filter(rehearsal__hypervisor=hv, status__in=StepRun.ACTIVE).select_related(
            "step", "rehearsal").order_by("queued_at", "pk")
        hypervisors.append({"hv": hv, "clones": clones, "scan": (hv.last_scan or {}).get("domains", []),
                            "capacity": (hv.last_scan or {}).get("capacity"), "queue": queue})
    audit = TimelineEntry.objects.filter(action__startswith="hypervisor.").select_related("actor").order_by(
        "-at", "-pk")[:20]
    return render(request, "rehearsals/hypervisors.html", {"hypervisors": hypervisors, "audit": audit})


@login_required
@require_POST
def hypervisor_scan(request, pk: int):
    hv = get_object_or_404(Hypervisor, pk=pk)
    transitions.scan_hypervisor(hv, request.user)
    messages.success(request, f"Asked the worker on {hv.queue} to list its clone domains; reload in a moment.")
    return redirect("rehearsals:hypervisors")


@login_required
@require_POST
def hypervisor_destroy_leftover(request, pk: int):
    hv = get_object_or_404(Hypervisor, pk=pk)
    name = request.POST.get("domain", "")
    try:
        transitions.destroy_leftover(hv, name, request.user)
        messages.success(request, f"Destroying leftover {name} on {hv}.")
    except transitions.TransitionError as exc:
        messages.error(request, str(exc))
    return redirect("rehearsals:hypervisors")
