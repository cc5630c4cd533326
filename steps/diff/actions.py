"""The diff's extra action: choose which findings go back to production."""
from __future__ import annotations

from django.db import transaction

from accounts.roles import require_operator
from rehearsals.audit import record
from rehearsals.errors import TransitionError
from rehearsals.lifecycle import announce, lock_run
from rehearsals.models import Finding, StepRun
from runbooks.kinds import registry

S = StepRun.Status


def _ids(data: dict, key: str) -> list[int]:
    ids = data.get(key, [])
    if not isinstance(ids, list) or not all(isinstance(i, int) or str(i).isdigit() for i in ids):
        raise TransitionError(f"{key} must be a list of finding ids")
    return [int(i) for i in ids]


def selection_is_used(run: StepRun) -> bool:
    """A step of a kind that consumes the selection (sync-back) already ran or runs with it."""
    consumers = [k.name for k in registry.all() if getattr(k, "consumes_finding_selection", False)]
    return run.rehearsal.step_runs.filter(step__kind__in=consumers,
                                          status__in=[S.QUEUED, S.RUNNING, S.SUCCEEDED]).exists()


@transaction.atomic
def select_findings(step_run: StepRun, user, selected_ids: list[int], override_ids: list[int] = ()) -> int:
    """Choose which of a diff's findings go back to production (before sync-back runs).

    ``override_ids``: selected files that changed on production after the clone and that a
    person decided to overwrite anyway (the drift guard blocks them otherwise)."""
    require_operator(user)
    run = lock_run(step_run)
    if run.status != S.SUCCEEDED:
        raise TransitionError("findings can be selected only from a diff step that succeeded")
    if selection_is_used(run):
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
    announce(run)
    return len(chosen)


def select_action(step_run: StepRun, user, data: dict) -> str:
    n = select_findings(step_run, user, _ids(data, "findings"), _ids(data, "override_drift"))
    return f"{n} file(s) selected for sync-back"
