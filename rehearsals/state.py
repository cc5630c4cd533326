"""Everything the rehearsal page and the API show about a rehearsal, as plain data.

Generic: it never names a step kind. What is special about a kind's results is
rendered by the kind's own panel template (``StepKind.panel``, in its folder under
``steps/``) into ``run.panel_html``; the page inserts it as it is.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from django.template import engines

from accounts.roles import can_operate
from runbooks.kinds import registry
from workers.engines.endpoint import fingerprint

from .lifecycle import next_step
from .models import Clone, Finding, Rehearsal

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
            run_data = {
                "id": run.pk, "attempt": run.attempt, "status": run.status,
                "status_label": run.get_status_display(), "error": run.error, "result": run.result,
                "progress": run.progress, "last_seq": run.last_seq,
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
    clone = Clone.objects.filter(rehearsal=rehearsal).first()
    return {
        "clone": None if clone is None else {
            "status": clone.status, "status_label": clone.get_status_display(), "domain": clone.domain_name,
            "ssh": f"{clone.user}@{clone.address}:{clone.port}" if clone.address else "",
            "host_key_fingerprint": fingerprint(clone.host_key) if clone.host_key else "",
            "point_in_time": clone.point_in_time.isoformat() if clone.point_in_time else None,
            "consistency": clone.consistency, "keep": rehearsal.keep_clone, "disk": clone.disk_path},
        "id": rehearsal.pk, "status": rehearsal.status, "status_label": rehearsal.get_status_display(),
        "mode": rehearsal.mode, "incident": rehearsal.incident_id, "runbook": str(rehearsal.runbook),
        "hypervisor": rehearsal.hypervisor.name, "steps": steps,
        "timeline": [{"at": e.at.strftime("%Y-%m-%d %H:%M:%S"), "actor": e.actor.username if e.actor else None,
                      "action": e.action, "message": e.message}
                     for e in rehearsal.timeline.select_related("actor").order_by("at", "pk")],
    }
