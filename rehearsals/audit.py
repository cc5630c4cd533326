"""The audit trail: every state change writes one TimelineEntry (who, what, when).

The incident report is built from these entries, so every transition — a
person's or the system's — goes through ``record``.
"""
from __future__ import annotations

import contextvars

from incidents.models import Incident

from .models import Rehearsal, StepRun, TimelineEntry


def record(incident: Incident | None, actor, action: str, message: str, *, rehearsal: Rehearsal | None = None,
           step_run: StepRun | None = None) -> TimelineEntry:
    return TimelineEntry.objects.create(incident=incident, rehearsal=rehearsal, step_run=step_run,
                                        actor=actor, action=action, message=message)


_acting_request: contextvars.ContextVar = contextvars.ContextVar("understudy_acting_request", default=None)


def current_actor():
    """The logged-in user of the request being served, or None (the system, a command line)."""
    request = _acting_request.get()
    user = getattr(request, "user", None)
    return user if getattr(user, "is_authenticated", False) else None


class AuditActorMiddleware:
    """Remembers whose request this is, so changes made through the admin (accounts, inventory)
    are recorded with their actor by the signal handlers in ``rehearsals.signals``."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _acting_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _acting_request.reset(token)
