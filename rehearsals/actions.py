"""One table of operator actions, shared by the HTML views, the JSON API and the
WebSocket consumer, so all three accept the same inputs and give the same errors."""
from __future__ import annotations

from typing import Any, Callable

from django.core.exceptions import PermissionDenied

from . import services
from .models import Rehearsal, StepRun, StepSpec
from .permissions import require_operator


class ActionError(Exception):
    pass


def _step_run(rehearsal: Rehearsal, data: dict) -> StepRun:
    try:
        return rehearsal.step_runs.get(pk=int(data.get("step_run")))
    except (TypeError, ValueError, StepRun.DoesNotExist):
        raise ActionError(f"step run {data.get('step_run')!r} does not belong to rehearsal #{rehearsal.pk}")


def _step(rehearsal: Rehearsal, data: dict) -> StepSpec:
    try:
        return rehearsal.runbook.steps.get(pk=int(data.get("step")))
    except (TypeError, ValueError, StepSpec.DoesNotExist):
        raise ActionError(f"step {data.get('step')!r} is not part of {rehearsal.runbook}")


def _note(data: dict) -> str:
    return str(data.get("note") or "").strip()


def _start(r, user, data):
    run = services.start(r, user)
    return f"Started; step {run.step.position} is {run.get_status_display().lower()}"


def _advance(r, user, data):
    run = services.advance(r, user)
    return f"Step {run.step.position} is {run.get_status_display().lower()}"


def _approve(r, user, data):
    services.approve(_step_run(r, data), user, note=_note(data), approve=True)
    return "Approved"


def _reject(r, user, data):
    services.approve(_step_run(r, data), user, note=_note(data), approve=False)
    return "Rejected"


def _confirm(r, user, data):
    services.confirm(_step_run(r, data), user, note=_note(data))
    return "Confirmed"


def _retry(r, user, data):
    run = services.retry(_step_run(r, data), user)
    return f"Retrying as attempt {run.attempt}"


def _skip(r, user, data):
    services.skip(r, _step(r, data), user, note=_note(data))
    return "Skipped"


def _ids(data: dict, key: str) -> list[int]:
    ids = data.get(key, [])
    if not isinstance(ids, list) or not all(isinstance(i, int) or str(i).isdigit() for i in ids):
        raise ActionError(f"{key} must be a list of finding ids")
    return [int(i) for i in ids]


def _select(r, user, data):
    n = services.select_findings(_step_run(r, data), user, _ids(data, "findings"), _ids(data, "override_drift"))
    return f"{n} file(s) selected for sync-back"


def _destroy_clone(r, user, data):
    services.destroy_clone(r, user)
    return "The clone is being destroyed"


def _rollback(r, user, data):
    services.request_rollback(_step_run(r, data), user, note=_note(data))
    return "Rolling back the sync-back from its backup"


def _cancel(r, user, data):
    services.cancel(r, user, note=_note(data))
    return "Cancelled"


ACTIONS: dict[str, Callable[[Rehearsal, Any, dict], str]] = {
    "start": _start, "advance": _advance, "approve": _approve, "reject": _reject, "confirm": _confirm,
    "retry": _retry, "skip": _skip, "cancel": _cancel, "select": _select,
    "destroy_clone": _destroy_clone, "rollback": _rollback,
}


def perform(rehearsal_id: int, action: str, user, data: dict) -> str:
    require_operator(user)
    handler = ACTIONS.get(action)
    if handler is None:
        raise ActionError(f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    rehearsal = Rehearsal.objects.filter(pk=rehearsal_id).first()
    if rehearsal is None:
        raise ActionError(f"rehearsal #{rehearsal_id} does not exist")
    try:
        return handler(rehearsal, user, data)
    except services.TransitionError as exc:
        raise ActionError(str(exc)) from exc
    except PermissionDenied:
        raise
