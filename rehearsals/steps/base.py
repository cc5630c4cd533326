"""What every step kind provides. One module per kind in this package.

A kind declares its typed ``params`` schema (validated when a runbook is saved),
the targets it may run against, and ``run(ctx)`` which executes inside a Celery
worker and returns the step's result dict. Engines do the real work; a kind only
translates params into an engine call.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from .params import Field

if TYPE_CHECKING:
    from rehearsals.execution import StepContext


class StepFailed(Exception):
    """The step ran and did not achieve its goal. ``result`` is kept as evidence."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result or {}


class StepKind:
    name: ClassVar[str]
    label: ClassVar[str]
    targets: ClassVar[frozenset[str]] = frozenset({"clone", "production"})
    params: ClassVar[Mapping[str, Field]] = {}
    # A person completes the step (manual confirmation) instead of a worker.
    interactive: ClassVar[bool] = False
    template: ClassVar[str] = "steps/generic.html"

    def validate(self, params: dict[str, Any], target: str) -> list[str]:
        """Cross-field checks beyond the schema; return error strings."""
        return []

    def validate_in_runbook(self, params: dict[str, Any], runbook: Any) -> list[str]:
        """Checks that need the runbook (e.g. a named check set exists); return error strings."""
        return []

    def summary(self, params: dict[str, Any]) -> str:
        return ""

    # A kind that needs approval may compute a preview first (in a worker); the
    # approver sees it, the Approval stores it, and ``run`` gets it as ctx.approved_plan.
    has_preview: ClassVar[bool] = False

    def preview(self, ctx: "StepContext") -> dict[str, Any]:
        raise StepFailed(f"step kind {self.name!r} has no preview")

    def run(self, ctx: "StepContext") -> dict[str, Any]:
        raise StepFailed(f"step kind {self.name!r} cannot be run by a worker")
