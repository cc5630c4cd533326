"""Errors every state change may raise."""


class TransitionError(Exception):
    """An action that is not allowed in the current state. Nothing was changed."""


class FourEyesViolation(TransitionError):
    """The person who asked for a step cannot also approve it."""
