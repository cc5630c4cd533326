"""The rehearsal's lifecycle primitives and the worker side of a step run.

Operator actions (``transitions``), the kinds' extra actions and the worker
bodies (``jobs``) all change a step run through these functions, under the row
lock of the run (or its rehearsal), and announce the change to watchers once the
transaction commits.

StepRun lifecycle::

    (advance/retry) -> preparing -(preview ready)-> awaiting_approval -(approve)-> queued
                    -> awaiting_approval -(approve)-> queued | awaiting_confirmation
                    -> awaiting_confirmation -(confirm)-> succeeded        (interactive kinds)
                    -> queued -(worker)-> running -(worker)-> succeeded | failed
    failed/awaiting_* -(skip)-> skipped;  failed -(retry)-> new attempt;  any active -(cancel)-> cancelled
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runbooks.kinds import registry

from . import dispatch, incident_lifecycle
from .audit import record
from .events import publish_status
from .models import Approval, Clone, Rehearsal, StepRun, StepSpec

S = StepRun.Status


def lock_rehearsal(rehearsal: Rehearsal) -> Rehearsal:
    return Rehearsal.objects.select_for_update().get(pk=rehearsal.pk)


def lock_run(step_run: StepRun) -> StepRun:
    return StepRun.objects.select_for_update().select_related("rehearsal", "step").get(pk=step_run.pk)


def announce(step_run: StepRun) -> None:
    transaction.on_commit(lambda: publish_status(StepRun.objects.select_related("rehearsal").get(pk=step_run.pk)))


def run_order(rehearsal: Rehearsal) -> list[StepSpec]:
    """The runbook's order, except that a dress rehearsal starts with the step that makes its
    stand-in of production: every step aimed at production acts on the stand-in."""
    specs = list(rehearsal.runbook.steps.order_by("position"))
    if rehearsal.is_dress_rehearsal:
        first = next((s for s in specs if registry.get(s.kind).provides_stand_in), None)
        if first is not None:
            specs.remove(first)
            specs.insert(0, first)
    return specs


def next_step(rehearsal: Rehearsal) -> StepSpec | None:
    latest = rehearsal.latest_runs()
    for spec in run_order(rehearsal):
        run = latest.get(spec.pk)
        if run is None or run.status not in StepRun.DONE:
            return spec
    return None


def active_run(rehearsal: Rehearsal) -> StepRun | None:
    return rehearsal.step_runs.filter(status__in=StepRun.ACTIVE).first()


def live_clone(rehearsal: Rehearsal, role: str = Clone.Role.WORKBENCH) -> Clone | None:
    return Clone.objects.filter(rehearsal=rehearsal, role=role).exclude(status=Clone.Status.DESTROYED).first()


def workbench_of(rehearsal: Rehearsal) -> Clone | None:
    """The clone the run repairs on: its own, or the one of the dress rehearsal it continues from."""
    own = live_clone(rehearsal)
    if own is None and rehearsal.continues_from_id:
        return live_clone(rehearsal.continues_from)
    return own


def production_runs_needing(rehearsal: Rehearsal):
    """Production runs that continue from this dress rehearsal and have not ended."""
    return rehearsal.production_runs.exclude(status__in=[Rehearsal.Status.SUCCEEDED, Rehearsal.Status.CANCELLED])


def queue_clone_destroy(rehearsal: Rehearsal, actor, roles: tuple[str, ...] | None = None) -> list[Clone]:
    clones = Clone.objects.filter(rehearsal=rehearsal).exclude(status=Clone.Status.DESTROYED)
    if roles is not None:
        clones = clones.filter(role__in=roles)
    clones = list(clones)
    for clone in clones:
        dispatch.send_clone_destroy(clone, actor)
    return clones


def close_clone(rehearsal: Rehearsal, actor) -> None:
    """On close the clones go too, unless the rehearsal keeps them. A succeeded dress
    rehearsal keeps its repaired workbench for the production run that continues from it
    (its stand-in goes); a production run removes the workbench it continued on."""
    if rehearsal.keep_clone:
        return
    keep_workbench = rehearsal.is_dress_rehearsal and rehearsal.status == Rehearsal.Status.SUCCEEDED
    roles = (Clone.Role.STAND_IN,) if keep_workbench else None
    if queue_clone_destroy(rehearsal, actor, roles):
        record(rehearsal.incident, actor, "clone.destroy_requested",
               "Destroying the stand-in automatically; the repaired workbench is kept for the production run"
               if keep_workbench else
               "Destroying the clone automatically: the rehearsal closed (keep_clone is off)", rehearsal=rehearsal)
    source = rehearsal.continues_from
    if (source is not None and not source.keep_clone and not production_runs_needing(source).exists()
            and queue_clone_destroy(source, actor)):
        record(rehearsal.incident, actor, "clone.destroy_requested",
               f"Destroying the workbench of dress rehearsal #{source.pk}: production run #{rehearsal.pk}, "
               f"which continued on it, closed", rehearsal=source)


def finish_if_done(rehearsal: Rehearsal) -> None:
    rehearsal.refresh_from_db()
    if rehearsal.status == Rehearsal.Status.RUNNING and next_step(rehearsal) is None:
        rehearsal.status = Rehearsal.Status.SUCCEEDED
        rehearsal.finished_at = timezone.now()
        rehearsal.save(update_fields=["status", "finished_at"])
        record(rehearsal.incident, None, "rehearsal.succeeded",
               f"Rehearsal #{rehearsal.pk} completed every step", rehearsal=rehearsal)
        incident_lifecycle.run_ended(rehearsal)
        close_clone(rehearsal, None)


def step_succeeded(run: StepRun) -> None:
    """What a success means beyond the step: the incident's milestone, the run's end."""
    incident_lifecycle.step_succeeded(run)
    finish_if_done(run.rehearsal)


# ---------------------------------------------------------------- worker side

LEASED = (S.RUNNING, S.PREPARING)  # the statuses in which a worker holds a lease (see leases.py)
LEASE_FIELDS = ["worker", "heartbeat_at", "lease_expires_at"]


def lease_seconds() -> float:
    return float(settings.UNDERSTUDY_LEASE_SECONDS)


def _take_lease(run: StepRun, worker: str) -> None:
    now = timezone.now()
    run.worker = worker[:200]
    run.heartbeat_at = now
    run.lease_expires_at = now + timedelta(seconds=lease_seconds())


def _picked_up(run: StepRun, attempt: int | None) -> bool:
    """The task was sent for this attempt (a redelivered task of an older attempt does nothing)."""
    return attempt is None or attempt == run.attempt


@transaction.atomic
def mark_preparing(step_run: StepRun, worker: str = "", attempt: int | None = None) -> bool:
    run = lock_run(step_run)
    if run.status != S.PREPARING or run.lease_expires_at is not None or not _picked_up(run, attempt):
        return False  # cancelled, or a redelivery of a preview another worker has taken
    _take_lease(run, worker)
    run.save(update_fields=LEASE_FIELDS)
    return True


@transaction.atomic
def request_approval(step_run: StepRun, plan: dict[str, Any]) -> StepRun | None:
    """The preview is ready: ask for a second person's approval of exactly this plan."""
    run = lock_run(step_run)
    if run.status != S.PREPARING:
        return None  # cancelled meanwhile
    run.status = S.AWAITING_APPROVAL
    run.result = {"preview": plan}
    run.lease_expires_at = None
    run.save(update_fields=["status", "result", "lease_expires_at"])
    Approval.objects.create(step_run=run, requested_by=run.requested_by, plan=plan)
    record(run.rehearsal.incident, run.requested_by, "approval.requested",
           f"Step {run.step.position} ({run.step.title}) needs a second person's approval of its preview",
           rehearsal=run.rehearsal, step_run=run)
    announce(run)
    return run


def approved_plan(step_run: StepRun) -> dict[str, Any] | None:
    approval = step_run.approvals.filter(decision=Approval.Decision.APPROVED).order_by("-decided_at").first()
    return approval.plan if approval else None


@transaction.atomic
def mark_running(step_run: StepRun, worker: str = "", attempt: int | None = None) -> bool:
    """Worker picked the task up and takes the lease. False — do nothing — if the run was
    cancelled meanwhile, or already ran (a redelivered task), or the task was for another attempt."""
    run = lock_run(step_run)
    if run.status != S.QUEUED or not _picked_up(run, attempt):
        return False
    run.status = S.RUNNING
    run.started_at = timezone.now()
    _take_lease(run, worker)
    run.save(update_fields=["status", "started_at", *LEASE_FIELDS])
    record(run.rehearsal.incident, None, "step.started",
           f"Step {run.step.position} ({run.step.title}) started, attempt {run.attempt}"
           + (f" on {run.worker}" if run.worker else ""),
           rehearsal=run.rehearsal, step_run=run)
    announce(run)
    return True


WORKER_LOST = "worker lost"  # the start of the reaper's error (leases.py)


def _reaped_while_finishing(run: StepRun, worker: str) -> bool:
    """The reaper declared this worker lost (its heartbeat could not reach the database) although it
    was finishing: its real outcome replaces the guess, unless a retry has started since."""
    return (run.status == S.FAILED and run.error.startswith(WORKER_LOST) and bool(worker)
            and run.worker == worker[:200]
            and not StepRun.objects.filter(rehearsal=run.rehearsal_id, step=run.step_id,
                                           attempt__gt=run.attempt).exists())


@transaction.atomic
def mark_finished(step_run: StepRun, *, ok: bool, result: dict[str, Any], error: str = "",
                  worker: str = "") -> StepRun:
    run = lock_run(step_run)
    if _reaped_while_finishing(run, worker):
        record(run.rehearsal.incident, None, "step.worker_back",
               f"Step {run.step.position} ({run.step.title}): worker {run.worker} was not lost after all; "
               f"its outcome is recorded", rehearsal=run.rehearsal, step_run=run)
        run.status = S.RUNNING
    if run.status not in {S.RUNNING, S.PREPARING}:
        # Cancelled while running: keep the cancellation, but keep the evidence too.
        run.result = result
        run.save(update_fields=["result"])
        return run
    run.status = S.SUCCEEDED if ok else S.FAILED
    run.finished_at = timezone.now()
    run.result = result
    run.error = error
    run.lease_expires_at = None
    run.save(update_fields=["status", "finished_at", "result", "error", "lease_expires_at"])
    took = (run.finished_at - run.started_at).total_seconds() if run.started_at else 0
    if ok:
        record(run.rehearsal.incident, None, "step.succeeded",
               f"Step {run.step.position} ({run.step.title}) succeeded in {took:.1f}s "
               f"(estimated {run.step.estimated_seconds}s)", rehearsal=run.rehearsal, step_run=run)
        step_succeeded(run)
    else:
        record(run.rehearsal.incident, None, "step.failed",
               f"Step {run.step.position} ({run.step.title}) failed after {took:.1f}s: {error}",
               rehearsal=run.rehearsal, step_run=run)
    announce(run)
    return run
