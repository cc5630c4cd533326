"""A runbook's runs over time: per run its total and per-step durations, the estimate it
gives and the actual, so a trend shows (several dress rehearsals, then the production run)."""
from __future__ import annotations

from typing import Any

from rehearsals.models import Rehearsal
from runbooks.models import Runbook

from . import estimate as est


def runbook_history(runbook: Runbook) -> dict[str, Any]:
    versions = Runbook.objects.filter(name=runbook.name).order_by("version")
    rows = []
    positions: list[int] = []
    for r in Rehearsal.objects.filter(runbook__in=versions).select_related("runbook").order_by("created_at"):
        measures = est.measure(r)
        projection = est.estimate(measures)
        total = (r.finished_at - r.started_at).total_seconds() if r.started_at and r.finished_at else None
        steps = {m.spec.position: m.seconds for m in measures}
        positions = sorted(set(positions) | set(steps))
        rows.append({"rehearsal": r, "version": r.runbook.version, "total": total, "steps": steps,
                     "estimate": projection.total_seconds, "converges": projection.converges})
    for row in rows:
        row["step_list"] = [row["steps"].get(p) for p in positions]
    return {"name": runbook.name, "positions": positions, "rows": rows}
