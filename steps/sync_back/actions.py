"""The sync-back's extra action and its worker job: roll production back from the backup."""
from __future__ import annotations

from django.db import transaction

from accounts.roles import require_operator
from rehearsals import dispatch, writers
from rehearsals.actions import note_from
from rehearsals.audit import record
from rehearsals.errors import TransitionError
from rehearsals.events import StepEventSink
from rehearsals.jobs import StepContext
from rehearsals.lifecycle import approved_plan, lock_run
from rehearsals.models import StepRun
from runbooks.kinds import StepFailed
from workers.engines.sync import PlanError, SyncError, SyncPlan, backed_up_files, rollback

S = StepRun.Status


def run_id_for(step_run) -> str:
    """Stable across retries of the step: a retry resumes the same backup dir and journal."""
    return f"r{step_run.rehearsal_id}-s{step_run.step_id}"


@transaction.atomic
def request_rollback(step_run: StepRun, user, *, note: str) -> None:
    """Put back every production file a sync-back replaced, from its backup directory."""
    require_operator(user)
    run = lock_run(step_run)
    if run.status in {S.QUEUED, S.RUNNING}:
        raise TransitionError("the sync-back is still running; cancel it first")
    if not run.sync_journal.exists():
        raise TransitionError("this sync-back never wrote anything to production: there is nothing to roll back")
    if not note.strip():
        raise TransitionError("a rollback needs a note saying why (it goes into the report)")
    writers.refuse_other_writers(run, doing="roll back this sync-back")
    writers.mark_rollback(run, "queued", user)
    record(run.rehearsal.incident, user, "sync.rollback_requested", f"Rollback of the sync-back requested: {note}",
           rehearsal=run.rehearsal, step_run=run)
    dispatch.send_step_job(run, "rollback", user)


def rollback_action(step_run: StepRun, user, data: dict) -> str:
    request_rollback(step_run, user, note=note_from(data))
    return "Rolling back the sync-back from its backup"


def rollback_files(run: StepRun) -> tuple[SyncPlan, list[dict]]:
    """What to restore, from understudy's own records: the approved plan and this run's DB journal
    (never the journal file on production, which whoever can write the backup dir could edit)."""
    plan_dict = approved_plan(run)
    if not plan_dict:
        raise SyncError("this sync-back has no approved plan: nothing it could have written")
    try:
        plan = SyncPlan.from_dict(plan_dict)
    except (PlanError, KeyError, TypeError, ValueError) as exc:
        raise SyncError(f"the approved plan cannot be read: {exc}") from exc
    rows = run.sync_journal.filter(run_id=run_id_for(run)).order_by("pk")
    return plan, backed_up_files(dict(r.detail, state=r.state) for r in rows)


def rollback_job(run: StepRun, actor, data: dict) -> dict:
    """Worker side: run the engine's rollback, record the outcome on the run and the timeline."""
    sink = StepEventSink(run)
    refused = ""
    report = None
    writers.mark_rollback(run, "running")
    try:
        sink.phase("rollback")
        plan, files = rollback_files(run)
        report = rollback(run_id_for(run), StepContext(run, None).production_endpoint(),
                          backup_dir=run.step.params["backup_dir"], emitter=sink, plan=plan, files=files)
    except (SyncError, StepFailed) as exc:
        # Refused files (changed since the sync: restoring them would lose newer data), a lost
        # connection, another writer holding production's lock, no stand-in left to roll back on
        # in a dress rehearsal: record what happened, per file, for the people deciding next.
        report, refused = getattr(exc, "report", None), str(exc)
        sink.log(f"rollback: {exc}", "stderr")
    except Exception as exc:  # a bug: still end the rollback's "running" mark, or it blocks every writer
        refused = f"internal error in the rollback: {type(exc).__name__}: {exc}"
        sink.log(refused, "stderr")
    finally:
        sink.close()
    out = {"error": refused} if refused else {}
    if report is not None and hasattr(report, "restored"):
        out.update({"restored": report.restored, "unchanged": report.unchanged, "failed": report.failed,
                    "seconds": round(report.seconds, 3), "files": [f.__dict__ for f in report.files]})
    # the outcome and its timeline entry commit together: nobody reads one without the other
    with transaction.atomic():
        current = StepRun.objects.select_for_update().get(pk=run.pk).result or {}
        state = dict(current.get("rollback_state") or {}, state="failed" if refused else "done")
        StepRun.objects.filter(pk=run.pk).update(result={**current, "rollback": out, "rollback_state": state})
        if refused:
            record(run.rehearsal.incident, actor, "sync.rollback_failed", f"Rollback incomplete: {refused}",
                   rehearsal=run.rehearsal, step_run=run)
        else:
            record(run.rehearsal.incident, actor, "sync.rolled_back",
                   f"Rollback restored {report.restored} file(s) from the backup, {report.unchanged} already "
                   f"original", rehearsal=run.rehearsal, step_run=run)
    return out
