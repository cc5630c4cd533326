"""The incident's status follows its runs: open -> mitigating while a run is active ->
resolved when a production run re-enables the service -> closed by a person; each
change is on the timeline."""
import pytest

from incidents.models import Incident
from rehearsals import incident_lifecycle, transitions
from rehearsals.models import TimelineEntry

MANUAL = {"kind": "manual", "params": {"instructions": "look at the dashboards"}}
RESTORE = {"kind": "manual", "title": "Re-enable the service", "milestone": "service_restored",
           "params": {"instructions": "start it and watch it"}}


def actions(incident):
    return list(TimelineEntry.objects.filter(incident=incident, action__startswith="incident.")
                .order_by("at", "pk").values_list("action", flat=True))


def confirm_all(rehearsal, user):
    for _ in range(rehearsal.runbook.steps.count()):
        run = rehearsal.step_runs.order_by("-pk").first()
        transitions.confirm(run, user, note="checked")
        rehearsal.refresh_from_db()
        if rehearsal.status == rehearsal.Status.RUNNING:
            transitions.advance(rehearsal, user)


def test_opening_an_incident_is_on_the_timeline(users, host_row):
    incident = incident_lifecycle.open_incident(
        Incident(title="minidb down", production_host=host_row, broken_service="minidb"), users["alice"])
    assert incident.status == Incident.Status.OPEN and incident.opened_by == users["alice"]
    assert actions(incident) == ["incident.opened"]


def test_a_run_makes_the_incident_mitigating_and_cancelling_it_opens_it_again(make_rehearsal, host_row, users):
    rehearsal = make_rehearsal(host_row, [MANUAL])
    incident = rehearsal.incident
    transitions.start(rehearsal, users["alice"])
    incident.refresh_from_db()
    assert incident.status == Incident.Status.MITIGATING
    transitions.cancel(rehearsal, users["alice"], note="wrong runbook")
    incident.refresh_from_db()
    assert incident.status == Incident.Status.OPEN
    assert actions(incident) == ["incident.mitigating", "incident.reopened"]


def test_a_production_run_that_re_enables_the_service_resolves_the_incident(make_rehearsal, host_row, users):
    rehearsal = make_rehearsal(host_row, [MANUAL, RESTORE], mode="production", override_reason="state machine test: no VM here")
    incident = rehearsal.incident
    transitions.start(rehearsal, users["alice"])
    confirm_all(rehearsal, users["alice"])
    incident.refresh_from_db()
    rehearsal.refresh_from_db()
    assert rehearsal.status == rehearsal.Status.SUCCEEDED
    assert incident.status == Incident.Status.RESOLVED and incident.resolved_at is not None
    assert actions(incident) == ["incident.mitigating", "incident.resolved"]
    resolved = TimelineEntry.objects.get(incident=incident, action="incident.resolved")
    assert resolved.step_run.step.title == "Re-enable the service"


def test_a_dress_rehearsal_does_not_resolve_the_incident(make_rehearsal, host_row, users):
    rehearsal = make_rehearsal(host_row, [RESTORE], mode="rehearsal")
    transitions.start(rehearsal, users["alice"])
    confirm_all(rehearsal, users["alice"])
    incident = Incident.objects.get(pk=rehearsal.incident_id)
    assert incident.status == Incident.Status.OPEN and incident.resolved_at is None
    assert actions(incident) == ["incident.mitigating", "incident.reopened"]


def test_a_person_closes_a_resolved_incident_with_a_note_and_no_run_starts_after(make_rehearsal, host_row, users,
                                                                                 hypervisor):
    rehearsal = make_rehearsal(host_row, [RESTORE], mode="production", override_reason="state machine test: no VM here")
    incident = rehearsal.incident
    transitions.start(rehearsal, users["alice"])
    with pytest.raises(transitions.TransitionError, match="run in progress"):
        incident_lifecycle.close_incident(incident, users["bob"], note="done")
    confirm_all(rehearsal, users["alice"])
    with pytest.raises(transitions.TransitionError, match="needs a note"):
        incident_lifecycle.close_incident(incident, users["bob"], note="  ")
    incident_lifecycle.close_incident(incident, users["bob"], note="vendor confirmed the fix")
    incident.refresh_from_db()
    assert incident.status == Incident.Status.CLOSED and incident.closed_at is not None
    closed = TimelineEntry.objects.get(incident=incident, action="incident.closed")
    assert closed.actor == users["bob"] and "vendor confirmed the fix" in closed.message
    with pytest.raises(transitions.TransitionError, match="closed"):
        transitions.create_rehearsal(incident, rehearsal.runbook, hypervisor, users["alice"])


def test_managers_cannot_close_an_incident(make_rehearsal, host_row, users):
    from django.core.exceptions import PermissionDenied

    rehearsal = make_rehearsal(host_row, [MANUAL])
    with pytest.raises(PermissionDenied):
        incident_lifecycle.close_incident(rehearsal.incident, users["mona"], note="not mine to close")
    assert Incident.objects.get(pk=rehearsal.incident_id).status == Incident.Status.OPEN
