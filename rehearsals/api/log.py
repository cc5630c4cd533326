"""A step run's events and log over the API: ``/api/v1/step-runs/<id>/events/`` and ``…/log/…``. Thin: the
reads are ``rehearsals.logs``; this module checks the query string (a wrong value is a 400 naming it) and shapes
the answer. Reading needs the reader role, as every GET of the API (``accounts.api.ReadOrOperate``)."""
from __future__ import annotations

from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import logs
from ..models import LINE_PREVIEW_CHARS, StepRun

MAX_SEQ = 2**63 - 1


def _seq(**kw) -> serializers.IntegerField:
    return serializers.IntegerField(required=False, min_value=0, max_value=MAX_SEQ, **kw)


def _params(request, filters: type[serializers.Serializer]) -> dict:
    given = request.query_params
    empty = {name: ["must not be empty"] for name in filters().fields if given.get(name) == ""}
    if empty:
        raise ValidationError(empty)
    checked = filters(data=given)
    checked.is_valid(raise_exception=True)
    return {k: v for k, v in checked.validated_data.items() if v is not None}


def _step_run(pk: int) -> StepRun:
    return get_object_or_404(StepRun, pk=pk)


def _header(run: StepRun) -> dict:
    return {"step_run": run.pk, "status": run.status, "last_seq": run.last_seq}


class EventPageParams(serializers.Serializer):
    after_seq = _seq(default=0, help_text="Events with a seq greater than this.")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=logs.MAX_PAGE,
                                     default=logs.DEFAULT_PAGE)


class StepRunEvents(APIView):
    """Every event of a step run (log lines, progress, phases, data) after a seq, in seq order, as the WebSocket
    sends them; a long line is cut as in the log."""

    @extend_schema(parameters=[EventPageParams], responses=inline_serializer("EventPage", {
        "step_run": serializers.IntegerField(), "status": serializers.CharField(),
        "last_seq": serializers.IntegerField(), "events": serializers.ListField(child=serializers.DictField())}))
    def get(self, request, id: int):
        p = _params(request, EventPageParams)
        run = _step_run(id)
        events = [ev.as_frame() for ev in run.events.filter(seq__gt=p["after_seq"]).order_by("seq")[:p["limit"]]]
        return Response({**_header(run), "events": events})


class LogPageParams(serializers.Serializer):
    tail = serializers.IntegerField(required=False, min_value=1, max_value=logs.MAX_PAGE,
                                    help_text="The last N events (the viewer opens with this).")
    after = _seq(help_text="Events with a seq greater than this (scrolling down).")
    before = _seq(help_text="The events just before this seq (scrolling up).")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=logs.MAX_PAGE,
                                     default=logs.DEFAULT_PAGE)

    def validate(self, data):
        if "tail" in data and ("after" in data or "before" in data):
            raise ValidationError({"tail": ["tail cannot be combined with after or before"]})
        return data


LINE_ROWS = inline_serializer("LogPage", {
    "step_run": serializers.IntegerField(), "status": serializers.CharField(), "last_seq": serializers.IntegerField(),
    "lines": serializers.ListField(child=serializers.DictField(), help_text=(
        "One row per event, in seq order: {seq, ts, kind, stream, line} for a log line (with length and "
        f"truncated: true when the line is longer than {LINE_PREVIEW_CHARS} characters and cut), "
        "{seq, ts, kind, payload} for the other kinds."))})


class StepRunLog(APIView):
    """A page of a step run's log by seq: the tail, the page after a seq or the page before one."""

    @extend_schema(parameters=[LogPageParams], responses=LINE_ROWS)
    def get(self, request, id: int):
        p = _params(request, LogPageParams)
        run = _step_run(id)
        if not {"tail", "after", "before"} & set(p):
            p["tail"] = p["limit"]
        lines = logs.page(run, tail=p.get("tail"), after=p.get("after"), before=p.get("before"), limit=p["limit"])
        return Response({**_header(run), "lines": lines})


class SearchParams(serializers.Serializer):
    q = serializers.CharField(max_length=logs.MAX_QUERY_CHARS, trim_whitespace=False,
                              help_text="Text to find in the log's lines, ignoring case (not a pattern).")
    after = _seq(default=0, help_text="Hits with a seq greater than this (the next page of seqs).")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=logs.SEARCH_HITS_PAGE,
                                     default=logs.SEARCH_HITS_PAGE)

    def validate_q(self, value):
        if "\x00" in value:
            raise ValidationError("must not contain a NUL character")
        return value


class StepRunLogSearch(APIView):
    """Search the whole log of a step run on the server, also while it runs: the number of lines that contain the
    text and their seqs in order (paged: ask again with ``after`` = the last seq you got)."""

    @extend_schema(parameters=[SearchParams], responses=inline_serializer("LogSearch", {
        "step_run": serializers.IntegerField(), "status": serializers.CharField(),
        "last_seq": serializers.IntegerField(), "q": serializers.CharField(),
        "count": serializers.IntegerField(help_text="Lines that contain q, in the whole log."),
        "seqs": serializers.ListField(child=serializers.IntegerField())}))
    def get(self, request, id: int):
        p = _params(request, SearchParams)
        run = _step_run(id)
        count, seqs = logs.search(run, p["q"], after=p["after"], limit=p["limit"])
        return Response({**_header(run), "q": p["q"], "count": count, "seqs": seqs})


class ErrorParams(serializers.Serializer):
    after = _seq(default=0, help_text="Error lines with a seq greater than this (the next error after a line).")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=logs.SEARCH_HITS_PAGE,
                                     default=logs.SEARCH_HITS_PAGE)


class StepRunLogErrors(APIView):
    """The error lines of a step run's log — on stderr, or saying "error" (any case) —: how many, and their seqs
    after a line (the log viewer's "next error")."""

    @extend_schema(parameters=[ErrorParams], responses=inline_serializer("LogErrors", {
        "step_run": serializers.IntegerField(), "status": serializers.CharField(),
        "last_seq": serializers.IntegerField(),
        "count": serializers.IntegerField(help_text="Error lines in the whole log."),
        "seqs": serializers.ListField(child=serializers.IntegerField())}))
    def get(self, request, id: int):
        p = _params(request, ErrorParams)
        run = _step_run(id)
        count, seqs = logs.search(run, None, errors=True, after=p["after"], limit=p["limit"])
        return Response({**_header(run), "count": count, "seqs": seqs})


class StepRunLogSections(APIView):
    """The step run's phases (collapsible sections in the log viewer): name, first and last seq, start, seconds."""

    @extend_schema(responses=inline_serializer("LogSections", {
        "step_run": serializers.IntegerField(), "status": serializers.CharField(),
        "last_seq": serializers.IntegerField(),
        "sections": serializers.ListField(child=serializers.DictField())}))
    def get(self, request, id: int):
        run = _step_run(id)
        return Response({**_header(run), "sections": logs.sections(run)})


class LineParams(serializers.Serializer):
    seq = serializers.IntegerField(min_value=1, max_value=MAX_SEQ, help_text="The line's seq.")


class StepRunLogLine(APIView):
    """One line of the log, whole however long ("show all" of a line the log cut)."""

    @extend_schema(parameters=[LineParams], responses=inline_serializer("LogLine", {
        "seq": serializers.IntegerField(), "kind": serializers.CharField(), "stream": serializers.CharField(),
        "line": serializers.CharField(), "length": serializers.IntegerField()}))
    def get(self, request, id: int):
        p = _params(request, LineParams)
        line = logs.whole_line(_step_run(id), p["seq"])
        if line is None:
            raise NotFound(f"step run {id} has no event {p['seq']}")
        return Response(line)


class StepRunLogRaw(APIView):
    """The whole log as plain text, one line per log event, streamed while it is read from the database."""

    @extend_schema(responses={(200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, "The log's text.")})
    def get(self, request, id: int):
        run = _step_run(id)
        response = StreamingHttpResponse(logs.raw_lines(run.pk), content_type="text/plain; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="step-run-{run.pk}.log"'
        response["X-Content-Type-Options"] = "nosniff"
        return response


def urlpatterns():
    return [
        path("step-runs/<int:id>/events/", StepRunEvents.as_view(), name="step-run-events"),
        path("step-runs/<int:id>/log/", StepRunLog.as_view(), name="step-run-log"),
        path("step-runs/<int:id>/log/search/", StepRunLogSearch.as_view(), name="step-run-log-search"),
        path("step-runs/<int:id>/log/errors/", StepRunLogErrors.as_view(), name="step-run-log-errors"),
        path("step-runs/<int:id>/log/sections/", StepRunLogSections.as_view(), name="step-run-log-sections"),
        path("step-runs/<int:id>/log/line/", StepRunLogLine.as_view(), name="step-run-log-line"),
        path("step-runs/<int:id>/log/raw/", StepRunLogRaw.as_view(), name="step-run-log-raw"),
    ]
