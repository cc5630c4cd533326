"""Reading a step run's log, however long: the last lines, a page before or after a ``seq``, a search over the
whole log, its phase sections, one whole line, and the raw text as a stream.

Every read is bounded and filtered by the database on the (step_run, seq) index: a page is one query for a range
of ``seq`` — closed on both sides, since ``seq`` has no gaps, so the plan stays an index range however stale the
table's statistics are (PostgreSQL right after a million rows were written) —, a search is one ``LIKE`` over the
``line`` column of that step run's rows, the raw text is read a range of rows at a time (no long-lived cursor), so
a log of a million lines is never held in memory.
A line longer than ``LINE_PREVIEW_CHARS`` is cut in SQL (its JSON payload is not read) and carries its full length.
"""
from __future__ import annotations

from typing import Iterator

from django.db.models import Q
from django.db.models.functions import Length, Substr

from .models import LINE_PREVIEW_CHARS, StepEvent, StepRun

MAX_PAGE = 5000
DEFAULT_PAGE = 500
# A search returns every hit's seq up to this many; past it the count is exact and the seqs are paged.
SEARCH_HITS_PAGE = 10000
MAX_QUERY_CHARS = 200
RAW_CHUNK = 5000


def _rows(step_run_id: int, queryset) -> list[dict]:
    """Events as the log viewer shows them: a log line cut to the preview length, other kinds with their
    payload (read in a second query for those rows only, so a page of long lines never loads their JSON)."""
    raw = list(queryset.annotate(head=Substr("line", 1, LINE_PREVIEW_CHARS), length=Length("line"))
               .values_list("seq", "ts", "kind", "stream", "head", "length"))
    others = [seq for seq, _, kind, *_ in raw if kind != "log"]
    payloads = {}
    if others:
        payloads = dict(StepEvent.objects.filter(step_run_id=step_run_id, seq__in=others)
                        .values_list("seq", "payload"))
    out = []
    for seq, ts, kind, stream, head, length in raw:
        row = {"seq": seq, "ts": ts.isoformat(), "kind": kind}
        if kind == "log":
            row.update(stream=stream, line=head)
            if length > LINE_PREVIEW_CHARS:
                row.update(length=length, truncated=True)
        else:
            row["payload"] = payloads.get(seq, {})
        out.append(row)
    return out


def _events(step_run: StepRun):
    return StepEvent.objects.filter(step_run_id=step_run.pk)


def page(step_run: StepRun, *, tail: int | None = None, after: int | None = None, before: int | None = None,
         limit: int = DEFAULT_PAGE) -> list[dict]:
    """``tail``: the last ``tail`` events; ``after``: up to ``limit`` events with seq > after; ``before``: up to
    ``limit`` events with seq < before, the nearest ones. Always in seq order."""
    qs = _events(step_run)
    if tail is not None:
        last = StepRun.objects.values_list("last_seq", flat=True).get(pk=step_run.pk)
        return _rows(step_run.pk, qs.filter(seq__gt=last - tail).order_by("seq"))
    if before is not None:
        low = max(before - limit - 1, after or 0)
        return _rows(step_run.pk, qs.filter(seq__lt=before, seq__gt=low).order_by("seq"))
    after = after or 0
    return _rows(step_run.pk, qs.filter(seq__gt=after, seq__lte=after + limit).order_by("seq"))


def search(step_run: StepRun, query: str | None, *, errors: bool = False, after: int = 0,
           limit: int = SEARCH_HITS_PAGE) -> tuple[int, list[int]]:
    """(number of log lines containing ``query``, ignoring case — or, with ``errors``, the lines on stderr or
    saying "error"; the seqs of up to ``limit`` of them after ``after``). One pass when the hits fit in a page;
    a second query counts them when they do not."""
    hits = _events(step_run).filter(kind="log")
    if errors:
        hits = hits.filter(Q(stream="stderr") | Q(line__icontains="error"))
    if query:
        hits = hits.filter(line__icontains=query)
    seqs = list(hits.filter(seq__gt=after).order_by("seq").values_list("seq", flat=True)[:limit + 1])
    more = len(seqs) > limit
    seqs = seqs[:limit]
    if after == 0 and not more:
        return len(seqs), seqs
    return hits.count(), seqs


def sections(step_run: StepRun) -> list[dict]:
    """The step run's phases in order: name, first seq, last seq, start and duration (to the next phase, or to
    the end of the step run — still growing while it runs)."""
    phases = list(_events(step_run).filter(kind="phase").order_by("seq").values_list("seq", "ts", "payload"))
    out = []
    last = _events(step_run).order_by("-seq").values_list("seq", "ts").first()
    for i, (seq, ts, payload) in enumerate(phases):
        if i + 1 < len(phases):
            end_seq, end_ts = phases[i + 1][0] - 1, phases[i + 1][1]
        else:
            end_seq = last[0] if last else seq
            end_ts = step_run.finished_at or (last[1] if last else ts)
        out.append({"name": str(payload.get("name", "")), "seq": seq, "end_seq": end_seq,
                    "started": ts.isoformat(), "seconds": max(0.0, (end_ts - ts).total_seconds()),
                    "open": step_run.finished_at is None and i + 1 == len(phases)})
    return out


def whole_line(step_run: StepRun, seq: int) -> dict | None:
    row = _events(step_run).filter(seq=seq).values("seq", "kind", "stream", "line").first()
    if row is None:
        return None
    return {**row, "length": len(row["line"])}


def raw_lines(step_run_id: int) -> Iterator[str]:
    """The log's text as far as it is written when the download starts, one line per log event, read RAW_CHUNK
    events at a time by seq range (a new query per chunk: no transaction or server-side cursor stays open while
    a slow client reads)."""
    last = StepRun.objects.values_list("last_seq", flat=True).get(pk=step_run_id)
    for after in range(0, last, RAW_CHUNK):
        lines = (StepEvent.objects.filter(step_run_id=step_run_id, seq__gt=after, seq__lte=after + RAW_CHUNK,
                                          kind="log").order_by("seq").values_list("line", flat=True))
        text = "".join(f"{line}\n" for line in lines)
        if text:
            yield text
