"""One table of operator actions, shared by the HTML views, the REST API and the
WebSocket consumer, so all three accept the same inputs and give the same errors.

The generic actions are listed here; an action not listed is looked up on the
kind of the step run it names (``data["step_run"]``), so a kind's extra actions
(its folder's ``actions``) are offered the same way without this module knowing them.
"""
from __future__ import annotations

from typing import Any, Callable

from django.core.exceptions import PermissionDenied

from accounts.roles import require_operator
from runbooks.kinds import registry
from runbooks.models import StepSpec

from . import transitions
from .errors import TransitionError
from .models import Rehearsal, StepRun


class ActionError(Exception):
    """The action was refused: nothing changed. The message says why."""


class InvalidInput(ActionError):
    """The request itself is wrong (an unknown action, a step run of another rehearsal, a note that is not
    text), as opposed to a refusal by the state machine; the API answers 400 instead of 409."""


def _row_id(value) -> int | None:
    """A primary key from JSON or a form: an integer (or its digits) a database column can hold."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 19:
        value = int(value)
    return value if isinstance(value, int) and 0 < value < 2**63 else None


def _shown(value) -> str:
    return repr(value)[:60]


def _step_run(rehearsal: Rehearsal, data: dict) -> StepRun:
    pk = _row_id(data.get("step_run"))
    run = rehearsal.step_runs.select_related("step").filter(pk=pk).first() if pk else None
    if run is None:
        raise InvalidInput(f"step run {_shown(data.get('step_run'))} does not belong to rehearsal #{rehearsal.pk}")
    return run


def _step(rehearsal: Rehearsal, data: dict) -> StepSpec:
    pk = _row_id(data.get("step"))
    step = rehearsal.runbook.steps.filter(pk=pk).first() if pk else None
    if step is None:
        raise InvalidInput(f"step {_shown(data.get('step'))} is not part of {rehearsal.runbook}")
    return step


def note_from(data: dict) -> str:
    """The note of an action message: text, no NUL (PostgreSQL stores none), at most 10,000 characters."""
    note = data.get("note") or ""
    if not isinstance(note, str):
        raise InvalidInput("note must be text")
    if "\x00" in note:
        raise InvalidInput("note must not contain NUL characters")
    return note.strip()[:10000]


def _start(r, user, data):
    run = transitions.start(r, user)
    return f"Started; step {run.step.position} is {run.get_status_display().lower()}"


def _advance(r, user, data):
    run = transitions.advance(r, user)
    return f"Step {run.step.position} is {run.get_status_display().lower()}"


def _approve(r, user, data):
    transitions.approve(_step_run(r, data), user, note=note_from(data), approve=True)
    return "Approved"


def _reject(r, user, data):
    transitions.approve(_step_run(r, data), user, note=note_from(data), approve=False)
    return "Rejected"


def _confirm(r, user, data):
    transitions.confirm(_step_run(r, data), user, note=note_from(data))
    return "Confirmed"


def _retry(r, user, data):
    run = transitions.retry(_step_run(r, data), user)
    return f"Retrying as attempt {run.attempt}"


def _skip(r, user, data):
    transitions.skip(r, _step(r, data), user, note=note_from(data))
    return "Skipped"


def _destroy_clone(r, user, data):
    transitions.destroy_clone(r, user)
    return "The clone is being destroyed"


def _cancel(r, user, data):
    transitions.cancel(r, user, note=note_from(data))
    return "Cancelled"


def _run_for_real(r, user, data):
    run = transitions.create_rehearsal(r.incident, r.runbook, None, user, mode=Rehearsal.Mode.PRODUCTION,
                                       continues_from=r)
    return f"Created production run #{run.pk}, continuing from this dress rehearsal: {run.get_absolute_url()}"


ACTIONS: dict[str, Callable[[Rehearsal, Any, dict], str]] = {
    "start": _start, "advance": _advance, "approve": _approve, "reject": _reject, "confirm": _confirm,
    "retry": _retry, "skip": _skip, "cancel": _cancel, "destroy_clone": _destroy_clone,
    "run_for_real": _run_for_real,
}


def _kind_action(rehearsal: Rehearsal, action: str, data: dict) -> Callable[[Rehearsal, Any, dict], str] | None:
    if "step_run" not in data:
        return None
    run = _step_run(rehearsal, data)
    handler = registry.get(run.step.kind).actions.get(action)
    if handler is None:
        return None
    # A kind's handler makes its own transaction (as the generic transitions do).
    return lambda r, user, data: handler(run, user, data)


def kind_actions() -> list[str]:
    """The extra actions step kinds offer on their step runs (named by the kinds, found in the registry)."""
    return sorted({name for kind in registry.all() for name in kind.actions})


def perform(rehearsal_id: int, action: str, user, data: dict) -> str:
    require_operator(user)
    if not isinstance(action, str) or not isinstance(data, dict):
        raise InvalidInput("an action is a name and an object of its inputs")
    rehearsal = Rehearsal.objects.filter(pk=rehearsal_id).first()
    if rehearsal is None:
        raise ActionError(f"rehearsal #{rehearsal_id} does not exist")
    handler = ACTIONS.get(action) or _kind_action(rehearsal, action, data)
    if handler is None:
        extra = kind_actions()
        raise InvalidInput(f"unknown action {action[:60]!r} (known: {', '.join(ACTIONS)}; on a step run of the right "
                           f"kind: {', '.join(extra)})")
    try:
        return handler(rehearsal, user, data)
    except TransitionError as exc:
        raise ActionError(str(exc)) from exc
    except PermissionDenied:
        raise
