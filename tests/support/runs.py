"""Waiting for real workers: poll a condition, run one step to its end."""
from __future__ import annotations

import time


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def run_step_to_end(rehearsal, user, timeout: float = 60):
    """Start (or advance) a rehearsal and wait for the step's worker to finish it."""
    from rehearsals import transitions
    from rehearsals.models import Rehearsal, StepRun

    rehearsal.refresh_from_db()
    if rehearsal.status == Rehearsal.Status.PENDING:
        run = transitions.start(rehearsal, user)
    else:
        run = transitions.advance(rehearsal, user)
    final = {StepRun.Status.SUCCEEDED, StepRun.Status.FAILED}
    wait_until(lambda: StepRun.objects.get(pk=run.pk).status in final, timeout=timeout)
    run = StepRun.objects.get(pk=run.pk)
    assert run.status in final, f"step still {run.status} after {timeout}s"
    return run
