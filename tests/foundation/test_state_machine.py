"""The rehearsal state machine: legal paths, illegal transitions, four-eyes, audit."""
import pytest
from django.core.exceptions import PermissionDenied

from rehearsals import transitions
from rehearsals.models import Approval, Rehearsal, StepRun, TimelineEntry

MANUAL = {"kind": "manual", "params": {"instructions": "look at the dashboards"}}
APPROVED_MANUAL = {**MANUAL, "needs_approval": True, "title": "approved manual"}
S = StepRun.Status


def test_start_runs_first_step_and_records_who(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL, MANUAL])
    run = transitions.start(r, users["alice"])
    r.refresh_from_db()
    assert r.status == Rehearsal.Status.RUNNING and r.started_at
    assert run.status == S.AWAITING_CONFIRMATION and run.step.position == 1
    actions = list(TimelineEntry.objects.filter(rehearsal=r).values_list("action", "actor__username"))
    assert ("rehearsal.started", "alice") in actions
    assert ("step.awaiting_confirmation", "alice") in actions


def test_start_twice_is_refused_clearly(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    transitions.start(r, users["alice"])
    with pytest.raises(transitions.TransitionError, match="only a rehearsal that has not started"):
        transitions.start(r, users["alice"])


def test_confirm_needs_a_note_and_completes_the_rehearsal(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    run = transitions.start(r, users["alice"])
    with pytest.raises(transitions.TransitionError, match="needs a note"):
        transitions.confirm(run, users["bob"], note="  ")
    transitions.confirm(run, users["bob"], note="dashboards green")
    r.refresh_from_db()
    assert r.status == Rehearsal.Status.SUCCEEDED
    assert StepRun.objects.get(pk=run.pk).result == {"confirmed_by": "bob", "note": "dashboards green"}
    assert TimelineEntry.objects.filter(rehearsal=r, action="rehearsal.succeeded").exists()


def test_advance_refused_while_a_step_waits(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL, MANUAL])
    transitions.start(r, users["alice"])
    with pytest.raises(transitions.TransitionError, match="wait for it to finish"):
        transitions.advance(r, users["alice"])


def test_four_eyes_requester_cannot_approve(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [APPROVED_MANUAL])
    run = transitions.start(r, users["alice"])
    assert run.status == S.AWAITING_APPROVAL
    with pytest.raises(transitions.FourEyesViolation, match="cannot also approve"):
        transitions.approve(run, users["alice"])
    assert StepRun.objects.get(pk=run.pk).status == S.AWAITING_APPROVAL
    approval = transitions.approve(run, users["bob"], note="plan looks right")
    assert approval.approver == users["bob"] and approval.decision == Approval.Decision.APPROVED
    assert StepRun.objects.get(pk=run.pk).status == S.AWAITING_CONFIRMATION
    with pytest.raises(transitions.TransitionError, match="not awaiting approval"):
        transitions.approve(run, users["bob"])


def test_rejection_fails_the_step_and_retry_asks_again(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [APPROVED_MANUAL])
    run = transitions.start(r, users["alice"])
    transitions.approve(run, users["bob"], approve=False, note="wrong files")
    run.refresh_from_db()
    assert run.status == S.FAILED and "rejected by bob: wrong files" in run.error
    with pytest.raises(transitions.TransitionError, match="failed; retry or skip"):
        transitions.advance(r, users["alice"])
    again = transitions.retry(run, users["alice"])
    assert again.attempt == 2 and again.status == S.AWAITING_APPROVAL
    with pytest.raises(transitions.TransitionError, match="not the latest attempt"):
        transitions.retry(run, users["alice"])


def test_skip_needs_a_note_and_only_the_next_step(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL, MANUAL])
    transitions.start(r, users["alice"])
    second = r.runbook.steps.get(position=2)
    with pytest.raises(transitions.TransitionError, match="only the next step"):
        transitions.skip(r, second, users["alice"], note="x")
    first = r.runbook.steps.get(position=1)
    with pytest.raises(transitions.TransitionError, match="needs a note"):
        transitions.skip(r, first, users["alice"], note="")
    transitions.skip(r, first, users["alice"], note="done by hand")
    assert transitions.next_step(r) == second


def test_cancel_stops_active_steps_and_is_final(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [MANUAL])
    run = transitions.start(r, users["alice"])
    transitions.cancel(r, users["bob"], note="wrong host")
    run.refresh_from_db()
    r.refresh_from_db()
    assert run.status == S.CANCELLED and r.status == Rehearsal.Status.CANCELLED
    with pytest.raises(transitions.TransitionError, match="already cancelled"):
        transitions.cancel(r, users["bob"])
    with pytest.raises(transitions.TransitionError, match="steps can only be run while it is running"):
        transitions.advance(r, users["alice"])


def test_managers_cannot_change_anything(make_rehearsal, host_row, users):
    r = make_rehearsal(host_row, [APPROVED_MANUAL])
    mona = users["mona"]
    with pytest.raises(PermissionDenied):
        transitions.start(r, mona)
    run = transitions.start(r, users["alice"])
    for attempt in (lambda: transitions.approve(run, mona), lambda: transitions.cancel(r, mona),
                    lambda: transitions.skip(r, run.step, mona, note="x"), lambda: transitions.advance(r, mona)):
        with pytest.raises(PermissionDenied):
            attempt()
    assert StepRun.objects.get(pk=run.pk).status == S.AWAITING_APPROVAL
