"""Leases and idempotency of the step task, on whatever database the tests run on: a task for another
attempt or for a run that already ran does nothing; the heartbeat renews a lease; the reaper fails a
run whose lease expired (and only that one), the failure is on the timeline and the step can be retried;
the embedded default's reaper loop runs beside the in-process worker."""
import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from rehearsals import transitions
from rehearsals.jobs import execute_step_run
from rehearsals.leases import Heartbeat, reap_expired_leases
from rehearsals.models import StepRun, TimelineEntry
from tests.support.runs import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
S = StepRun.Status
STEP = {"kind": "command", "params": {"command": "true"}}


def _running(run, *, worker="hv-a@box", expires_in: float):
    now = timezone.now()
    StepRun.objects.filter(pk=run.pk).update(status=S.RUNNING, started_at=now - timedelta(seconds=60), worker=worker,
                                             heartbeat_at=now - timedelta(seconds=45),
                                             lease_expires_at=now + timedelta(seconds=expires_in))
    return StepRun.objects.get(pk=run.pk)


def test_a_task_for_another_attempt_or_a_run_already_running_does_nothing(make_rehearsal, host_row, users):
    run = transitions.start(make_rehearsal(host_row, [STEP]), users["alice"])
    assert execute_step_run(run.pk, attempt=run.attempt + 1) == "not-run"
    assert StepRun.objects.get(pk=run.pk).status == S.QUEUED
    _running(run, expires_in=30)
    assert execute_step_run(run.pk, attempt=run.attempt) == "not-run"  # redelivered while it runs elsewhere
    again = StepRun.objects.get(pk=run.pk)
    assert again.status == S.RUNNING and again.worker == "hv-a@box"


def test_the_reaper_fails_an_expired_lease_only_and_the_step_can_be_retried(make_rehearsal, host_row, users):
    lost = transitions.start(make_rehearsal(host_row, [STEP]), users["alice"])
    alive = transitions.start(make_rehearsal(host_row, [STEP]), users["alice"])
    _running(lost, expires_in=-1)
    _running(alive, expires_in=30)
    assert [r.pk for r in reap_expired_leases()] == [lost.pk]
    lost, alive = StepRun.objects.get(pk=lost.pk), StepRun.objects.get(pk=alive.pk)
    assert alive.status == S.RUNNING
    assert lost.status == S.FAILED and lost.finished_at and lost.lease_expires_at is None
    assert lost.error.startswith("worker lost (no heartbeat since ") and "hv-a@box" in lost.error
    entry = TimelineEntry.objects.get(step_run=lost, action="step.worker_lost")
    assert "worker lost" in entry.message
    assert reap_expired_leases() == []  # once
    retried = transitions.retry(lost, users["bob"])
    assert retried.attempt == 2 and retried.status == S.QUEUED
    assert execute_step_run(lost.pk, attempt=1) == "not-run"  # the lost attempt's task, redelivered later
    assert StepRun.objects.get(pk=lost.pk).status == S.FAILED


@override_settings(UNDERSTUDY_LEASE_SECONDS=1.5)
def test_the_heartbeat_renews_the_lease_until_it_stops(make_rehearsal, host_row, users):
    run = _running(transitions.start(make_rehearsal(host_row, [STEP]), users["alice"]), expires_in=1.5)
    first = run.lease_expires_at
    with Heartbeat(run.pk, "hv-a@box"):
        time.sleep(2.5)
        assert reap_expired_leases() == []
    renewed = StepRun.objects.get(pk=run.pk)
    assert renewed.lease_expires_at > first and renewed.status == S.RUNNING
    time.sleep(1.6)
    assert [r.pk for r in reap_expired_leases()] == [run.pk]


def test_manage_py_reap_expired_leases(make_rehearsal, host_row, users, capsys):
    run = _running(transitions.start(make_rehearsal(host_row, [STEP]), users["alice"]), expires_in=-1)
    call_command("reap_expired_leases")
    assert f"step run {run.pk}" in capsys.readouterr().out
    assert StepRun.objects.get(pk=run.pk).status == S.FAILED


def test_the_embedded_reaper_loop_runs_beside_the_in_process_worker(make_rehearsal, host_row, users, settings):
    from django.conf import settings as live

    if live.REDIS_URL:
        pytest.skip("the full stack reaps with Celery beat (test_killed_worker_leaves_no_step_running)")
    from workers.inprocess import start_inprocess_worker

    settings.UNDERSTUDY_REAPER_SECONDS = 0.5
    start_inprocess_worker(["workers-embedded-reaper"])
    assert any(t.name == "lease-reaper" and t.is_alive() for t in threading.enumerate())
    run = _running(transitions.start(make_rehearsal(host_row, [STEP]), users["alice"]), expires_in=-1)
    # the loop may be in the middle of a wait of the default interval when the setting changes
    assert wait_until(lambda: StepRun.objects.get(pk=run.pk).status == S.FAILED, timeout=12)
