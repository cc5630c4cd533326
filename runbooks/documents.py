"""Runbooks as documents: export to JSON, import with every error reported at once.

An import never half-creates a runbook: it validates every step first, then
creates the new version in one transaction.
"""
from __future__ import annotations

from typing import Any

from django.db import transaction

from workers.engines.checks import validate_check_specs

from .kinds import registry
from .models import Runbook, StepSpec

STEP_KEYS = {"kind", "title", "target", "params", "needs_approval", "estimated_seconds", "milestone"}
RUNBOOK_KEYS = {"name", "version", "description", "check_sets", "steps"}
NAME_MAX = Runbook._meta.get_field("name").max_length
TITLE_MAX = StepSpec._meta.get_field("title").max_length


class InvalidRunbook(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid runbook:\n  " + "\n  ".join(errors))
        self.errors = errors


def runbook_to_dict(runbook: Runbook) -> dict[str, Any]:
    return {
        "name": runbook.name, "version": runbook.version, "description": runbook.description,
        "check_sets": runbook.check_sets,
        "steps": [{"kind": s.kind, "title": s.title, "target": s.target, "params": s.params,
                   "needs_approval": s.needs_approval, "estimated_seconds": s.estimated_seconds,
                   **({"milestone": s.milestone} if s.milestone else {})}
                  for s in runbook.steps.order_by("position")],
    }


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def validate_runbook(data: Any) -> list[str]:
    errors: list[str] = []
    if not isinstance(data, dict):
        return ["the runbook must be a JSON object with 'name' and 'steps'"]
    if _holds_nul(data):
        # PostgreSQL stores no NUL in text or JSON: refuse it here, whichever way the document came
        return ["the runbook contains a NUL character (\\u0000), which no field may hold"]
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        errors.append("name: required")
    elif len(data["name"]) > NAME_MAX:
        errors.append(f"name: at most {NAME_MAX} characters")
    if not isinstance(data.get("description", ""), str):
        errors.append("description: must be text")
    for key in sorted(set(data) - RUNBOOK_KEYS):
        errors.append(f"unknown key {key[:60]!r}")
    check_sets = data.get("check_sets", {})
    if not isinstance(check_sets, dict):
        errors.append("check_sets: must be an object of name -> list of checks")
        check_sets = {}
    for name, specs in check_sets.items():
        errors += [f"check_sets.{name}: {e}" for e in validate_check_specs(specs)]

    class _Runbook:  # what validate_in_runbook needs, before the row exists
        def __init__(self) -> None:
            self.check_sets = check_sets

        def __str__(self) -> str:
            return f"runbook {data.get('name')!r}"

    pseudo = _Runbook()
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        return errors + ["steps: a non-empty list is required"]
    for i, step in enumerate(steps, start=1):
        where = f"step {i}"
        if not isinstance(step, dict):
            errors.append(f"{where}: must be an object")
            continue
        label = next((v for v in (step.get("title"), step.get("kind")) if isinstance(v, str) and v), "?")
        where = f"step {i} ({label[:60]})"
        for key in sorted(set(step) - STEP_KEYS):
            errors.append(f"{where}: unknown key {key[:60]!r}")
        if not isinstance(step.get("title"), str) or not step["title"].strip():
            errors.append(f"{where}: title: required")
        elif len(step["title"]) > TITLE_MAX:
            errors.append(f"{where}: title: at most {TITLE_MAX} characters")
        if not isinstance(step.get("needs_approval", False), bool):
            errors.append(f"{where}: needs_approval must be true or false")
        est = step.get("estimated_seconds", 60)
        if isinstance(est, bool) or not isinstance(est, int) or est < 0:
            errors.append(f"{where}: estimated_seconds must be a non-negative integer")
        milestone = step.get("milestone", "")
        if not isinstance(milestone, str) or milestone not in StepSpec.Milestone.values:
            errors.append(f"{where}: milestone {str(milestone)[:60]!r} is not one of "
                          f"{', '.join(m for m in StepSpec.Milestone.values if m)}")
        wrong_types = [f"{where}: {key} must be {what}" for key, types, what in (
            ("kind", str, "text"), ("target", str, "text"), ("params", dict, "an object"))
            if key in step and not isinstance(step[key], types)]
        if wrong_types:
            errors += wrong_types
            continue
        errors += [f"{where}: {e}" for e in registry.validate(step.get("kind", ""), step.get("params", {}),
                                                               step.get("target", "production"), runbook=pseudo)]
    return errors


@transaction.atomic
def import_runbook(data: Any, user=None) -> Runbook:
    """Create the next version of the named runbook (version 1 if new)."""
    errors = validate_runbook(data)
    if errors:
        raise InvalidRunbook(errors)
    latest = Runbook.objects.filter(name=data["name"]).order_by("-version").first()
    runbook = Runbook.objects.create(name=data["name"], version=(latest.version + 1) if latest else 1,
                                     description=data.get("description", ""),
                                     check_sets=data.get("check_sets", {}), created_by=user)
    for position, step in enumerate(data["steps"], start=1):
        StepSpec.objects.create(runbook=runbook, position=position, kind=step["kind"], title=step["title"],
                                target=step.get("target", "production"), params=step.get("params", {}),
                                needs_approval=step.get("needs_approval", False),
                                estimated_seconds=step.get("estimated_seconds", 60),
                                milestone=step.get("milestone", ""))
    return runbook
