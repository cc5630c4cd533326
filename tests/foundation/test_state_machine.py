"""The rehearsal state machine: legal paths, illegal transitions, four-eyes, audit."""
import pytest
from django.core.exceptions import PermissionDenied

from incidents.models import TimelineEntry
from rehearsals import services
from rehearsals.models import Approval, Rehearsal, StepRun

MANUAL = {"kind": "manual", "params": {"instructions": "look at the dashboards"}}
APPROVED_MANUAL = {**MANUAL, "needs_approval": True, "title": "approved manual"}
S = StepRun.Status


def test_start_runs_first_step_and_records_who(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL, MANUAL])
    run = services.start(r, users["alice"])
    r.refresh_from_db()
    assert r.status == Rehearsal.Status.RUNNING and r.started_at
    assert run.status == S.AWAITING_CONFIRMATION and run.step.position == 1
    actions = list(TimelineEntry.objects.filter(rehearsal=r).values_list("action", "actor__username"))
    assert ("rehearsal.started", "alice") in actions
    assert ("step.awaiting_confirmation", "alice") in actions


def test_start_twice_is_refused_clearly(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    services.start(r, users["alice"])
    with pytest.raises(services.TransitionError, match="only a rehearsal that has not started"):
        services.start(r, users["alice"])


def test_confirm_needs_a_note_and_completes_the_rehearsal(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    run = services.start(r, users["alice"])
    with pytest.raises(services.TransitionError, match="needs a note"):
        services.confirm(run, users["bob"], note="  ")
    services.confirm(run, users["bob"], note="dashboards green")
    r.refresh_from_db()
    assert r.status == Rehearsal.Status.SUCCEEDED
    assert StepRun.objects.get(pk=run.pk).result == {"confirmed_by": "bob", "note": "dashboards green"}
    assert TimelineEntry.objects.filter(rehearsal=r, action="rehearsal.succeeded").exists()


def test_advance_refused_while_a_step_waits(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL, MANUAL])
    services.start(r, users["alice"])
    with pytest.raises(services.TransitionError, match="wait for it to finish"):
        services.advance(r, users["alice"])


def test_four_eyes_requester_cannot_approve(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [APPROVED_MANUAL])
    run = services.start(r, users["alice"])
    assert run.status == S.AWAITING_APPROVAL
    with pytest.raises(services.FourEyesViolation, match="cannot also approve"):
        services.approve(run, users["alice"])
    assert StepRun.objects.get(pk=run.pk).status == S.AWAITING_APPROVAL
    approval = services.approve(run, users["bob"], note="plan looks right")
    assert approval.approver == users["bob"] and approval.decision == Approval.Decision.APPROVED
    assert StepRun.objects.get(pk=run.pk).status == S.AWAITING_CONFIRMATION
    with pytest.raises(services.TransitionError, match="not awaiting approval"):
        services.approve(run, users["bob"])


def test_rejection_fails_the_step_and_retry_asks_again(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [APPROVED_MANUAL])
    run = services.start(r, users["alice"])
    services.approve(run, users["bob"], approve=False, note="wrong files")
    run.refresh_from_db()
    assert run.status == S.FAILED and "rejected by bob: wrong files" in run.error
    with pytest.raises(services.TransitionError, match="failed; retry or skip"):
        services.advance(r, users["alice"])
    again = services.retry(run, users["alice"])
    assert again.attempt == 2 and again.status == S.AWAITING_APPROVAL
    with pytest.raises(services.TransitionError, match="not the latest attempt"):
        services.retry(run, users["alice"])


def test_skip_needs_a_note_and_only_the_next_step(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL, MANUAL])
    services.start(r, users["alice"])
    second = r.runbook.steps.get(position=2)
    with pytest.raises(services.TransitionError, match="only the next step"):
        services.skip(r, second, users["alice"], note="x")
    first = r.runbook.steps.get(position=1)
    with pytest.raises(services.TransitionError, match="needs a note"):
        services.skip(r, first, users["alice"], note="")
    services.skip(r, first, users["alice"], note="done by hand")
    assert services.next_step(r) == second


def test_cancel_stops_active_steps_and_is_final(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    run = services.start(r, users["alice"])
    services.cancel(r, users["bob"], note="wrong host")
    run.refresh_from_db()
    r.refresh_from_db()
    assert run.status == S.CANCELLED and r.status == Rehearsal.Status.CANCELLED
    with pytest.raises(services.TransitionError, match="already cancelled"):
        services.cancel(r, users["bob"])
    with pytest.raises(services.TransitionError, match="steps can only be run while it is running"):
        services.advance(r, users["alice"])


def test_managers_cannot_change_anything(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [APPROVED_MANUAL])
    mona = users["mona"]
    with pytest.raises(PermissionDenied):
        services.start(r, mona)
    run = services.start(r, users["alice"])
    for attempt in (lambda: services.approve(run, mona), lambda: services.cancel(r, mona),
                    lambda: services.skip(r, run.step, mona, note="x"), lambda: services.advance(r, mona)):
        with pytest.raises(PermissionDenied):
            attempt()
    assert StepRun.objects.get(pk=run.pk).status == S.AWAITING_APPROVAL
