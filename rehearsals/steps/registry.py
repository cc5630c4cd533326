from __future__ import annotations

from typing import Any

from .base import StepKind
from .params import ParamErrors, clean_mapping


class UnknownStepKind(ParamErrors):
    pass


class Registry:
    def __init__(self) -> None:
        self._kinds: dict[str, StepKind] = {}

    def register(self, cls: type[StepKind]) -> type[StepKind]:
        self._kinds[cls.name] = cls()
        return cls

    def get(self, name: str) -> StepKind:
        try:
            return self._kinds[name]
        except KeyError:
            raise UnknownStepKind([f"kind: unknown step kind {name!r} (known: {', '.join(sorted(self._kinds))})"])

    def names(self) -> list[str]:
        return list(self._kinds)

    def choices(self) -> list[tuple[str, str]]:
        return [(k.name, k.label) for k in self._kinds.values()]

    def clean_params(self, kind: str, params: Any, target: str, *, runbook: Any = None) -> dict[str, Any]:
        """Normalised params, or ParamErrors listing every problem. ``runbook`` (the StepSpec's)
        lets a kind check references into it, such as a named check set."""
        step = self.get(kind)
        errors: list[str] = []
        if target not in step.targets:
            errors.append(f"target: a {kind} step runs against {' or '.join(sorted(step.targets))}, not {target!r}")
        cleaned = clean_mapping(step.params, params if params is not None else {}, errors)
        try:
            errors += step.validate(cleaned, target)
            if runbook is not None:
                errors += step.validate_in_runbook(cleaned, runbook)
        except (TypeError, AttributeError, KeyError):
            pass  # a schema error above already explains the malformed value
        if errors:
            raise ParamErrors(errors)
        return cleaned

    def validate(self, kind: str, params: Any, target: str, *, runbook: Any = None) -> list[str]:
        try:
            self.clean_params(kind, params, target, runbook=runbook)
        except ParamErrors as exc:
            return exc.errors
        return []


registry = Registry()

# Importing the kind modules registers them.
from . import check, clone, command, diff, import_backup, live_sync, manual, sync_back  # noqa: E402,F401
