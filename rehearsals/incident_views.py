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
from runbooks.views import steps_of

from . import incident_lifecycle, transitions
from .errors import TransitionError
from .forms import CloseIncidentForm, IncidentFilterForm, NewRehearsalForm


@login_required
def incident_list(request):
    require_reader(request.user)
    filters = IncidentFilterForm(request.GET or None)
    incidents = Incident.objects.select_related("production_host").prefetch_related("rehearsals")
    if filters.is_valid():
        incidents = filters.apply(incidents)
    return render(request, "incidents/list.html", {"incidents": incidents, "filters": filters})


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
        "close_form": CloseIncidentForm(),
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
def rehearsal_create(request, pk: int):
    """The new-rehearsal page: the form, the chosen runbook version's steps, and the refusal of
    ``transitions.create_rehearsal`` (which holds every rule) shown inline."""
    require_operator(request.user)
    incident = get_object_or_404(Incident, pk=pk)
    form = NewRehearsalForm(request.POST or None, incident=incident,
                            initial={"runbook": request.GET.get("runbook")})
    if request.method == "POST" and form.is_valid():
        try:
            rehearsal = transitions.create_rehearsal(incident, form.cleaned_data["runbook"],
                                                     form.cleaned_data["hypervisor"], request.user,
                                                     mode=form.cleaned_data["mode"],
                                                     keep_clone=form.cleaned_data["keep_clone"],
                                                     continues_from=form.cleaned_data["continues_from"],
                                                     override_reason=form.cleaned_data["override_reason"])
        except TransitionError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Created {rehearsal.kind_label.lower()} #{rehearsal.pk}")
            return redirect(rehearsal)
    runbook = form.selected_runbook()
    return render(request, "rehearsals/new.html", {
        "incident": incident, "form": form, "runbook": runbook,
        "steps": steps_of(runbook) if runbook else [],
    }, status=200 if request.method == "GET" or form.is_valid() else 400)
