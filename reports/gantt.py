"""The Gantt chart of a run's steps as server-side SVG (so it prints into the PDF):
per step, the estimate (hatched) and every attempt as it really ran, on one time axis
from the run's start. ``data-seconds`` on each bar is the duration it draws; the root's
``data-px-per-second`` is the scale, so a bar's width is exactly seconds × scale."""
from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any

WIDTH, LABEL, ROW, BAR = 900, 260, 26, 9
STATUS_COLOURS = {"succeeded": "#2e7d32", "failed": "#c62828", "skipped": "#9e9e9e"}


def _t(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def tick(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def gantt_svg(snapshot: dict[str, Any], now: dt.datetime | None = None) -> str:
    """``now``: draw an attempt still running as an elapsed bar up to that moment (the live page)."""
    steps = snapshot["steps"]
    starts = [_t(a["started_at"]) for s in steps for a in s["attempts"] if a["started_at"]]
    origin = _t(snapshot["rehearsal"]["started_at"]) or (min(starts) if starts else None)
    bars: list[tuple[int, str, float, float, str, str]] = []  # row, role, offset, seconds, colour, title
    span = 1.0
    cursor = 0.0  # where a step that never ran would have started by the estimates
    for row, s in enumerate(steps):
        estimate = s["dress_estimate_seconds"] if s["dress_estimate_seconds"] is not None \
            else s["estimated_seconds"]
        ran = [a for a in s["attempts"] if a["started_at"] and a["finished_at"] and origin]
        running = [a for a in s["attempts"] if now and origin and a["started_at"] and not a["finished_at"]]
        first = (ran + running)[0] if ran or running else None
        begin = (_t(first["started_at"]) - origin).total_seconds() if first else cursor
        bars.append((row, "estimate", begin, float(estimate or 0), "#90a4ae", f"estimate {tick(estimate or 0)}"))
        for a in ran:
            offset = (_t(a["started_at"]) - origin).total_seconds()
            bars.append((row, "actual", offset, a["seconds"] or 0.0, STATUS_COLOURS.get(a["status"], "#1565c0"),
                         f"attempt {a['attempt']}: {a['status_label']}, {a['seconds']:.1f} s"))
            span = max(span, offset + (a["seconds"] or 0.0))
            cursor = max(cursor, offset + (a["seconds"] or 0.0))
        for a in running:
            offset = (_t(a["started_at"]) - origin).total_seconds()
            elapsed = max(0.0, (now - _t(a["started_at"])).total_seconds())
            bars.append((row, "elapsed", offset, elapsed, "#2563eb",
                         f"attempt {a['attempt']}: {a['status_label']}, {elapsed:.0f} s so far"))
            span = max(span, offset + elapsed)
            cursor = max(cursor, offset + elapsed)
        span = max(span, begin + float(estimate or 0))
        cursor = max(cursor, begin + float(estimate or 0)) if not (ran or running) else cursor
    scale = (WIDTH - LABEL - 20) / span
    height = ROW * len(steps) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="gantt" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" data-px-per-second="{scale!r}" role="img" '
           f'aria-label="Gantt chart: estimated and actual step durations">',
           '<defs><pattern id="hatch" width="4" height="4" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect width="2" height="4" fill="#90a4ae"/></pattern></defs>']
    for i in range(6):
        x = LABEL + (WIDTH - LABEL - 20) * i / 5
        out.append(f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="{height - 20}" stroke="#e0e0e0"/>'
                   f'<text x="{x:.1f}" y="10" font-size="9" text-anchor="middle">{tick(span * i / 5)}</text>')
    for row, s in enumerate(steps):
        y = 20 + row * ROW
        out.append(f'<text x="4" y="{y + 12}" font-size="10">{s["position"]}. {escape(s["title"][:42])}</text>')
    for row, role, offset, seconds, colour, title in bars:
        y = 20 + row * ROW + (2 if role == "estimate" else 2 + BAR + 2)
        fill = "url(#hatch)" if role == "estimate" else colour
        out.append(f'<rect class="bar {role}" data-step="{steps[row]["position"]}" data-seconds="{seconds!r}" '
                   f'x="{LABEL + offset * scale:.3f}" y="{y}" width="{seconds * scale!r}" height="{BAR}" '
                   f'fill="{fill}" stroke="{colour}" stroke-width="0.5"><title>{escape(title)}</title></rect>')
    running_note = ", blue still running" if now else ""
    out.append(f'<text x="{LABEL}" y="{height - 4}" font-size="9">hatched: estimate · solid: actual attempt '
               f'(green succeeded, red failed, grey skipped{running_note})</text></svg>')
    return "".join(out)
