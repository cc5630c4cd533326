"""The report pages: thin. Reading needs the ops or managers role; changes go through
``reports.lifecycle``, which checks who may make them."""
from __future__ import annotations

import datetime as dt

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.roles import is_manager, require_reader
from rehearsals.errors import TransitionError
from rehearsals.models import Rehearsal, StepEvent, StepRun
from runbooks.models import Runbook

from . import data, lifecycle
from . import render as rendering
from .forms import ActionItemForm, NarrativeForm
from .gantt import gantt_svg, tick
from .history import runbook_history
from .models import ActionItem, ReportVersion


def _rehearsal(request, pk: int) -> Rehearsal:
    require_reader(request.user)
    return get_object_or_404(Rehearsal.objects.select_related("incident"), pk=pk)


def _version(request, pk: int, number: int) -> ReportVersion:
    require_reader(request.user)
    return get_object_or_404(ReportVersion.objects.select_related("report"), report__rehearsal_id=pk, number=number)


def _zone(request) -> str | None:
    return request.GET.get("tz") or None


@login_required
def report_page(request, pk: int):
    rehearsal = _rehearsal(request, pk)
    report = lifecycle.report_for(rehearsal)
    snapshot = data.build(rehearsal)
    return render(request, "reports/page.html", {
        "rehearsal": rehearsal, "report": report, "version": None, "versions": report.versions.all(),
        "body": rendering.html_body(snapshot, _zone(request)),
        "narrative": NarrativeForm(instance=report), "generated_summary": snapshot["summary_generated"],
        "item_form": ActionItemForm(), "items": report.action_items.all(), "is_manager": is_manager(request.user),
    })


@login_required
def version_page(request, pk: int, number: int):
    version = _version(request, pk, number)
    zone = _zone(request)
    body = rendering.html_body(version.snapshot, zone) if zone else version.html
    return render(request, "reports/page.html", {
        "rehearsal": version.report.rehearsal, "report": version.report, "version": version,
        "versions": version.report.versions.all(), "body": body, "is_manager": is_manager(request.user),
    })


def _download(content, content_type: str, name: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@login_required
def report_pdf(request, pk: int):
    rehearsal = _rehearsal(request, pk)
    return _download(rendering.pdf(data.build(rehearsal), _zone(request)), "application/pdf",
                     f"incident-{rehearsal.incident_id}-rehearsal-{pk}-draft.pdf")


@login_required
def report_markdown(request, pk: int):
    rehearsal = _rehearsal(request, pk)
    return _download(rendering.markdown(data.build(rehearsal), _zone(request)), "text/markdown; charset=utf-8",
                     f"incident-{rehearsal.incident_id}-rehearsal-{pk}-draft.md")


@login_required
def report_json(request, pk: int):
    return JsonResponse(data.build(_rehearsal(request, pk)))


@login_required
def version_pdf(request, pk: int, number: int):
    v = _version(request, pk, number)
    return _download(rendering.pdf(v.snapshot, _zone(request), version=v.number), "application/pdf",
                     f"incident-{v.snapshot['incident']['id']}-rehearsal-{pk}-v{number}.pdf")


@login_required
def version_markdown(request, pk: int, number: int):
    v = _version(request, pk, number)
    return _download(rendering.markdown(v.snapshot, _zone(request), version=v.number),
                     "text/markdown; charset=utf-8",
                     f"incident-{v.snapshot['incident']['id']}-rehearsal-{pk}-v{number}.md")


@login_required
def step_log(request, step_run: int):
    """A step run's whole log as text, streamed row by row (it may hold millions of lines)."""
    require_reader(request.user)
    run = get_object_or_404(StepRun, pk=step_run)
    rows = StepEvent.objects.filter(step_run=run, kind="log").order_by("seq").values_list("payload", flat=True)
    lines = (f"{p.get('line', '')}\n" for p in rows.iterator(chunk_size=5000))
    return StreamingHttpResponse(lines, content_type="text/plain; charset=utf-8")


def _act(request, pk: int, change, done: str) -> HttpResponse:
    """Make one change through the lifecycle; a refused one is shown, not raised (a role error is: 403)."""
    try:
        result = change()
        messages.success(request, done.format(result=result))
    except TransitionError as exc:
        messages.error(request, str(exc))
    return redirect("reports:rehearsal", pk=pk)


@login_required
@require_POST
def edit(request, pk: int):
    report = lifecycle.report_for(_rehearsal(request, pk))
    form = NarrativeForm(request.POST, instance=None)
    if not form.is_valid():
        messages.error(request, form.errors.as_text())
        return redirect("reports:rehearsal", pk=pk)
    return _act(request, pk, lambda: lifecycle.edit_narrative(report, request.user, form.cleaned_data),
                "Saved the narrative.")


@login_required
@require_POST
def add_item(request, pk: int):
    report = lifecycle.report_for(_rehearsal(request, pk))
    form = ActionItemForm(request.POST)
    if not form.is_valid():
        messages.error(request, form.errors.as_text())
        return redirect("reports:rehearsal", pk=pk)
    return _act(request, pk, lambda: lifecycle.add_action_item(report, request.user, **form.cleaned_data),
                "Added the action item.")


@login_required
@require_POST
def item_done(request, pk: int, item: int):
    _rehearsal(request, pk)
    action_item = get_object_or_404(ActionItem, pk=item, report__rehearsal_id=pk)
    return _act(request, pk, lambda: lifecycle.set_action_item_done(action_item, request.user,
                                                                    request.POST.get("done") == "1"),
                "Updated the action item.")


@login_required
@require_POST
def submit(request, pk: int):
    report = lifecycle.report_for(_rehearsal(request, pk))
    return _act(request, pk, lambda: lifecycle.submit_for_review(report, request.user), "The report is in review.")


@login_required
@require_POST
def publish(request, pk: int):
    report = lifecycle.report_for(_rehearsal(request, pk))
    return _act(request, pk, lambda: lifecycle.publish(report, request.user), "Published version {result.number}.")


@login_required
@require_POST
def reviewed(request, pk: int, number: int):
    version = _version(request, pk, number)
    lifecycle.mark_reviewed(version, request.user)
    messages.success(request, f"Marked version {number} reviewed.")
    return redirect("reports:version", pk=pk, number=number)


@login_required
def runbook_page(request, pk: int):
    require_reader(request.user)
    return render(request, "reports/runbook.html", {"history": runbook_history(get_object_or_404(Runbook, pk=pk))})


LIVE_GANTT_REFRESH_SECONDS = 5


@login_required
def live_gantt(request, pk: int):
    """The rehearsal page's Gantt chart: the report's SVG with the running attempt drawn up to now, and the
    same as a table (status in words). The page swaps it in on each step status event; while the run is
    active the fragment also asks again every few seconds, so the elapsed bar grows."""
    rehearsal = _rehearsal(request, pk)
    snapshot = data.build(rehearsal)
    now = timezone.now()
    rows = []
    for s in snapshot["steps"]:
        estimate = s["dress_estimate_seconds"] if s["dress_estimate_seconds"] is not None else s["estimated_seconds"]
        latest = s["attempts"][-1] if s["attempts"] else None
        if latest and latest["started_at"] and not latest["finished_at"]:
            shown = f"{tick((now - dt.datetime.fromisoformat(latest['started_at'])).total_seconds())} so far"
        elif latest and latest["seconds"] is not None:
            shown = tick(latest["seconds"])
        else:
            shown = "—"
        rows.append({"position": s["position"], "title": s["title"], "status": s["status"] or "not_started",
                     "status_label": s["status_label"], "estimate": tick(estimate or 0), "actual": shown})
    return render(request, "reports/_live_gantt.html", {
        "rehearsal": rehearsal, "svg": gantt_svg(snapshot, now=now), "rows": rows,
        "refresh": LIVE_GANTT_REFRESH_SECONDS if rehearsal.status == Rehearsal.Status.RUNNING else None})
