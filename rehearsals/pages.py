"""The operator pages around the runs: the approvals inbox and host onboarding. Thin: a decision goes
through ``actions.perform`` (the same table as the API and the WebSocket); pinning a host key writes the
audit timeline through ``audit.record``."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.roles import can_administer, can_operate, require_reader
from inventory.forms import HostScanForm
from inventory.models import ProductionHost
from runbooks.kinds import registry
from workers.engines.endpoint import SSHError, fingerprint
from workers.engines.ssh import scan_host_key

from . import actions
from .audit import record
from .models import Approval, StepRun
from .state import rehearsal_state

INBOX_DECIDED_SHOWN = 50
HOST_SCAN_TIMEOUT = 5.0


def _with_plans(approvals, user) -> list[dict]:
    """Each approval with its step's panel as the rehearsal page shows it (the plan to approve). A decided
    one shows its step's summary only: its plan is in the rehearsal's page and report."""
    states: dict[int, dict] = {}
    items = []
    for approval in approvals:
        run = approval.step_run
        if approval.decision != Approval.Decision.PENDING:
            items.append({"approval": approval, "run": run, "panel_html": "",
                          "summary": registry.get(run.step.kind).summary(run.step.params)})
            continue
        if run.rehearsal_id not in states:
            states[run.rehearsal_id] = rehearsal_state(run.rehearsal, user)
        step = next((s for s in states[run.rehearsal_id]["steps"] if s["run"] and s["run"]["id"] == run.pk), None)
        items.append({"approval": approval, "run": run, "summary": step["summary"] if step else "",
                      "panel_html": (step["run"] or {}).get("panel_html", "") if step else ""})
    return items


def _approvals():
    return Approval.objects.select_related("step_run__step", "step_run__rehearsal__incident",
                                           "step_run__rehearsal__runbook", "step_run__rehearsal__hypervisor",
                                           "requested_by", "approver")


def _pending():
    return _approvals().filter(decision=Approval.Decision.PENDING,
                               step_run__status=StepRun.Status.AWAITING_APPROVAL).order_by("requested_at", "pk")


@login_required
def approvals_inbox(request):
    require_reader(request.user)
    user = request.user
    pending = _pending()
    if can_operate(user):
        waiting = pending.exclude(requested_by=user)
        mine = _approvals().filter(requested_by=user).order_by("-requested_at", "-pk")[:INBOX_DECIDED_SHOWN]
    else:
        waiting, mine = pending, []
    return render(request, "rehearsals/approvals.html", {
        "waiting": _with_plans(waiting, user), "mine": _with_plans(mine, user),
    })


@login_required
@require_POST
def approval_decide(request, pk: int, decision: str):
    """Approve or reject from the inbox. The four-eyes rule and the state are the transition's to check."""
    if decision not in ("approve", "reject"):
        return HttpResponseBadRequest(f"unknown decision {decision[:20]!r}: approve or reject")
    approval = get_object_or_404(Approval.objects.select_related("step_run"), pk=pk)
    run = approval.step_run
    try:
        message = actions.perform(run.rehearsal_id, decision, request.user,
                                  {"step_run": run.pk, "note": request.POST.get("note", "")})
        ok = True
    except actions.ActionError as exc:
        message, ok = str(exc), False
    if request.htmx:
        approval.refresh_from_db()
        item = _with_plans([_approvals().get(pk=pk)], request.user)[0]
        return render(request, "rehearsals/_approval.html", {
            "item": item, "result": {"ok": ok, "message": message}, "decidable": True})
    (messages.success if ok else messages.error)(request, message)
    return redirect("rehearsals:approvals")


# --- host onboarding: scan → show the fingerprint → a person confirms → pinned (audited) ---------------

def _require_administrator(user) -> None:
    if not can_administer(user):
        raise PermissionDenied("adding a production host and pinning its key needs the admins role")


@login_required
def host_list(request):
    require_reader(request.user)
    return render(request, "rehearsals/hosts.html", {"hosts": ProductionHost.objects.all(),
                                                     "can_onboard": can_administer(request.user)})


@login_required
def host_onboard(request):
    """Step 1 (GET / POST without ``confirm``): scan the host's SSH key and show its fingerprint.
    Step 2 (POST with ``confirm`` and the scanned key): pin it. A key that changed between the two is refused."""
    _require_administrator(request.user)
    form = HostScanForm(request.POST or None)
    scanned = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            presented = scan_host_key(data["address"], data["port"], timeout=HOST_SCAN_TIMEOUT)
        except SSHError as exc:
            form.add_error(None, f"could not fetch the host key: {exc}")
        else:
            scanned = {"key": presented, "fingerprint": fingerprint(presented)}
            if "confirm" in request.POST:
                if request.POST.get("host_key") != presented:
                    form.add_error(None, "the host now presents another key than the one you confirmed "
                                         f"(now {scanned['fingerprint']}); compare it again")
                else:
                    try:
                        host = _pin(data, presented, request.user)
                    except (ValidationError, IntegrityError) as exc:   # e.g. the name taken meanwhile
                        form.add_error(None, "; ".join(getattr(exc, "messages", None) or [str(exc)]))
                    else:
                        messages.success(request, f"{host.name} added; host key {scanned['fingerprint']} pinned")
                        return redirect("rehearsals:hosts")
    return render(request, "rehearsals/host_onboard.html", {"form": form, "scanned": scanned})


@transaction.atomic
def _pin(data: dict, host_key: str, user) -> ProductionHost:
    host = ProductionHost(name=data["name"], address=data["address"], port=data["port"], user=data["user"],
                          key_path=data["key_path"], notes=data["notes"], host_key=host_key)
    host.full_clean()
    host.save()
    record(None, user, "inventory.host_key_confirmed",
           f"production host {host.name} ({host.address}:{host.port}): host key {fingerprint(host_key)} "
           f"confirmed by {user.username} and pinned")
    return host
