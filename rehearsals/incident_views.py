"""The incident pages. They live here, not in ``incidents``, because they show the
incident's runs and its audit timeline, which sit in this app above it; state
changes go through ``incident_lifecycle`` and ``transitions``."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.roles import require_operator, require_reader
from incidents.forms import IncidentForm
from incidents.models import Incident

from . import incident_lifecycle, transitions
from .errors import TransitionError
from .forms import CloseIncidentForm, NewRehearsalForm


@login_required
def incident_list(request):
    require_reader(request.user)
    incidents = Incident.objects.select_related("production_host").prefetch_related("rehearsals")
    return render(request, "incidents/list.html", {"incidents": incidents})


@login_required
def incident_create(request):
    require_operator(request.user)
    form = IncidentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        incident = incident_lifecycle.open_incident(form.save(commit=False), request.user)
        return redirect(incident)
    return render(request, "incidents/form.html", {"form": form})


@login_required
def incident_detail(request, pk: int):
    require_reader(request.user)
    incident = get_object_or_404(Incident.objects.select_related("production_host"), pk=pk)
    return render(request, "incidents/detail.html", {
        "incident": incident,
        "rehearsals": incident.rehearsals.select_related("runbook", "hypervisor"),
        "timeline": incident.timeline.select_related("actor"),
        "form": NewRehearsalForm(incident=incident), "close_form": CloseIncidentForm(),
    })


@login_required
@require_POST
def incident_close(request, pk: int):
    incident = get_object_or_404(Incident, pk=pk)
    try:
        incident_lifecycle.close_incident(incident, request.user, note=request.POST.get("note", ""))
        messages.success(request, f"Closed incident #{incident.pk}")
    except TransitionError as exc:
        messages.error(request, str(exc))
    return redirect(incident)


@login_required
@require_POST
def rehearsal_create(request, pk: int):
    require_operator(request.user)
    incident = get_object_or_404(Incident, pk=pk)
    form = NewRehearsalForm(request.POST, incident=incident)
    if not form.is_valid():
        messages.error(request, f"Could not create the rehearsal: {form.errors.as_text()}")
        return redirect(incident)
    try:
        rehearsal = transitions.create_rehearsal(incident, form.cleaned_data["runbook"],
                                                 form.cleaned_data["hypervisor"], request.user,
                                                 mode=form.cleaned_data["mode"],
                                                 keep_clone=form.cleaned_data["keep_clone"],
                                                 continues_from=form.cleaned_data["continues_from"],
                                                 override_reason=form.cleaned_data["override_reason"])
    except TransitionError as exc:
        messages.error(request, str(exc))
        return redirect(incident)
    return redirect(rehearsal)
