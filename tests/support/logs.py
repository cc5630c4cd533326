"""Large logs for the log viewer's tests and bench: rows written straight into StepEvent (with their log
columns, as the event sink writes them), in batches, and the step run's last_seq moved past them."""
from __future__ import annotations

import datetime as dt
from typing import Callable

from django.db.models import F

from rehearsals.models import StepEvent, StepRun

BATCH = 5000


def default_line(i: int) -> tuple[str, str]:
    """Line i (1-based) of a synthetic build log: every 1000th on stderr saying "error", the rest numbered."""
    if i % 1000 == 0:
        return f"line {i} error: disk {i // 1000} is slow", "stderr"
    return f"line {i} \x1b[32mok\x1b[0m copying block {i * 7} of the datafile", "stdout"


def bulk_log(run: StepRun, n: int, line: Callable[[int], tuple[str, str]] = default_line, *,
             phases: dict[int, str] | None = None, start: dt.datetime | None = None,
             seconds_per_line: float = 0.001) -> None:
    """Append ``n`` events to ``run``: log lines from ``line(i)``, and a phase event at each index of ``phases``
    (that index is then a phase, not a line)."""
    phases = phases or {}
    first = StepRun.objects.values_list("last_seq", flat=True).get(pk=run.pk) + 1
    start = start or dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=n * seconds_per_line)
    rows = []
    for i in range(1, n + 1):
        ts = start + dt.timedelta(seconds=i * seconds_per_line)
        if i in phases:
            rows.append(StepEvent.of(run.pk, first + i - 1, ts, "phase", {"name": phases[i]}))
        else:
            text, stream = line(i)
            rows.append(StepEvent.of(run.pk, first + i - 1, ts, "log", {"line": text, "stream": stream}))
        if len(rows) >= BATCH:
            StepEvent.objects.bulk_create(rows)
            rows = []
    StepEvent.objects.bulk_create(rows)
    StepRun.objects.filter(pk=run.pk).update(last_seq=F("last_seq") + n)
    run.refresh_from_db()
