"""A worker process killed (SIGKILL) in the middle of a command step: its lease is not renewed,
the reaper (Celery beat in a second worker process) fails the step with "worker lost" within the
lease time plus one reaper interval, and a retry on a fresh worker runs it to the end."""
import time

import pytest

from rehearsals import transitions
from rehearsals.models import StepRun, TimelineEntry
from tests.support.runs import wait_until
from tests.support.workers import LeaseRig, require_full_stack

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fullstack]
S = StepRun.Status
LEASE, REAPER = 3, 1


def test_a_killed_worker_leaves_its_step_failed_and_retryable(make_production_run, prod_host_row, production_host,
                                                              users, tmp_path):
    require_full_stack()
    with LeaseRig("workers-hv", tmp_path, lease=LEASE, reaper=REAPER) as rig:
        tag, hv, first = rig.tag, rig.hypervisor, rig.first
        # The first attempt sleeps (it is killed there); the retry finds the mark and finishes.
        command = (f"if [ -e /tmp/second-{tag} ]; then echo second attempt; else touch /tmp/second-{tag}; "
                   f"echo first attempt; sleep 600; fi")
        r = make_production_run(prod_host_row, [{"kind": "command", "params": {"command": command,
                                                                               "timeout": 900}}], on=hv)
        run = transitions.start(r, users["alice"])
        assert wait_until(lambda: StepRun.objects.get(pk=run.pk).status == S.RUNNING, timeout=30)
        assert wait_until(lambda: production_host.run(f"test -e /tmp/second-{tag}", check=False).returncode == 0,
                          timeout=30), "the command never started"
        time.sleep(LEASE)  # a few renewals: the lease is held while the worker lives
        running = StepRun.objects.get(pk=run.pk)
        assert running.status == S.RUNNING and running.worker == f"first-{tag}@{running.worker.split('@', 1)[1]}"
        assert running.lease_expires_at > running.heartbeat_at > running.started_at

        first.kill()
        killed_at = time.monotonic()
        assert wait_until(lambda: StepRun.objects.get(pk=run.pk).status == S.FAILED, timeout=LEASE + REAPER + 10)
        took = time.monotonic() - killed_at
        lost = StepRun.objects.get(pk=run.pk)
        assert lost.error.startswith("worker lost (no heartbeat since "), lost.error
        # the lease runs at most LEASE past the kill, the reaper comes within REAPER after; 1 s of slack for beat
        assert took <= LEASE + REAPER + 1.5, f"the step was declared lost {took:.1f}s after the kill"
        assert TimelineEntry.objects.filter(step_run=lost, action="step.worker_lost").exists()

        rig.start_fresh()
        retried = transitions.retry(lost, users["alice"])
        assert retried.attempt == 2
        assert wait_until(lambda: StepRun.objects.get(pk=retried.pk).status in {S.SUCCEEDED, S.FAILED}, timeout=30)
        retried = StepRun.objects.get(pk=retried.pk)
        assert retried.status == S.SUCCEEDED, retried.error
        assert retried.worker.startswith(f"fresh-{tag}@") and retried.lease_expires_at is None
        assert "second attempt" in "".join(e.payload.get("line", "") for e in retried.events.all())
        assert StepRun.objects.get(pk=lost.pk).status == S.FAILED  # the lost attempt stays as it was
