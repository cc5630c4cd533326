"""The runbook pages: the versions, one version's steps (an editor while it has not run), a diff between
two versions. Thin: the changes are ``editing``'s, the step forms ``forms``'."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.roles import require_operator, require_reader

from . import editing
from .forms import StepForm
from .kinds import UnknownStepKind, registry
from .models import Runbook, RunbookLocked, StepSpec
from .params import ParamErrors


def steps_of(runbook: Runbook) -> list[dict]:
    out = []
    for s in runbook.steps.order_by("position"):
        try:
            summary = registry.get(s.kind).summary(s.params)
        except UnknownStepKind:
            summary = ""
        out.append({"pk": s.pk, "position": s.position, "title": s.title, "kind": s.kind, "target": s.target,
                    "needs_approval": s.needs_approval, "estimated_seconds": s.estimated_seconds,
                    "milestone": s.get_milestone_display() if s.milestone else "", "summary_text": summary})
    return out


@login_required
def runbook_list(request):
    require_reader(request.user)
    return render(request, "runbooks/list.html", {"runbooks": Runbook.objects.prefetch_related("steps")})


@login_required
def runbook_steps(request):
    """The steps of the version chosen in a form (the new-rehearsal page swaps this fragment in)."""
    require_reader(request.user)
    value = request.GET.get("runbook", "")
    runbook = Runbook.objects.filter(pk=int(value)).first() if value.isdigit() and len(value) < 19 else None
    return render(request, "runbooks/_steps.html", {"runbook": runbook, "steps": steps_of(runbook) if runbook else []})


@login_required
def runbook_detail(request, pk: int):
    require_reader(request.user)
    runbook = get_object_or_404(Runbook, pk=pk)
    versions = Runbook.objects.filter(name=runbook.name).order_by("-version")
    return render(request, "runbooks/detail.html", {
        "runbook": runbook, "steps": steps_of(runbook), "versions": versions,
        "kinds": sorted(registry.all(), key=lambda k: k.label), "locked": runbook.is_locked,
    })


@login_required
@require_POST
def runbook_new_version(request, pk: int):
    require_operator(request.user)
    runbook = get_object_or_404(Runbook, pk=pk)
    copy = runbook.new_version(request.user)
    messages.success(request, f"Created {copy} from {runbook}; edit its steps here")
    return redirect("runbooks:detail", pk=copy.pk)


def _read_only(request, runbook: Runbook):
    """A version that has run opens no step form: back to its page, saying why."""
    if not runbook.is_locked:
        return None
    messages.error(request, f"{runbook} has already run and is read-only; make a new version to edit it")
    return redirect("runbooks:detail", pk=runbook.pk)


def _step_page(request, runbook: Runbook, kind, form: StepForm, spec: StepSpec | None, status: int = 200):
    return render(request, "runbooks/step_form.html", {
        "runbook": runbook, "kind": kind, "form": form, "spec": spec}, status=status)


def _save(request, runbook: Runbook, kind, spec: StepSpec | None):
    form = StepForm(kind, request.POST, spec=spec)
    if form.is_valid():
        params = form.params()
        if form.is_valid():   # params() adds an error for a JSON field that does not parse
            try:
                saved = editing.save_step(runbook, kind.name, form.cleaned_data, params, spec)
            except ParamErrors as exc:
                form.add_schema_errors(exc.errors)
            except RunbookLocked as exc:
                messages.error(request, exc.messages[0])
                return redirect("runbooks:detail", pk=runbook.pk)
            else:
                messages.success(request, f"Saved step {saved.position} ({saved.title}) of {runbook}")
                return redirect("runbooks:detail", pk=runbook.pk)
    return _step_page(request, runbook, kind, form, spec, status=400)


@login_required
def step_add(request, pk: int):
    require_operator(request.user)
    runbook = get_object_or_404(Runbook, pk=pk)
    if refused := _read_only(request, runbook):
        return refused
    try:
        kind = registry.get(request.GET.get("kind") or request.POST.get("kind", ""))
    except UnknownStepKind as exc:
        messages.error(request, exc.errors[0])
        return redirect("runbooks:detail", pk=runbook.pk)
    if request.method == "POST":
        return _save(request, runbook, kind, None)
    default = StepSpec._meta.get_field("target").default
    target = default if default in kind.targets else sorted(kind.targets)[0]
    return _step_page(request, runbook, kind, StepForm(kind, initial={"target": target}), None)


@login_required
def step_edit(request, pk: int, step: int):
    require_operator(request.user)
    runbook = get_object_or_404(Runbook, pk=pk)
    spec = get_object_or_404(StepSpec, pk=step, runbook=runbook)
    if refused := _read_only(request, runbook):
        return refused
    kind = registry.get(spec.kind)
    if request.method == "POST":
        return _save(request, runbook, kind, spec)
    return _step_page(request, runbook, kind, StepForm(kind, spec=spec), spec)


@login_required
@require_POST
def step_change(request, pk: int, step: int, change: str):
    """Move a step up or down, or delete it."""
    require_operator(request.user)
    runbook = get_object_or_404(Runbook, pk=pk)
    spec = get_object_or_404(StepSpec, pk=step, runbook=runbook)
    try:
        if change == "up":
            editing.move_step(spec, -1)
        elif change == "down":
            editing.move_step(spec, +1)
        elif change == "delete":
            editing.delete_step(spec)
            messages.success(request, f"Deleted step {spec.position} ({spec.title})")
        else:
            messages.error(request, f"unknown change {change[:20]!r} (up, down, delete)")
    except RunbookLocked as exc:
        messages.error(request, exc.messages[0])
    return redirect("runbooks:detail", pk=runbook.pk)


@login_required
def runbook_compare(request, pk: int):
    """``?against=<other version's id>``: the other version of the same runbook, the previous one by default."""
    require_reader(request.user)
    runbook = get_object_or_404(Runbook, pk=pk)
    versions = Runbook.objects.filter(name=runbook.name).order_by("-version")
    against = request.GET.get("against", "")
    other = versions.filter(pk=int(against)).first() if against.isdigit() and len(against) < 19 else \
        versions.filter(version__lt=runbook.version).first()
    lines = editing.version_diff(other, runbook) if other else []
    return render(request, "runbooks/compare.html", {"runbook": runbook, "other": other, "versions": versions,
                                                  "lines": lines})
