"""The audit trail: every state change writes one TimelineEntry (who, what, when).

The incident report is built from these entries, so every transition — a
person's or the system's — goes through ``record``.
"""
from __future__ import annotations

from incidents.models import Incident

from .models import Rehearsal, StepRun, TimelineEntry


def record(incident: Incident | None, actor, action: str, message: str, *, rehearsal: Rehearsal | None = None,
           step_run: StepRun | None = None) -> TimelineEntry:
    return TimelineEntry.objects.create(incident=incident, rehearsal=rehearsal, step_run=step_run,
                                        actor=actor, action=action, message=message)
