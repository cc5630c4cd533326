"""Step kinds: one module each; ``registry`` knows them all."""
from .base import StepFailed, StepKind  # noqa: F401
from .registry import registry  # noqa: F401
