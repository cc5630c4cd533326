"""Everything the rehearsal page and the API show about a rehearsal, as plain data.

Generic: it never names a step kind. What is special about a kind's results is
rendered by the kind's own panel template (``StepKind.panel``, in its folder under
``steps/``) into ``run.panel_html``; the page inserts it as it is.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from django.template import engines
from django.urls import reverse

from accounts.roles import can_operate, can_run_production
from runbooks.kinds import registry
from workers.engines.endpoint import fingerprint

from .dispatch import waiting_note
from .lifecycle import live_clone, next_step, production_runs_needing
from .models import Clone, Finding, Rehearsal, StepRun

FINDINGS_SHOWN = 2000


@lru_cache(maxsize=None)
def _panel_template(path: Path):
    return engines["django"].from_string("{% load understudy %}" + path.read_text())


def _finding(f: Finding) -> dict:
    return {"id": f.pk, "path": f.path, "change": f.change, "change_label": f.get_change_display(),
            "verdict": f.verdict, "verdict_label": f.get_verdict_display(), "size_clone": f.size_clone,
            "size_production": f.size_production, "chunks_differ": f.chunks_differ, "chunk_count": f.chunk_count,
            "drift": f.drift, "selected": f.selected, "drift_override": f.drift_override}


def _panel(kind, context: dict) -> str:
    path = kind.panel_path()
    return _panel_template(path).render(context) if path else ""


def _clones_shown(rehearsal: Rehearsal) -> list[Clone]:
    """Its own clones, and the workbench it continues on (a production run's, from its dress rehearsal)."""
    own = list(Clone.objects.filter(rehearsal=rehearsal).order_by("role"))
    if rehearsal.continues_from_id and not any(c.role == Clone.Role.WORKBENCH for c in own):
        borrowed = live_clone(rehearsal.continues_from)
        if borrowed is not None:
            own.insert(0, borrowed)
    return own


def _clone(clone: Clone, rehearsal: Rehearsal) -> dict:
    return {"role": clone.role, "label": clone.label, "status": clone.status,
            "status_label": clone.get_status_display(), "domain": clone.domain_name,
            "ssh": f"{clone.user}@{clone.address}:{clone.port}" if clone.address else "",
            "host_key_fingerprint": fingerprint(clone.host_key) if clone.host_key else "",
            "point_in_time": clone.point_in_time.isoformat() if clone.point_in_time else None,
            "consistency": clone.consistency, "keep": clone.rehearsal.keep_clone, "disk": clone.disk_path,
            "from_rehearsal": clone.rehearsal_id if clone.rehearsal_id != rehearsal.pk else None}


def target_labels(rehearsal: Rehearsal) -> dict[str, str]:
    """What "production" and "clone" mean in this run, as the page says them."""
    host = rehearsal.incident.production_host.name
    if rehearsal.is_dress_rehearsal:
        return {"production": f"stand-in of production ({host})", "clone": "workbench clone"}
    return {"production": f"production ({host})", "clone": "workbench clone"}


def mode_banner(rehearsal: Rehearsal) -> dict:
    if rehearsal.is_dress_rehearsal:
        text = ("Dress rehearsal: production is not changed. Steps aimed at production act on a stand-in — a "
                "second VM from the same point-in-time copy; the real host is only read (the clone's copy, the "
                "backup archive).")
        warning = ""
        if rehearsal.hypervisor.is_test_driver:
            warning = (f"{rehearsal.hypervisor} uses libvirt's test driver: no VM boots there, so the clone step "
                       f"cannot start the workbench or the stand-in. Use a real hypervisor for a dress rehearsal.")
        return {"kind": "rehearsal", "text": text, "warning": warning}
    if rehearsal.continues_from_id:
        text = (f"Production run: this changes the real production host. It continues from dress rehearsal "
                f"#{rehearsal.continues_from_id} on its repaired workbench; the steps done there are carried over.")
    else:
        text = ("Production run: this changes the real production host. No dress rehearsal to continue from; "
                f"override: {rehearsal.override_reason}")
    return {"kind": "production", "text": text, "warning": ""}


def can_run_for_real(rehearsal: Rehearsal, user) -> bool:
    """Offer "Run for real on production": a succeeded dress rehearsal with its workbench up."""
    if user is None or not can_run_production(user) or not rehearsal.is_dress_rehearsal:
        return False
    if rehearsal.status != Rehearsal.Status.SUCCEEDED or production_runs_needing(rehearsal).exists():
        return False
    workbench = live_clone(rehearsal)
    return workbench is not None and workbench.status == Clone.Status.RUNNING


def rehearsal_state(rehearsal: Rehearsal, user=None) -> dict:
    """``user``: whose page this is (panels show actions only to operators)."""
    latest = rehearsal.latest_runs()
    running = rehearsal.status == Rehearsal.Status.RUNNING
    nxt = next_step(rehearsal) if running else None
    findings_by_run: dict[int, list] = {}
    for f in rehearsal.findings.order_by("step_run_id", "-selected", "verdict", "path")[:FINDINGS_SHOWN]:
        findings_by_run.setdefault(f.step_run_id, []).append(_finding(f))
    operate = user is not None and can_operate(user)
    steps = []
    for spec in rehearsal.runbook.steps.order_by("position"):
        kind = registry.get(spec.kind)
        run = latest.get(spec.pk)
        approval = run.approvals.first() if run else None
        run_data = None
        if run is not None:
            carried = run.carried_from
            run_data = {
                "carried_from": None if carried is None else {
                    "rehearsal": carried.rehearsal_id, "step_run": carried.pk, "duration": carried.duration_seconds,
                    "url": reverse("rehearsals:detail", args=[carried.rehearsal_id]) + f"#step-{spec.position}"},
                "id": run.pk, "attempt": run.attempt, "status": run.status,
                "status_label": run.get_status_display(), "error": run.error, "result": run.result,
                "progress": run.progress, "last_seq": run.last_seq, "worker": run.worker,
                "waiting_note": waiting_note(run) if run.status in StepRun.ACTIVE else "",
                "lease_expires_at": run.lease_expires_at.isoformat() if run.lease_expires_at else None,
                "started_at": run.started_at.isoformat() if run.started_at else None,
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                "duration": run.duration_seconds,
                "findings": findings_by_run.get(run.pk, []),
                "approval": None if approval is None else {
                    "requested_by": approval.requested_by.username,
                    "approver": approval.approver.username if approval.approver else None,
                    "decision": approval.decision, "note": approval.note,
                },
            }
            if kind.panel:
                context = {"run": run_data, "step": spec, "rehearsal": rehearsal, "can_operate": operate,
                           "rehearsal_running": running, "username": getattr(user, "username", "")}
                context.update(kind.panel_context(run, context))
                run_data["panel_html"] = _panel(kind, context)
        steps.append({
            "id": spec.pk, "position": spec.position, "title": spec.title, "kind": spec.kind,
            "kind_label": kind.label, "target": spec.target, "milestone": spec.milestone,
            "needs_approval": spec.needs_approval, "estimated_seconds": spec.estimated_seconds,
            "summary": kind.summary(spec.params), "params": spec.params,
            "is_next": nxt is not None and nxt.pk == spec.pk, "run": run_data,
        })
    clones = [_clone(c, rehearsal) for c in _clones_shown(rehearsal)]
    return {
        "clone": next((c for c in clones if c["role"] == Clone.Role.WORKBENCH), None),
        "clones": clones,
        "mode_banner": mode_banner(rehearsal),
        "mode_label": rehearsal.get_mode_display(), "kind_label": rehearsal.kind_label,
        "continues_from": rehearsal.continues_from_id, "override_reason": rehearsal.override_reason,
        "production_runs": list(rehearsal.production_runs.values_list("pk", flat=True)),
        "can_run_for_real": can_run_for_real(rehearsal, user),
        "targets": target_labels(rehearsal),
        "id": rehearsal.pk, "status": rehearsal.status, "status_label": rehearsal.get_status_display(),
        "mode": rehearsal.mode, "incident": rehearsal.incident_id, "runbook": str(rehearsal.runbook),
        "hypervisor": rehearsal.hypervisor.name, "steps": steps,
        "timeline": [{"at": e.at.strftime("%Y-%m-%d %H:%M:%S"), "actor": e.actor.username if e.actor else None,
                      "action": e.action, "message": e.message}
                     for e in rehearsal.timeline.select_related("actor").order_by("at", "pk")],
    }
