"""The database half of "one writer per production host": a rollback or a sync-back attempt is
refused, with the reason, while another writer on the same production host is active."""
from __future__ import annotations

import pytest

from rehearsals import transitions
from rehearsals.errors import TransitionError
from rehearsals.models import Approval, StepRun, SyncJournalEntry
from steps.sync_back.actions import request_rollback

S = StepRun.Status
SYNC = [{"kind": "sync_back", "title": "sync back", "needs_approval": True}]


def sync_run(make_production_run, host, status, **kw):
    rehearsal = make_production_run(host, SYNC)
    return StepRun.objects.create(rehearsal=rehearsal, step=rehearsal.runbook.steps.get(), status=status, **kw)


def wrote_something(run):
    SyncJournalEntry.objects.create(step_run=run, run_id="r", path="/srv/x", state="done", detail={})


def test_a_rollback_requested_while_a_sync_back_runs_on_that_host_is_refused(make_production_run, host_row, users):
    running = sync_run(make_production_run, host_row, S.RUNNING)
    finished = sync_run(make_production_run, host_row, S.SUCCEEDED)
    wrote_something(finished)
    with pytest.raises(TransitionError) as refused:
        request_rollback(finished, users["alice"], note="restore the originals")
    text = str(refused.value)
    assert text.startswith("refusing to roll back this sync-back: step 1 (sync back) of rehearsal "
                           f"#{running.rehearsal_id} is running and writes to {host_row}")
    assert "rollback_state" not in (StepRun.objects.get(pk=finished.pk).result or {})


def test_a_double_click_queues_one_rollback(make_production_run, host_row, users):
    finished = sync_run(make_production_run, host_row, S.SUCCEEDED)
    wrote_something(finished)
    request_rollback(finished, users["alice"], note="first click")
    assert StepRun.objects.get(pk=finished.pk).result["rollback_state"]["state"] == "queued"
    with pytest.raises(TransitionError, match="a rollback of this sync-back is queued since"):
        request_rollback(finished, users["bob"], note="second click")


def test_a_sync_back_attempt_waits_for_a_rollback_on_the_same_host(make_production_run, host_row, users):
    finished = sync_run(make_production_run, host_row, S.SUCCEEDED)
    wrote_something(finished)
    request_rollback(finished, users["alice"], note="undo it")
    other = sync_run(make_production_run, host_row, S.AWAITING_APPROVAL)
    Approval.objects.create(step_run=other, requested_by=users["alice"], plan={"fingerprint": "x"})
    with pytest.raises(TransitionError, match=r"refusing to start step 1 \(sync back\): a rollback of step 1"):
        transitions.approve(other, users["bob"])
    assert StepRun.objects.get(pk=other.pk).status == S.AWAITING_APPROVAL
