"""Operator transitions: create, start, advance, approve/reject, confirm, retry, skip,
cancel, destroy the clone, scan a hypervisor and destroy its leftovers.

Views, the JSON API and WebSocket actions change state through these functions
(via ``rehearsals.actions``). Each one checks the actor's role, refuses an illegal
transition with ``TransitionError`` (a clear message, nothing changed), and writes
a TimelineEntry. What a step run may do next depends only on its status
(``STEP_RUN_ACCEPTS``) and on what its kind declares (preview, interactive) —
never on the kind's name; extra actions of a kind live in its folder under ``steps/``.
"""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from accounts.roles import require_operator, require_production_runner
from incidents.models import Incident
from inventory.models import Hypervisor
from runbooks.kinds import registry
from runbooks.models import Runbook, StepSpec

from . import dispatch, incident_lifecycle
from .audit import record
from .errors import FourEyesViolation, TransitionError
from .lifecycle import (
    active_run,
    announce,
    close_clone,
    finish_if_done,
    live_clone,
    lock_rehearsal,
    lock_run,
    next_step,
    production_runs_needing,
    queue_clone_destroy,
    step_succeeded,
)
from .models import Approval, Clone, Rehearsal, StepRun

__all__ = ["TransitionError", "FourEyesViolation", "create_rehearsal", "start", "advance", "approve", "confirm",
           "retry", "skip", "cancel", "destroy_clone", "scan_hypervisor", "destroy_leftover", "next_step"]

S = StepRun.Status

# The step-run statuses each operator action accepts (the latest attempt of the step).
# ``None``: the step has no attempt yet.
STEP_RUN_ACCEPTS: dict[str, set] = {
    "approve": {S.AWAITING_APPROVAL},
    "confirm": {S.AWAITING_CONFIRMATION},
    "retry": {S.FAILED, S.CANCELLED},
    "skip": {None, S.FAILED, S.CANCELLED, S.AWAITING_APPROVAL, S.AWAITING_CONFIRMATION},
}
_REFUSAL = {
    "approve": "is {status}, not awaiting approval",
    "confirm": "is {status}, not waiting for a confirmation",
    "retry": "is {status}; only a failed step can be retried",
    "skip": "is {status}; cancel it instead",
}


def _require(action: str, run: StepRun | None, spec: StepSpec) -> None:
    status = run.status if run is not None else None
    if status not in STEP_RUN_ACCEPTS[action]:
        label = run.get_status_display().lower() if run is not None else "not started"
        raise TransitionError(f"step {spec.position} " + _REFUSAL[action].format(status=label))


def _require_running(rehearsal: Rehearsal) -> None:
    if rehearsal.status != Rehearsal.Status.RUNNING:
        raise TransitionError(f"rehearsal #{rehearsal.pk} is {rehearsal.get_status_display().lower()}; "
                              f"steps can only be run while it is running")


# ---------------------------------------------------------------- runs

@transaction.atomic
def create_rehearsal(incident: Incident, runbook: Runbook, hypervisor: Hypervisor | None, user, *,
                     mode: str = Rehearsal.Mode.REHEARSAL, keep_clone: bool = False,
                     continues_from: Rehearsal | None = None, override_reason: str = "") -> Rehearsal:
    """A dress rehearsal, or a production run. A production run continues from a succeeded
    dress rehearsal of the same runbook version for the same production host (on its
    workbench, on its hypervisor), or starts from scratch with a written override reason."""
    require_operator(user)
    incident_lifecycle.ensure_open_for_runs(incident)
    if not runbook.steps.exists():
        raise TransitionError(f"{runbook} has no steps")
    if mode not in Rehearsal.Mode.values:
        raise TransitionError(f"unknown mode {mode!r}")
    override_reason = override_reason.strip()
    if mode == Rehearsal.Mode.PRODUCTION:
        require_production_runner(user)
        if continues_from is not None:
            _check_continuable(continues_from, incident, runbook)
            hypervisor = continues_from.hypervisor   # the workbench lives there
        elif not override_reason:
            raise TransitionError(
                f"a production run needs a succeeded dress rehearsal of {runbook} for "
                f"{incident.production_host} to continue from, or an override with a written reason")
    elif continues_from is not None or override_reason:
        raise TransitionError("only a production run continues from a dress rehearsal or takes an override")
    if hypervisor is None:
        raise TransitionError("choose the hypervisor the clones run on")
    rehearsal = Rehearsal.objects.create(incident=incident, runbook=runbook, hypervisor=hypervisor, mode=mode,
                                         keep_clone=keep_clone, created_by=user, continues_from=continues_from,
                                         override_reason=override_reason if continues_from is None else "")
    runbook.lock()
    record(incident, user, "rehearsal.created",
           f"{rehearsal.kind_label} #{rehearsal.pk} of {runbook} on hypervisor {hypervisor}", rehearsal=rehearsal)
    if continues_from is not None:
        carried = _carry_over(rehearsal, continues_from)
        record(incident, user, "rehearsal.continues",
               f"Production run #{rehearsal.pk} continues from dress rehearsal #{continues_from.pk} on its "
               f"repaired workbench; carried over: "
               + (", ".join(f"step {r.step.position}" for r in carried) or "nothing"), rehearsal=rehearsal)
    elif mode == Rehearsal.Mode.PRODUCTION:
        record(incident, user, "rehearsal.override",
               f"Production run #{rehearsal.pk} starts without a dress rehearsal to continue from; "
               f"override by {user.username}: {override_reason}", rehearsal=rehearsal)
    return rehearsal


def _check_continuable(source: Rehearsal, incident: Incident, runbook: Runbook) -> None:
    if not source.is_dress_rehearsal:
        raise TransitionError(f"rehearsal #{source.pk} is a production run, not a dress rehearsal")
    if source.status != Rehearsal.Status.SUCCEEDED:
        raise TransitionError(f"dress rehearsal #{source.pk} is {source.get_status_display().lower()}; "
                              f"only a succeeded one can be continued on production")
    if source.runbook_id != runbook.pk:
        raise TransitionError(f"dress rehearsal #{source.pk} ran {source.runbook}, not {runbook}")
    if source.incident.production_host_id != incident.production_host_id:
        raise TransitionError(f"dress rehearsal #{source.pk} rehearsed {source.incident.production_host}, "
                              f"not {incident.production_host}")
    workbench = live_clone(source)
    if workbench is None or workbench.status != Clone.Status.RUNNING:
        raise TransitionError(f"dress rehearsal #{source.pk} has no running workbench to continue from"
                              + (f" (it is {workbench.get_status_display().lower()})" if workbench else
                                 " (it was destroyed)"))
    if production_runs_needing(source).exists():
        raise TransitionError(f"production run #{production_runs_needing(source).first().pk} already continues "
                              f"from dress rehearsal #{source.pk}")


def _carry_over(rehearsal: Rehearsal, source: Rehearsal) -> list[StepRun]:
    """Reuse the dress rehearsal's work on the workbench: the first unbroken block of steps
    that succeeded there and whose effect lives on the workbench only (the clone, the
    import, the re-initialization, checks on the clone). Steps that act on production or
    measure it run again, for real."""
    latest = source.latest_runs()
    carried: list[StepRun] = []
    for spec in rehearsal.runbook.steps.order_by("position"):
        done = latest.get(spec.pk)
        if done is not None and done.status == S.SUCCEEDED and registry.get(spec.kind).carries_over(spec):
            carried.append(StepRun.objects.create(rehearsal=rehearsal, step=spec, status=S.CARRIED,
                                                  carried_from=done, result={"carried_from_rehearsal": source.pk}))
        elif carried:
            break
    return carried


@transaction.atomic
def start(rehearsal: Rehearsal, user) -> StepRun:
    """Start the rehearsal and its first step."""
    require_operator(user)
    rehearsal = lock_rehearsal(rehearsal)
    if rehearsal.status != Rehearsal.Status.PENDING:
        raise TransitionError(f"rehearsal #{rehearsal.pk} is {rehearsal.get_status_display().lower()}; "
                              f"only a rehearsal that has not started can be started")
    rehearsal.status = Rehearsal.Status.RUNNING
    rehearsal.started_at = timezone.now()
    rehearsal.save(update_fields=["status", "started_at"])
    if not rehearsal.is_dress_rehearsal:
        require_production_runner(user)
    record(rehearsal.incident, user, "rehearsal.started", f"Started {rehearsal.kind_label.lower()} #{rehearsal.pk}",
           rehearsal=rehearsal)
    incident_lifecycle.run_started(rehearsal)
    return _advance_locked(rehearsal, user)


@transaction.atomic
def advance(rehearsal: Rehearsal, user) -> StepRun:
    """Run the next step that has not succeeded or been skipped."""
    require_operator(user)
    return _advance_locked(lock_rehearsal(rehearsal), user)


def _advance_locked(rehearsal: Rehearsal, user) -> StepRun:
    _require_running(rehearsal)
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
        dispatch.send_step(run, "preview")
    elif spec.needs_approval:
        run.status = S.AWAITING_APPROVAL
        run.save(update_fields=["status"])
        Approval.objects.create(step_run=run, requested_by=user)
        record(rehearsal.incident, user, "approval.requested",
               f"Step {spec.position} ({spec.title}) needs a second person's approval", rehearsal=rehearsal,
               step_run=run)
    elif kind.interactive:
        _await_confirmation(run)
        record(rehearsal.incident, user, "step.awaiting_confirmation",
               f"Step {spec.position} ({spec.title}) waits for a person to confirm", rehearsal=rehearsal,
               step_run=run)
    else:
        record(rehearsal.incident, user, "step.queued",
               f"Queued step {spec.position} ({spec.title}), attempt {attempt}, on {rehearsal.hypervisor.queue}",
               rehearsal=rehearsal, step_run=run)
        dispatch.send_step(run)
    announce(run)
    return run


def _await_confirmation(run: StepRun) -> None:
    run.status = S.AWAITING_CONFIRMATION
    run.started_at = timezone.now()
    run.save(update_fields=["status", "started_at"])


@transaction.atomic
def approve(step_run: StepRun, user, *, note: str = "", approve: bool = True) -> Approval:
    """Decide a pending approval. The requester cannot approve their own request."""
    require_operator(user)
    run = lock_run(step_run)
    _require("approve", run, run.step)
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
            _await_confirmation(run)
        else:
            run.status = S.QUEUED
            run.save(update_fields=["status"])
            dispatch.send_step(run)
    else:
        run.status = S.FAILED
        run.finished_at = timezone.now()
        run.error = f"rejected by {user.username}" + (f": {note}" if note else "")
        run.save(update_fields=["status", "finished_at", "error"])
        record(incident, user, "approval.rejected",
               f"Rejected step {run.step.position} ({run.step.title})" + (f": {note}" if note else ""),
               rehearsal=rehearsal, step_run=run)
    announce(run)
    return approval


@transaction.atomic
def confirm(step_run: StepRun, user, *, note: str) -> StepRun:
    """A person confirms an interactive step, with a note for the report."""
    require_operator(user)
    run = lock_run(step_run)
    _require("confirm", run, run.step)
    if not note.strip():
        raise TransitionError("a confirmation needs a note saying what was checked")
    run.status = S.SUCCEEDED
    run.finished_at = timezone.now()
    run.result = {"confirmed_by": user.username, "note": note}
    run.save(update_fields=["status", "finished_at", "result"])
    record(run.rehearsal.incident, user, "step.confirmed",
           f"Confirmed step {run.step.position} ({run.step.title}): {note}", rehearsal=run.rehearsal, step_run=run)
    step_succeeded(run)
    announce(run)
    return run


@transaction.atomic
def retry(step_run: StepRun, user) -> StepRun:
    require_operator(user)
    rehearsal = lock_rehearsal(step_run.rehearsal)
    run = lock_run(step_run)
    if rehearsal.status != Rehearsal.Status.RUNNING:
        raise TransitionError(f"rehearsal #{rehearsal.pk} is {rehearsal.get_status_display().lower()}")
    latest = rehearsal.step_runs.filter(step=run.step).order_by("-attempt").first()
    if latest.pk != run.pk:
        raise TransitionError(f"attempt {run.attempt} is not the latest attempt of this step")
    _require("retry", run, run.step)
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
    rehearsal = lock_rehearsal(rehearsal)
    if rehearsal.status != Rehearsal.Status.RUNNING:
        raise TransitionError(f"rehearsal #{rehearsal.pk} is {rehearsal.get_status_display().lower()}")
    if not note.strip():
        raise TransitionError("skipping a step needs a note saying why (it goes into the report)")
    if next_step(rehearsal) != spec:
        raise TransitionError(f"only the next step can be skipped, not step {spec.position}")
    run = rehearsal.step_runs.filter(step=spec).order_by("-attempt").first()
    _require("skip", run, spec)
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
    finish_if_done(rehearsal)
    announce(run)
    return run


@transaction.atomic
def cancel(rehearsal: Rehearsal, user, *, note: str = "") -> Rehearsal:
    require_operator(user)
    rehearsal = lock_rehearsal(rehearsal)
    if rehearsal.is_terminal:
        raise TransitionError(f"rehearsal #{rehearsal.pk} is already {rehearsal.get_status_display().lower()}")
    now = timezone.now()
    for run in rehearsal.step_runs.select_for_update().filter(status__in=StepRun.ACTIVE):
        run.status = S.CANCELLED
        run.finished_at = now
        run.error = f"cancelled by {user.username}"
        run.save(update_fields=["status", "finished_at", "error"])
        if run.task_id:
            transaction.on_commit(lambda tid=run.task_id: dispatch.revoke(tid))
        announce(run)
    was_running = rehearsal.status == Rehearsal.Status.RUNNING
    rehearsal.status = Rehearsal.Status.CANCELLED
    rehearsal.finished_at = now
    rehearsal.save(update_fields=["status", "finished_at"])
    record(rehearsal.incident, user, "rehearsal.cancelled",
           f"Cancelled rehearsal #{rehearsal.pk}" + (f": {note}" if note else ""), rehearsal=rehearsal)
    if was_running:
        incident_lifecycle.run_ended(rehearsal)
    close_clone(rehearsal, user)
    return rehearsal


# ---------------------------------------------------------------- clones and hypervisors

@transaction.atomic
def destroy_clone(rehearsal: Rehearsal, user) -> None:
    """Destroy the rehearsal's clone VM, its disk and staging tree (on its hypervisor's worker)."""
    require_operator(user)
    rehearsal = lock_rehearsal(rehearsal)
    busy = active_run(rehearsal)
    if busy and busy.status in {S.QUEUED, S.RUNNING, S.PREPARING}:
        raise TransitionError(f"step {busy.step.position} is {busy.get_status_display().lower()}; "
                              f"the clone cannot be destroyed under it")
    needing = production_runs_needing(rehearsal).first()
    if needing is not None:
        raise TransitionError(f"production run #{needing.pk} continues on this dress rehearsal's workbench; "
                              f"finish or cancel it first")
    if not queue_clone_destroy(rehearsal, user):
        raise TransitionError(f"rehearsal #{rehearsal.pk} has no clone to destroy")
    record(rehearsal.incident, user, "clone.destroy_requested", "Requested destruction of the clone",
           rehearsal=rehearsal)


@transaction.atomic
def scan_hypervisor(hypervisor: Hypervisor, user) -> None:
    """Ask the hypervisor's worker to list its clone domains (to find leftovers)."""
    require_operator(user)
    dispatch.send_hypervisor_scan(hypervisor, user)
    record(None, user, "hypervisor.scan_requested", f"Asked {hypervisor} ({hypervisor.queue}) to list its clones")


@transaction.atomic
def destroy_leftover(hypervisor: Hypervisor, domain_name: str, user) -> None:
    """Destroy a clone domain that no live rehearsal accounts for (as the last scan showed)."""
    require_operator(user)
    leftovers = {d["name"]: d for d in (hypervisor.last_scan or {}).get("domains", []) if d.get("leftover")}
    if domain_name not in leftovers:
        raise TransitionError(f"{domain_name!r} is not a leftover clone of {hypervisor} (scan again?)")
    if Clone.objects.filter(hypervisor=hypervisor, domain_name=domain_name).exclude(
            status=Clone.Status.DESTROYED).exists():
        raise TransitionError(f"{domain_name} belongs to a live rehearsal; destroy it from its rehearsal")
    owner = str(leftovers[domain_name].get("rehearsal") or "")  # from the domain's metadata: untrusted
    rehearsal = Rehearsal.objects.filter(pk=int(owner)).first() if owner.isdigit() else None
    dispatch.send_leftover_destroy(hypervisor, domain_name, user)
    record(rehearsal.incident if rehearsal else None, user, "hypervisor.leftover_destroy_requested",
           f"Destroying leftover clone {domain_name} on {hypervisor}", rehearsal=rehearsal)
