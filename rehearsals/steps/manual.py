"""``manual``: a person does something outside the tool and confirms it with a note."""
from __future__ import annotations

from .base import StepKind
from .params import Str
from .registry import registry


@registry.register
class ManualStep(StepKind):
    name = "manual"
    label = "Manual confirmation"
    interactive = True
    template = "steps/manual.html"
    params = {
        "instructions": Str(required=True, help="What the person must do and check before confirming."),
    }

    def summary(self, params):
        return params.get("instructions", "")
