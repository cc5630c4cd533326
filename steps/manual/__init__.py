"""``manual``: a person does something outside the tool and confirms it with a note."""
from __future__ import annotations

from runbooks.kinds import StepKind, registry
from runbooks.params import Str


@registry.register
class ManualStep(StepKind):
    name = "manual"
    label = "Manual confirmation"
    interactive = True
    params = {
        "instructions": Str(required=True, help="What the person must do and check before confirming."),
    }

    def summary(self, params):
        return params.get("instructions", "")
