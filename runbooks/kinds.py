"""Step kinds: what every kind provides, and the registry that knows them.

A kind declares its typed ``params`` schema (validated when a runbook is saved),
the targets it may run against, and ``run(ctx)``, which executes inside a worker
and returns the step's result dict. Kinds live in the ``steps`` app, one folder
each; they register themselves here when that app loads, so nothing below them
(this app, rehearsals' generic state machine, views, consumers) names a kind.

Besides running, a kind may offer:

- ``preview(ctx)``: the plan an approver sees before the step runs (``has_preview``);
- ``actions``: extra operator actions on its step runs, e.g. a diff's "select"
  (``{"select": callable(step_run, user, data) -> message}``), offered through the
  same action table as the generic ones;
- ``jobs``: worker bodies those actions queue (``{"rollback": callable(step_run,
  actor, data) -> dict}``), run by the one generic job task;
- ``panel``: a template (path relative to the kind's folder) rendered under its
  step on the rehearsal page with ``{"run": ..., "step": ..., "can_operate": ...}``
  and what ``panel_context`` adds. Buttons in it carry ``data-action`` (and
  ``data-step-run``); the page sends them like the generic ones.
- ``report``: how the incident report reads the kind's step runs (a ``StepReport``):
  the facts its result measured and how its duration scales to the real volumes.
  A kind's ``steps/<kind>/report.py`` sets it; the default treats the step's
  measured duration as its estimate.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from .params import Field, ParamErrors, clean_mapping


class StepFailed(Exception):
    """The step ran and did not achieve its goal. ``result`` is kept as evidence."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result or {}


class StepReport:
    """What the incident report reads from one kind's step runs.

    ``facts`` turns a finished step run's result (and its duration, its data events)
    into named measurements: ``{"key": {"label": str, "value": number, "unit": str}}``.
    Units: "bytes", "bytes/s", "files", "s", "lsn", "lsn/s" or "" (a count).
    Facts whose key starts with ``volume.`` describe the production host (its size, its
    file count) and are shared with every step's projection, so a step measured on a
    sample is projected to the real size.

    ``project`` returns the seconds the step would take in the real repair, and how
    that number was computed (shown in the report with its inputs). ``None`` seconds
    means it would not finish ("does not converge"). ``rate_factor`` scales every
    measured throughput (0.5: the sensitivity line "at half the measured throughput").
    """

    # Which key numbers of the report a fact adds to: {"fact key": "key number"}.
    key_numbers: ClassVar[Mapping[str, str]] = {}
    # The ``data`` events (by key) ``facts`` reads; the report fetches only these.
    data_keys: ClassVar[tuple[str, ...]] = ()

    def facts(self, result: dict[str, Any], seconds: float | None, data: Mapping[str, Any]) -> dict[str, dict]:
        return {}

    def project(self, facts: Mapping[str, dict], seconds: float, volumes: Mapping[str, float], *,
                rate_factor: float = 1.0) -> tuple[float | None, str]:
        return seconds, "measured duration (not data-bound)"

    def evidence(self, result: dict[str, Any], approved_plan: Mapping[str, Any] | None) -> list[dict]:
        """Tables the report shows under the step: ``[{"title", "columns", "rows"}]``
        (rows are lists of strings), e.g. each check with its evidence."""
        return []


def fact(label: str, value: float | int | None, unit: str = "") -> dict:
    """One measurement as the report shows it."""
    return {"label": label, "value": value, "unit": unit}


class StepKind:
    name: ClassVar[str]
    label: ClassVar[str]
    targets: ClassVar[frozenset[str]] = frozenset({"clone", "production"})
    params: ClassVar[Mapping[str, Field]] = {}
    # A person completes the step (manual confirmation) instead of a worker.
    interactive: ClassVar[bool] = False
    # A kind that needs approval may compute a preview first (in a worker); the
    # approver sees it, the Approval stores it, and ``run`` gets it as ctx.approved_plan.
    has_preview: ClassVar[bool] = False
    # The kind that makes a dress rehearsal's stand-in of production (the clone). A dress
    # rehearsal runs it before any other step, since steps aimed at production act on the stand-in.
    provides_stand_in: ClassVar[bool] = False
    # The kind writes files on production: one such writer at a time per production host
    # (rehearsals/writers.py refuses a second one before it is queued).
    writes_production: ClassVar[bool] = False
    actions: ClassVar[Mapping[str, Callable[..., str]]] = {}
    jobs: ClassVar[Mapping[str, Callable[..., dict]]] = {}
    panel: ClassVar[str | None] = None
    folder: ClassVar[Path | None] = None  # set on registration: where the kind's files live
    report: ClassVar[StepReport] = StepReport()

    def validate(self, params: dict[str, Any], target: str) -> list[str]:
        """Cross-field checks beyond the schema; return error strings."""
        return []

    def validate_in_runbook(self, params: dict[str, Any], runbook: Any) -> list[str]:
        """Checks that need the runbook (e.g. a named check set exists); return error strings."""
        return []

    def summary(self, params: dict[str, Any]) -> str:
        return ""

    def carries_over(self, spec: Any) -> bool:
        """Whether a production run continuing from a dress rehearsal reuses this step's
        success there instead of running it again: true when the step's whole effect lives
        on the workbench clone (by default: its target is the clone)."""
        return spec.target == "clone"

    def preview(self, ctx: Any) -> dict[str, Any]:
        raise StepFailed(f"step kind {self.name!r} has no preview")

    def run(self, ctx: Any) -> dict[str, Any]:
        raise StepFailed(f"step kind {self.name!r} cannot be run by a worker")

    def panel_context(self, step_run: Any, context: dict[str, Any]) -> dict[str, Any]:
        """Extra template variables for the panel of ``step_run`` (the model instance)."""
        return {}

    def panel_path(self) -> Path | None:
        return self.folder / self.panel if self.panel and self.folder else None


class UnknownStepKind(ParamErrors):
    pass


class Registry:
    def __init__(self) -> None:
        self._kinds: dict[str, StepKind] = {}

    def register(self, cls: type[StepKind]) -> type[StepKind]:
        module = sys.modules[cls.__module__]
        cls.folder = Path(module.__file__).parent
        self._kinds[cls.name] = cls()
        return cls

    def get(self, name: str) -> StepKind:
        try:
            return self._kinds[name]
        except KeyError:
            raise UnknownStepKind([f"kind: unknown step kind {name!r} (known: {', '.join(sorted(self._kinds))})"])

    def names(self) -> list[str]:
        return list(self._kinds)

    def all(self) -> list[StepKind]:
        return list(self._kinds.values())

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
