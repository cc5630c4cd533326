"""The incident's lifecycle, driven by what happens to its runs, each change on the timeline.

    open -(a run starts)-> mitigating -(no run is active any more)-> open
    mitigating -(a production run's "service re-enabled" step succeeds)-> resolved
    resolved -(another run starts)-> mitigating
    open | resolved -(a person closes it, with a note)-> closed

The rule of which change is allowed is ``Incident.move_to``; this module decides
when, and records each change.
"""
from __future__ import annotations

from django.db import transaction

from accounts.roles import require_operator
from incidents.models import Incident
from runbooks.models import StepSpec

from .audit import record
from .errors import TransitionError
from .models import Rehearsal, StepRun

Status = Incident.Status


def _lock(incident_id: int) -> Incident:
    return Incident.objects.select_for_update().get(pk=incident_id)


@transaction.atomic
def open_incident(incident: Incident, user) -> Incident:
    """Save a new incident (from the form) and put its opening on the timeline."""
    require_operator(user)
    incident.opened_by = user
    incident.status = Status.OPEN
    incident.save()
    record(incident, user, "incident.opened", f"Opened incident: {incident.title}")
    return incident


@transaction.atomic
def close_incident(incident: Incident, user, *, note: str) -> Incident:
    require_operator(user)
    incident = _lock(incident.pk)
    if not note.strip():
        raise TransitionError("closing an incident needs a note saying why (it goes into the report)")
    if incident.status == Status.MITIGATING:
        raise TransitionError(f"incident #{incident.pk} has a run in progress; finish or cancel it first")
    try:
        incident.move_to(Status.CLOSED)
    except ValueError as exc:
        raise TransitionError(str(exc)) from exc
    record(incident, user, "incident.closed", f"Closed the incident: {note}")
    return incident


def ensure_open_for_runs(incident: Incident) -> None:
    if incident.status == Status.CLOSED:
        raise TransitionError(f"incident #{incident.pk} is closed; open a new incident to rehearse again")


def run_started(rehearsal: Rehearsal) -> None:
    incident = _lock(rehearsal.incident_id)
    ensure_open_for_runs(incident)
    if incident.status in {Status.OPEN, Status.RESOLVED}:
        incident.move_to(Status.MITIGATING)
        record(incident, None, "incident.mitigating",
               f"Mitigating: {rehearsal.get_mode_display()} #{rehearsal.pk} started", rehearsal=rehearsal)


def run_ended(rehearsal: Rehearsal) -> None:
    incident = _lock(rehearsal.incident_id)
    still_active = incident.rehearsals.filter(status=Rehearsal.Status.RUNNING).exclude(pk=rehearsal.pk).exists()
    if incident.status == Status.MITIGATING and not still_active:
        incident.move_to(Status.OPEN)
        record(incident, None, "incident.reopened",
               f"Open again: #{rehearsal.pk} ended ({rehearsal.get_status_display().lower()}) and no other run "
               f"is active; only a production run that re-enables the service resolves the incident",
               rehearsal=rehearsal)


def step_succeeded(run: StepRun) -> None:
    """A production run's "service re-enabled" milestone resolves the incident."""
    rehearsal = run.rehearsal
    if run.step.milestone != StepSpec.Milestone.SERVICE_RESTORED or rehearsal.mode != Rehearsal.Mode.PRODUCTION:
        return
    incident = _lock(rehearsal.incident_id)
    if incident.can_move_to(Status.RESOLVED):
        incident.move_to(Status.RESOLVED)
        record(incident, None, "incident.resolved",
               f"Resolved: step {run.step.position} ({run.step.title}) re-enabled the service in production",
               rehearsal=rehearsal, step_run=run)
