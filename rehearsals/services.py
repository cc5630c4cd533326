"""The rehearsal state machine: start, advance, approve, confirm, retry, skip, cancel.

Views, the JSON API, WebSocket actions and workers all change state through
these functions only. Each one checks the actor's role, refuses an illegal
transition with ``TransitionError`` (a clear message, nothing changed), and
writes a TimelineEntry — the audit trail the incident report is built from.

StepRun lifecycle::

    (advance/retry) -> awaiting_approval -(approve)-> queued -> running -> succeeded | failed
                    -> awaiting_confirmation -(confirm)-> succeeded        (manual steps)
                    -> queued -> running -> ...                            (plain steps)
    failed/awaiting_* -(skip)-> skipped;  failed -(retry)-> new attempt;  any active -(cancel)-> cancelled
"""
from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from incidents.models import Incident, TimelineEntry

from .events import publish_status
from .models import Approval, Hypervisor, Rehearsal, Runbook, StepRun, StepSpec
from .permissions import require_operator
from .steps import registry

log = logging.getLogger(__name__)
S = StepRun.Status


class TransitionError(Exception):
    """An action that is not allowed in the current state. Nothing was changed."""


class FourEyesViolation(TransitionError):
    pass


def record(incident: Incident, actor, action: str, message: str, *, rehearsal: Rehearsal | None = None,
           step_run: StepRun | None = None) -> TimelineEntry:
    return TimelineEntry.objects.create(incident=incident, rehearsal=rehearsal, step_run=step_run,
                                        actor=actor, action=action, message=message)


def _lock(rehearsal: Rehearsal) -> Rehearsal:
    return Rehearsal.objects.select_for_update().get(pk=rehearsal.pk)


def _lock_run(step_run: StepRun) -> StepRun:
    return StepRun.objects.select_for_update().select_related("rehearsal", "step").get(pk=step_run.pk)


def _announce(step_run: StepRun) -> None:
    transaction.on_commit(lambda: publish_status(StepRun.objects.select_related("rehearsal").get(pk=step_run.pk)))


def _dispatch(step_run: StepRun, phase: str = "run") -> None:
    """Queue the step's task on the rehearsal's hypervisor queue once committed."""
    from workers.tasks import run_step  # tasks import this module

    queue = step_run.rehearsal.hypervisor.queue

    def send() -> None:
        res = run_step.apply_async(args=[step_run.pk, phase], queue=queue)
        StepRun.objects.filter(pk=step_run.pk).update(task_id=res.id)

    transaction.on_commit(send)


def next_step(rehearsal: Rehearsal) -> StepSpec | None:
    latest = rehearsal.latest_runs()
    for spec in rehearsal.runbook.steps.order_by("position"):
        run = latest.get(spec.pk)
        if run is None or run.status not in StepRun.DONE:
            return spec
    return None


def active_run(rehearsal: Rehearsal) -> StepRun | None:
    return rehearsal.step_runs.filter(status__in=StepRun.ACTIVE).first()


# ---------------------------------------------------------------- operator actions

@transaction.atomic
def create_rehearsal(incident: Incident, runbook: Runbook, hypervisor: Hypervisor, user, *,
                     mode: str = Rehearsal.Mode.REHEARSAL, keep_clone: bool = False) -> Rehearsal:
    require_operator(user)
    if not runbook.steps.exists():
        raise TransitionError(f"{runbook} has no steps")
    rehearsal = Rehearsal.objects.create(incident=incident, runbook=runbook, hypervisor=hypervisor, mode=mode,
                                         keep_clone=keep_clone, created_by=user)
    record(incident, user, "rehearsal.created",
           f"Rehearsal #{rehearsal.pk} of {runbook} on hypervisor {hypervisor} ({mode})", rehearsal=rehearsal)
    return rehearsal


@transaction.atomic
def start(rehearsal: Rehearsal, user) -> StepRun:
    """Start the rehearsal and its first step."""
    require_operator(user)
    rehearsal = _lock(rehearsal)
    if rehearsal.status != Rehearsal.Status.PENDING:
        raise TransitionError(f"rehearsal #{rehearsal.pk} is {rehearsal.get_status_display().lower()}; "
                              f"only a rehearsal that has not started can be started")
    rehearsal.status = Rehearsal.Status.RUNNING
    rehearsal.started_at = timezone.now()
    rehearsal.save(update_fields=["status", "started_at"])
    record(rehearsal.incident, user, "rehearsal.started", f"Started rehearsal #{rehearsal.pk}", rehearsal=rehearsal)
    return _advance_locked(rehearsal, user)


@transaction.atomic
def advance(rehearsal: Rehearsal, user) -> StepRun:
    """Run the next step that has not succeeded or been skipped."""
    require_operator(user)
    return _advance_locked(_lock(rehearsal), user)


def _advance_locked(rehearsal: Rehearsal, user) -> StepRun:
    if rehearsal.status != Rehearsal.Status.RUNNING:
        raise TransitionError(f"rehearsal #{rehearsal.pk} is {rehearsal.get_status_display().lower()}; "
                              f"steps can only be run while it is running")
    busy = active_run(rehearsal)
    if busy:
        raise TransitionError(f"step {busy.step.position} ({busy.step.title}) is {busy.get_status_display().lower()}; "
                              f"wait for it to finish first")
    spec = next_step(rehearsal)
    if spec is None:
        raise TransitionError(f"rehearsal #{rehearsal.pk} has no step left to run")
    previous = rehearsal.step_runs.filter(step=spec).order_by("-attempt").first()
    if previous and previous.status == S.FAILED:
        raise TransitionError(f"step {spec.position} ({spec.title}) failed; retry or skip it")
    return _begin_attempt(rehearsal, spec, user, attempt=1 if previous is None else previous.attempt + 1)


def _begin_attempt(rehearsal: Rehearsal, spec: StepSpec, user, *, attempt: int) -> StepRun:
    kind = registry.get(spec.kind)
    run = StepRun.objects.create(rehearsal=rehearsal, step=spec, attempt=attempt, status=S.QUEUED,
                                 requested_by=user)
    if spec.needs_approval and kind.has_preview:
        run.status = S.PREPARING
        run.save(update_fields=["status"])
        record(rehearsal.incident, user, "step.preparing",
               f"Preparing the preview of step {spec.position} ({spec.title}) for approval",
               rehearsal=rehearsal, step_run=run)
        _dispatch(run, "preview")
    elif spec.needs_approval:
        run.status = S.AWAITING_APPROVAL
        run.save(update_fields=["status"])
        Approval.objects.create(step_run=run, requested_by=user)
        record(rehearsal.incident, user, "approval.requested",
               f"Step {spec.position} ({spec.title}) needs a second person's approval", rehearsal=rehearsal,
               step_run=run)
    elif kind.interactive:
        run.status = S.AWAITING_CONFIRMATION
        run.started_at = timezone.now()
        run.save(update_fields=["status", "started_at"])
        record(rehearsal.incident, user, "step.awaiting_confirmation",
               f"Step {spec.position} ({spec.title}) waits for a person to confirm", rehearsal=rehearsal,
               step_run=run)
    else:
        record(rehearsal.incident, user, "step.queued",
               f"Queued step {spec.position} ({spec.title}), attempt {attempt}, on {rehearsal.hypervisor.queue}",
               rehearsal=rehearsal, step_run=run)
        _dispatch(run)
    _announce(run)
    return run


@transaction.atomic
def approve(step_run: StepRun, user, *, note: str = "", approve: bool = True) -> Approval:
    """Decide a pending approval. The requester cannot approve their own request."""
    require_operator(user)
    run = _lock_run(step_run)
    if run.status != S.AWAITING_APPROVAL:
        raise TransitionError(f"step {run.step.position} is {run.get_status_display().lower()}, not awaiting approval")
    approval = run.approvals.select_for_update().filter(decision=Approval.Decision.PENDING).first()
    if approval is None:
        raise TransitionError("there is no pending approval request for this step")
    if approval.requested_by_id == user.pk:
        raise FourEyesViolation(
            f"four-eyes rule: {user.username} requested this step and cannot also approve it; "
            f"another member of ops must decide")
    approval.approver = user
    approval.decision = Approval.Decision.APPROVED if approve else Approval.Decision.REJECTED
    approval.decided_at = timezone.now()
    approval.note = note
    approval.save()
    incident, rehearsal = run.rehearsal.incident, run.rehearsal
    if approve:
        record(incident, user, "approval.approved",
               f"Approved step {run.step.position} ({run.step.title})" + (f": {note}" if note else ""),
               rehearsal=rehearsal, step_run=run)
        if registry.get(run.step.kind).interactive:
            run.status = S.AWAITING_CONFIRMATION
            run.started_at = timezone.now()
            run.save(update_fields=["status", "started_at"])
        else:
            run.status = S.QUEUED
            run.save(update_fields=["status"])
            _dispatch(run)
    else:
        run.status = S.FAILED
        run.finished_at = timezone.now()
        run.error = f"rejected by {user.username}" + (f": {note}" if note else "")
        run.save(update_fields=["status", "finished_at", "error"])
        record(incident, user, "approval.rejected",
               f"Rejected step {run.step.position} ({run.step.title})" + (f": {note}" if note else ""),
               rehearsal=rehearsal, step_run=run)
    _announce(run)
    return approval


@transaction.atomic
def confirm(step_run: StepRun, user, *, note: str) -> StepRun:
    """A person confirms a manual step, with a note for the report."""
    require_operator(user)
    run = _lock_run(step_run)
    if run.status != S.AWAITING_CONFIRMATION:
        raise TransitionError(f"step {run.step.position} is {run.get_status_display().lower()}, "
                              f"not waiting for a confirmation")
    if not note.strip():
        raise TransitionError("a confirmation needs a note saying what was checked")
    run.status = S.SUCCEEDED
    run.finished_at = timezone.now()
    run.result = {"confirmed_by": user.username, "note": note}
    run.save(update_fields=["status", "finished_at", "result"])
    record(run.rehearsal.incident, user, "step.confirmed",
           f"Confirmed step {run.step.position} ({run.step.title}): {note}", rehearsal=run.rehearsal, step_run=run)
    _finish_if_done(run.rehearsal)
    _announce(run)
    return run


@transaction.atomic
def retry(step_run: StepRun, user) -> StepRun:
    require_operator(user)
    rehearsal = _lock(step_run.rehearsal)
    run = _lock_run(step_run)
    if rehearsal.status != Rehearsal.Status.RUNNING:
        raise TransitionError(f"rehearsal #{rehearsal.pk} is {rehearsal.get_status_display().lower()}")
    latest = rehearsal.step_runs.filter(step=run.step).order_by("-attempt").first()
    if latest.pk != run.pk:
        raise TransitionError(f"attempt {run.attempt} is not the latest attempt of this step")
    if run.status not in {S.FAILED, S.CANCELLED}:
        raise TransitionError(f"only a failed step can be retried; this one is {run.get_status_display().lower()}")
    busy = active_run(rehearsal)
    if busy:
        raise TransitionError(f"step {busy.step.position} is still {busy.get_status_display().lower()}")
    record(rehearsal.incident, user, "step.retried",
           f"Retrying step {run.step.position} ({run.step.title}) as attempt {run.attempt + 1}",
           rehearsal=rehearsal, step_run=run)
    return _begin_attempt(rehearsal, run.step, user, attempt=run.attempt + 1)


@transaction.atomic
def skip(rehearsal: Rehearsal, spec: StepSpec, user, *, note: str) -> StepRun:
    """Skip the next step (not started, failed, or waiting for a person)."""
    require_operator(user)
    rehearsal = _lock(rehearsal)
    if rehearsal.status != Rehearsal.Status.RUNNING:
        raise TransitionError(f"rehearsal #{rehearsal.pk} is {rehearsal.get_status_display().lower()}")
    if not note.strip():
        raise TransitionError("skipping a step needs a note saying why (it goes into the report)")
    if next_step(rehearsal) != spec:
        raise TransitionError(f"only the next step can be skipped, not step {spec.position}")
    run = rehearsal.step_runs.filter(step=spec).order_by("-attempt").first()
    if run is not None and run.status in {S.QUEUED, S.RUNNING}:
        raise TransitionError(f"step {spec.position} is {run.get_status_display().lower()}; cancel it instead")
    if run is None or run.status in {S.FAILED, S.CANCELLED}:
        run = StepRun.objects.create(rehearsal=rehearsal, step=spec, status=S.SKIPPED,
                                     attempt=1 if run is None else run.attempt + 1)
    else:  # awaiting approval / confirmation
        run.approvals.filter(decision=Approval.Decision.PENDING).update(decision=Approval.Decision.REJECTED,
                                                                        note="step skipped", decided_at=timezone.now())
    run.status = S.SKIPPED
    run.finished_at = timezone.now()
    run.error = ""
    run.result = {"skipped_by": user.username, "note": note}
    run.save()
    record(rehearsal.incident, user, "step.skipped", f"Skipped step {spec.position} ({spec.title}): {note}",
           rehearsal=rehearsal, step_run=run)
    _finish_if_done(rehearsal)
    _announce(run)
    return run


@transaction.atomic
def cancel(rehearsal: Rehearsal, user, *, note: str = "") -> Rehearsal:
    require_operator(user)
    rehearsal = _lock(rehearsal)
    if rehearsal.is_terminal:
        raise TransitionError(f"rehearsal #{rehearsal.pk} is already {rehearsal.get_status_display().lower()}")
    now = timezone.now()
    for run in rehearsal.step_runs.select_for_update().filter(status__in=StepRun.ACTIVE):
        run.status = S.CANCELLED
        run.finished_at = now
        run.error = f"cancelled by {user.username}"
        run.save(update_fields=["status", "finished_at", "error"])
        if run.task_id:
            transaction.on_commit(lambda tid=run.task_id: _revoke(tid))
        _announce(run)
    rehearsal.status = Rehearsal.Status.CANCELLED
    rehearsal.finished_at = now
    rehearsal.save(update_fields=["status", "finished_at"])
    record(rehearsal.incident, user, "rehearsal.cancelled",
           f"Cancelled rehearsal #{rehearsal.pk}" + (f": {note}" if note else ""), rehearsal=rehearsal)
    _close_clone(rehearsal, user)
    return rehearsal


def _close_clone(rehearsal: Rehearsal, actor) -> None:
    """On rehearsal close the clone goes too, unless the rehearsal keeps it."""
    if rehearsal.keep_clone:
        return
    if _queue_clone_destroy(rehearsal, actor):
        record(rehearsal.incident, actor, "clone.destroy_requested",
               "Destroying the clone automatically: the rehearsal closed (keep_clone is off)", rehearsal=rehearsal)


# ---------------------------------------------------------------- clones

def _queue_clone_destroy(rehearsal: Rehearsal, actor) -> bool:
    from workers.tasks import destroy_clone

    from .models import Clone

    clone = Clone.objects.filter(rehearsal=rehearsal).exclude(status=Clone.Status.DESTROYED).first()
    if clone is None:
        return False
    queue = rehearsal.hypervisor.queue
    actor_id = actor.pk if actor else None
    transaction.on_commit(lambda: destroy_clone.apply_async(args=[clone.pk, actor_id], queue=queue))
    return True


@transaction.atomic
def destroy_clone(rehearsal: Rehearsal, user) -> None:
    """Destroy the rehearsal's clone VM, its disk and staging tree (on its hypervisor's worker)."""
    require_operator(user)
    rehearsal = _lock(rehearsal)
    busy = active_run(rehearsal)
    if busy and busy.status in {S.QUEUED, S.RUNNING, S.PREPARING}:
        raise TransitionError(f"step {busy.step.position} is {busy.get_status_display().lower()}; "
                              f"the clone cannot be destroyed under it")
    if not _queue_clone_destroy(rehearsal, user):
        raise TransitionError(f"rehearsal #{rehearsal.pk} has no clone to destroy")
    record(rehearsal.incident, user, "clone.destroy_requested", "Requested destruction of the clone",
           rehearsal=rehearsal)


def clone_destroyed(clone_id: int, actor_id: int | None) -> dict:
    """Worker side of destroy_clone: do it, then audit what was removed (or why not)."""
    from django.contrib.auth import get_user_model

    from .clones import CloneCleanupError, destroy_clone as destroy
    from .models import Clone

    clone = Clone.objects.select_related("rehearsal__incident", "hypervisor").get(pk=clone_id)
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    try:
        result = destroy(clone)
    except CloneCleanupError as exc:
        record(clone.rehearsal.incident, actor, "clone.destroy_failed", str(exc), rehearsal=clone.rehearsal)
        raise
    record(clone.rehearsal.incident, actor, "clone.destroyed",
           f"Destroyed the clone: {', '.join(result['removed']) or 'nothing was left'}", rehearsal=clone.rehearsal)
    return result


# ---------------------------------------------------------------- sync-back rollback

@transaction.atomic
def request_rollback(step_run: StepRun, user, *, note: str) -> None:
    """Put back every production file a sync-back replaced, from its backup directory."""
    from workers.tasks import rollback_sync

    require_operator(user)
    run = _lock_run(step_run)
    if run.step.kind != "sync_back":
        raise TransitionError("only a sync-back step can be rolled back")
    if run.status in {S.QUEUED, S.RUNNING}:
        raise TransitionError("the sync-back is still running; cancel it first")
    if not run.sync_journal.exists():
        raise TransitionError("this sync-back never wrote anything to production: there is nothing to roll back")
    if not note.strip():
        raise TransitionError("a rollback needs a note saying why (it goes into the report)")
    record(run.rehearsal.incident, user, "sync.rollback_requested", f"Rollback of the sync-back requested: {note}",
           rehearsal=run.rehearsal, step_run=run)
    actor_id = user.pk
    transaction.on_commit(lambda: rollback_sync.apply_async(args=[run.pk, actor_id],
                                                            queue=run.rehearsal.hypervisor.queue))


def rollback_done(step_run_id: int, actor_id: int | None) -> dict:
    """Worker side: run the engine's rollback, record the outcome on the run and the timeline."""
    from django.contrib.auth import get_user_model

    from workers.engines.sync import SyncError, rollback

    from .events import StepEventSink
    from .steps.sync_back import run_id_for

    run = StepRun.objects.select_related("rehearsal__incident__production_host", "step").get(pk=step_run_id)
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    sink = StepEventSink(run)
    refused = ""
    try:
        sink.phase("rollback")
        report = rollback(run_id_for(run), run.rehearsal.incident.production_host.endpoint(),
                          backup_dir=run.step.params["backup_dir"], emitter=sink)
    except SyncError as exc:
        # Refused files (changed since the sync: restoring them would lose newer data) or a
        # lost connection: record what happened, per file, for the people deciding next.
        report, refused = exc.report, str(exc)
        sink.log(f"rollback: {exc}", "stderr")
    finally:
        sink.close()
    out = {"error": refused} if refused else {}
    if report is not None and hasattr(report, "restored"):
        out.update({"restored": report.restored, "unchanged": report.unchanged, "failed": report.failed,
                    "seconds": round(report.seconds, 3), "files": [f.__dict__ for f in report.files]})
    StepRun.objects.filter(pk=run.pk).update(result={**run.result, "rollback": out})
    if refused:
        record(run.rehearsal.incident, actor, "sync.rollback_failed", f"Rollback incomplete: {refused}",
               rehearsal=run.rehearsal, step_run=run)
    else:
        record(run.rehearsal.incident, actor, "sync.rolled_back",
               f"Rollback restored {report.restored} file(s) from the backup, {report.unchanged} already "
               f"original", rehearsal=run.rehearsal, step_run=run)
    publish_status(StepRun.objects.select_related("rehearsal").get(pk=run.pk))
    return out


def _revoke(task_id: str) -> None:
    from understudy.celery import app

    try:
        app.control.revoke(task_id)
    except Exception:  # the worker also checks the StepRun status before and while running
        log.exception("could not revoke task %s", task_id)


def _finish_if_done(rehearsal: Rehearsal) -> None:
    rehearsal.refresh_from_db()
    if rehearsal.status == Rehearsal.Status.RUNNING and next_step(rehearsal) is None:
        rehearsal.status = Rehearsal.Status.SUCCEEDED
        rehearsal.finished_at = timezone.now()
        rehearsal.save(update_fields=["status", "finished_at"])
        record(rehearsal.incident, None, "rehearsal.succeeded",
               f"Rehearsal #{rehearsal.pk} completed every step", rehearsal=rehearsal)
        _close_clone(rehearsal, None)


@transaction.atomic
def select_findings(step_run: StepRun, user, selected_ids: list[int], override_ids: list[int] = ()) -> int:
    """Choose which of a diff's findings go back to production (before sync-back runs).

    ``override_ids``: selected files that changed on production after the clone and that a
    person decided to overwrite anyway (the drift guard blocks them otherwise)."""
    from incidents.models import Finding

    require_operator(user)
    run = _lock_run(step_run)
    if run.step.kind != "diff" or run.status != S.SUCCEEDED:
        raise TransitionError("findings can be selected only from a diff step that succeeded")
    later = run.rehearsal.step_runs.filter(step__kind="sync_back",
                                           status__in=[S.QUEUED, S.RUNNING, S.SUCCEEDED]).exists()
    if later:
        raise TransitionError("a sync-back already used this selection; it cannot change any more")
    findings = Finding.objects.filter(step_run=run)
    wanted, overrides = set(selected_ids), set(override_ids)
    unknown = (wanted | overrides) - set(findings.values_list("pk", flat=True))
    if unknown:
        raise TransitionError(f"finding(s) {sorted(unknown)} are not part of this diff")
    if overrides - wanted:
        raise TransitionError("a drift override only applies to a file selected for sync-back")
    findings.update(selected=False, drift_override=False)
    findings.filter(pk__in=wanted).update(selected=True)
    findings.filter(pk__in=overrides).update(drift_override=True)
    chosen = list(findings.filter(selected=True).values_list("path", flat=True))
    record(run.rehearsal.incident, user, "findings.selected",
           f"Selected {len(chosen)} file(s) for sync-back: {', '.join(chosen[:20])}"
           + (" ..." if len(chosen) > 20 else ""), rehearsal=run.rehearsal, step_run=run)
    overridden = list(findings.filter(drift_override=True).values_list("path", flat=True))
    if overridden:
        record(run.rehearsal.incident, user, "findings.drift_overridden",
               f"Overwrite production although it changed after the clone: {', '.join(overridden[:20])}",
               rehearsal=run.rehearsal, step_run=run)
    _announce(run)
    return len(chosen)


# ---------------------------------------------------------------- worker side

@transaction.atomic
def mark_preparing(step_run: StepRun) -> bool:
    run = _lock_run(step_run)
    return run.status == S.PREPARING


@transaction.atomic
def request_approval(step_run: StepRun, plan: dict[str, Any]) -> StepRun | None:
    """The preview is ready: ask for a second person's approval of exactly this plan."""
    run = _lock_run(step_run)
    if run.status != S.PREPARING:
        return None  # cancelled meanwhile
    run.status = S.AWAITING_APPROVAL
    run.result = {"preview": plan}
    run.save(update_fields=["status", "result"])
    Approval.objects.create(step_run=run, requested_by=run.requested_by, plan=plan)
    record(run.rehearsal.incident, run.requested_by, "approval.requested",
           f"Step {run.step.position} ({run.step.title}) needs a second person's approval of its preview",
           rehearsal=run.rehearsal, step_run=run)
    _announce(run)
    return run


def approved_plan(step_run: StepRun) -> dict[str, Any] | None:
    approval = step_run.approvals.filter(decision=Approval.Decision.APPROVED).order_by("-decided_at").first()
    return approval.plan if approval else None


@transaction.atomic
def mark_running(step_run: StepRun) -> bool:
    """Worker picked the task up. False if the run was cancelled meanwhile (do nothing)."""
    run = _lock_run(step_run)
    if run.status != S.QUEUED:
        return False
    run.status = S.RUNNING
    run.started_at = timezone.now()
    run.save(update_fields=["status", "started_at"])
    record(run.rehearsal.incident, None, "step.started",
           f"Step {run.step.position} ({run.step.title}) started, attempt {run.attempt}",
           rehearsal=run.rehearsal, step_run=run)
    _announce(run)
    return True


@transaction.atomic
def mark_finished(step_run: StepRun, *, ok: bool, result: dict[str, Any], error: str = "") -> StepRun:
    run = _lock_run(step_run)
    if run.status not in {S.RUNNING, S.PREPARING}:
        # Cancelled while running: keep the cancellation, but keep the evidence too.
        run.result = result
        run.save(update_fields=["result"])
        return run
    run.status = S.SUCCEEDED if ok else S.FAILED
    run.finished_at = timezone.now()
    run.result = result
    run.error = error
    run.save(update_fields=["status", "finished_at", "result", "error"])
    took = (run.finished_at - run.started_at).total_seconds() if run.started_at else 0
    if ok:
        record(run.rehearsal.incident, None, "step.succeeded",
               f"Step {run.step.position} ({run.step.title}) succeeded in {took:.1f}s "
               f"(estimated {run.step.estimated_seconds}s)", rehearsal=run.rehearsal, step_run=run)
        _finish_if_done(run.rehearsal)
    else:
        record(run.rehearsal.incident, None, "step.failed",
               f"Step {run.step.position} ({run.step.title}) failed after {took:.1f}s: {error}",
               rehearsal=run.rehearsal, step_run=run)
    _announce(run)
    return run
