from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from rehearsals import services
from rehearsals.permissions import require_operator, require_reader

from .forms import IncidentForm, NewRehearsalForm
from .models import Incident


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
        incident = form.save(commit=False)
        incident.opened_by = request.user
        incident.save()
        services.record(incident, request.user, "incident.opened", f"Opened incident: {incident.title}")
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
        "form": NewRehearsalForm(),
    })


@login_required
@require_POST
def rehearsal_create(request, pk: int):
    require_operator(request.user)
    incident = get_object_or_404(Incident, pk=pk)
    form = NewRehearsalForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Could not create the rehearsal: {form.errors.as_text()}")
        return redirect(incident)
    try:
        rehearsal = services.create_rehearsal(incident, form.cleaned_data["runbook"], form.cleaned_data["hypervisor"],
                                              request.user, mode=form.cleaned_data["mode"],
                                              keep_clone=form.cleaned_data["keep_clone"])
    except services.TransitionError as exc:
        messages.error(request, str(exc))
        return redirect(incident)
    return redirect(rehearsal)
