"""Changes to a runbook version's steps made in the editor: add, edit, delete, move. Each refuses a version
that has run (``RunbookLocked``, from the models) and keeps the positions 1..n without a gap."""
from __future__ import annotations

import difflib
import json

from django.db import transaction

from .documents import runbook_to_dict
from .kinds import registry
from .models import Runbook, RunbookLocked, StepSpec
from .params import ParamErrors


def _check_open(runbook: Runbook) -> None:
    if runbook.is_locked:
        raise RunbookLocked(f"{runbook} has already run and is read-only; make a new version to edit it")


def _validated(spec: StepSpec) -> None:
    errors = registry.validate(spec.kind, spec.params, spec.target, runbook=spec.runbook)
    if errors:
        raise ParamErrors(errors)


@transaction.atomic
def save_step(runbook: Runbook, kind: str, values: dict, params: dict, spec: StepSpec | None = None) -> StepSpec:
    """Add a step at the end (``spec`` None) or change one; raises ParamErrors listing the kind's errors."""
    Runbook.objects.select_for_update().get(pk=runbook.pk)
    _check_open(runbook)
    if spec is None:
        last = runbook.steps.order_by("-position").values_list("position", flat=True).first() or 0
        spec = StepSpec(runbook=runbook, position=last + 1, kind=kind)
    for name in ("title", "target", "needs_approval", "estimated_seconds", "milestone"):
        setattr(spec, name, values[name] if values[name] is not None else getattr(spec, name))
    spec.milestone = spec.milestone or ""
    spec.params = params
    _validated(spec)
    spec.save()
    return spec


@transaction.atomic
def delete_step(spec: StepSpec) -> None:
    runbook = Runbook.objects.select_for_update().get(pk=spec.runbook_id)
    _check_open(runbook)
    position = spec.position
    spec.delete()
    for later in runbook.steps.filter(position__gt=position).order_by("position"):
        StepSpec.objects.filter(pk=later.pk).update(position=later.position - 1)


@transaction.atomic
def move_step(spec: StepSpec, offset: int) -> None:
    """Swap the step with its neighbour above (-1) or below (+1); at either end, nothing moves."""
    runbook = Runbook.objects.select_for_update().get(pk=spec.runbook_id)
    _check_open(runbook)
    other = runbook.steps.filter(position=spec.position + offset).first()
    if other is None:
        return
    a, b = spec.position, other.position
    # (runbook, position) is unique: park one step outside the range while they swap
    StepSpec.objects.filter(pk=spec.pk).update(position=0)
    StepSpec.objects.filter(pk=other.pk).update(position=a)
    StepSpec.objects.filter(pk=spec.pk).update(position=b)


def version_diff(old: Runbook, new: Runbook) -> list[str]:
    """A unified diff of the two versions as their exported documents (what would be imported)."""
    def lines(rb: Runbook) -> list[str]:
        doc = runbook_to_dict(rb)
        doc.pop("version")
        return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    return list(difflib.unified_diff(lines(old), lines(new), fromfile=str(old), tofile=str(new), lineterm=""))
