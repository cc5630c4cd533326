"""A runbook's runs over time: per run its total and per-step durations, the estimate it
gives and the actual, and the trend: each run's estimate against the run before it, and a
server-side SVG of actual and estimate over the runs (several dress rehearsals, then the
production run)."""
from __future__ import annotations

from html import escape
from typing import Any

from rehearsals.models import Rehearsal
from runbooks.models import Runbook

from . import estimate as est
from .gantt import tick

CHART_W, CHART_H, PAD = 640, 180, 36


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
    previous = None
    for row in rows:
        row["step_list"] = [row["steps"].get(p) for p in positions]
        row["trend"] = trend(previous, row["estimate"] if row["converges"] else None)
        if row["converges"] and row["estimate"]:
            previous = row["estimate"]
    return {"name": runbook.name, "positions": positions, "rows": rows, "chart": trend_svg(rows)}


def trend(before: float | None, now: float | None) -> str:
    """The estimate against the last run's that gave one: '−12 %' faster, '+5 %' slower."""
    if not before or now is None:
        return ""
    change = 100 * (now - before) / before
    return f"{change:+.0f} %".replace("-", "−")


def trend_svg(rows: list[dict[str, Any]]) -> str:
    """Actual total (solid) and the estimate for the real repair (dashed) per run, oldest left.
    Each point carries ``data-seconds`` (what it draws) and the root ``data-px-per-second``."""
    points = [(i, row.get("total"), row.get("estimate") if row.get("converges") else None)
              for i, row in enumerate(rows)]
    values = [v for _, a, e in points for v in (a, e) if v]
    if len(rows) < 2 or not values:
        return ""
    top = max(values)
    scale = (CHART_H - 2 * PAD) / top
    step = (CHART_W - 2 * PAD) / (len(rows) - 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" width="{CHART_W}" height="{CHART_H}" '
           f'viewBox="0 0 {CHART_W} {CHART_H}" data-px-per-second="{scale!r}" role="img" '
           f'aria-label="Runs over time: actual duration and restoration-time estimate">',
           f'<text x="4" y="{PAD - 10}" font-size="9">{tick(top)}</text>'
           f'<line x1="{PAD}" y1="{CHART_H - PAD}" x2="{CHART_W - PAD}" y2="{CHART_H - PAD}" stroke="#bdbdbd"/>']
    for series, index, style in (("actual", 1, 'stroke="#1565c0"'),
                                 ("estimate", 2, 'stroke="#6d4c41" stroke-dasharray="4 3"')):
        pts = [(PAD + i * step, CHART_H - PAD - p[index] * scale, p[index], i) for i, p in enumerate(points)
               if p[index]]
        if len(pts) > 1:
            out.append(f'<polyline class="{series}" fill="none" {style} stroke-width="1.5" '
                       f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in pts)}"/>')
        for x, y, seconds, i in pts:
            run = rows[i]["rehearsal"]
            out.append(f'<circle class="{series}" data-seconds="{seconds!r}" cx="{x:.1f}" cy="{y:.1f}" r="3" '
                       f'fill="#fff" {style}><title>{escape(run.kind_label)} #{run.pk}: {series} '
                       f'{tick(seconds)}</title></circle>')
    for i, row in enumerate(rows):
        out.append(f'<text x="{PAD + i * step:.1f}" y="{CHART_H - PAD + 14}" font-size="9" '
                   f'text-anchor="middle">#{row["rehearsal"].pk}</text>')
    out.append(f'<text x="{PAD}" y="{CHART_H - 4}" font-size="9">solid: actual duration · dashed: '
               f'estimate for the real repair</text></svg>')
    return "".join(out)
