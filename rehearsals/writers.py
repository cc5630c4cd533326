"""One writer at a time per production host, and cancellation that reaches the engines.

The database half of "one writer": before a writing step run (a kind with
``writes_production``) is queued, or a rollback job of one, every other writing
step run and rollback of a production run on the same production host is looked
at; an active one refuses the new writer with the reason. A dress rehearsal writes
only its own stand-in, so only its own writers can meet there. The other half is on production: the
sync agent takes a non-blocking flock there (``workers/engines/agent/syncagent.py``),
which also catches writers this database does not know about.

A rollback is a job, not a step-run status: it is marked on the run's result
(``result["rollback_state"]["state"]``: queued, running, then done or failed; the
rollback's outcome itself is ``result["rollback"]``, written when it ends).
"""
from __future__ import annotations

import threading
from typing import Callable

from django.db import connection
from django.utils import timezone

from runbooks.kinds import registry

from .errors import TransitionError
from .models import Rehearsal, StepRun

S = StepRun.Status
ACTIVE_WRITER = (S.QUEUED, S.RUNNING)
ROLLBACK_ACTIVE = ("queued", "running")


def writing_kinds() -> list[str]:
    return [k.name for k in registry.all() if k.writes_production]


def refuse_other_writers(step_run: StepRun, *, doing: str) -> None:
    """``TransitionError`` if another writer is active on ``step_run``'s production host (a writing
    step run queued or running, or a rollback queued or running — this run's own included)."""
    if not registry.get(step_run.step.kind).writes_production:
        return
    rehearsal = step_run.rehearsal
    if rehearsal.is_dress_rehearsal:
        # a dress rehearsal writes its own stand-in, never production: only its own writers meet there
        host = f"the stand-in of rehearsal #{rehearsal.pk}"
        writers = StepRun.objects.filter(rehearsal=rehearsal)
    else:
        host = rehearsal.incident.production_host
        writers = StepRun.objects.filter(rehearsal__incident__production_host=host,
                                         rehearsal__mode=Rehearsal.Mode.PRODUCTION)
    writers = writers.filter(step__kind__in=writing_kinds()).select_related("step", "rehearsal")
    busy = writers.filter(status__in=ACTIVE_WRITER).exclude(pk=step_run.pk).order_by("pk").first()
    if busy is not None:
        raise TransitionError(
            f"refusing to {doing}: step {busy.step.position} ({busy.step.title}) of rehearsal #{busy.rehearsal_id} "
            f"is {busy.get_status_display().lower()} and writes to {host}; one writer at a time per production "
            f"host — wait for it or cancel it first")
    for run in writers.filter(result__rollback_state__state__in=ROLLBACK_ACTIVE).order_by("pk"):
        rb = run.result.get("rollback_state") or {}
        whose = "this sync-back" if run.pk == step_run.pk else \
            f"step {run.step.position} ({run.step.title}) of rehearsal #{run.rehearsal_id}"
        raise TransitionError(f"refusing to {doing}: a rollback of {whose} is {rb.get('state')} since "
                              f"{rb.get('since', '?')} on {host}; one writer at a time per production host")


def mark_rollback(step_run: StepRun, state: str, user=None, **extra) -> None:
    """Record the rollback's state on the run's result (read by ``refuse_other_writers``)."""
    run = StepRun.objects.get(pk=step_run.pk)
    rb = dict(run.result.get("rollback_state") or {}, state=state, **extra)
    if state == "queued":
        rb = {"state": state, "since": timezone.now().isoformat(timespec="seconds"),
              "by": getattr(user, "username", None), **extra}
    StepRun.objects.filter(pk=run.pk).update(result={**run.result, "rollback_state": rb})
    step_run.result = {**run.result, "rollback_state": rb}


def cancel_probe(ctx) -> Callable[[], bool]:
    """``ctx.is_cancelled`` for an engine's watcher thread: a call from any thread but the step's
    own closes the database connection it opened, so polling leaves none behind."""
    owner = threading.get_ident()

    def cancelled() -> bool:
        try:
            return ctx.is_cancelled()
        finally:
            if threading.get_ident() != owner:
                connection.close()
    return cancelled
