"""Everything a report shows, gathered from what the run recorded, as one JSON-able dict
(the snapshot a published version freezes). Nothing here is typed in by hand except the
narrative ops write; what a kind's results mean comes from the kind (``StepKind.report``).
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.utils import timezone

from rehearsals.models import Approval, Clone, Finding, Rehearsal, StepEvent, StepRun, TimelineEntry
from runbooks.kinds import registry
from runbooks.models import StepSpec

from . import estimate as est
from .gantt import gantt_svg
from .models import Report

SCHEMA = 1
LOG_EXCERPT_LINES = 20
KEY_NUMBER_LABELS = {
    "bytes_cloned": "bytes cloned",
    "bytes_hashed": "bytes hashed",
    "bytes_corrupted": "bytes found corrupted",
    "bytes_sent_back": "bytes sent back",
}


def iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.timezone.utc).isoformat() if value else None


def log_excerpt(run: StepRun, lines: int = LOG_EXCERPT_LINES) -> list[dict]:
    """The last ``lines`` log lines, read by a seq range from the end (never the whole log)."""
    window = lines * 4
    while True:
        rows = list(StepEvent.objects.filter(step_run=run, seq__gt=max(0, run.last_seq - window), kind="log")
                    .order_by("-seq").values_list("seq", "payload")[:lines])
        if len(rows) >= lines or window >= run.last_seq:
            break
        window *= 8
    return [{"seq": seq, "line": p.get("line", ""), "stream": p.get("stream", "stdout")}
            for seq, p in reversed(rows)]


def _user(u) -> str | None:
    return u.username if u else None


def _approvals(run: StepRun) -> list[dict]:
    return [{"requested_by": _user(a.requested_by), "approver": _user(a.approver), "decision": a.decision,
             "note": a.note, "requested_at": iso(a.requested_at), "decided_at": iso(a.decided_at),
             "wait_seconds": (a.decided_at - a.requested_at).total_seconds() if a.decided_at else None}
            for a in sorted(run.approvals.all(), key=lambda a: a.requested_at)]


def _attempt(run: StepRun) -> dict:
    kind = registry.get(run.step.kind)
    result = run.result or {}
    return {
        "id": run.pk, "attempt": run.attempt, "status": run.status, "status_label": run.get_status_display(),
        "queued_at": iso(run.queued_at), "started_at": iso(run.started_at), "finished_at": iso(run.finished_at),
        "seconds": run.duration_seconds, "requested_by": _user(run.requested_by),
        "approvals": _approvals(run), "error": run.error,
        "note": result.get("note", "") if run.status == StepRun.Status.SKIPPED or kind.interactive else "",
        "confirmed_by": result.get("confirmed_by", "") if kind.interactive else "",
        "carried_from_rehearsal": run.carried_from.rehearsal_id if run.carried_from_id else None,
        "carried_finished_at": iso(run.carried_from.finished_at) if run.carried_from_id else None,
        "log_lines": run.last_seq, "log_excerpt": log_excerpt(run) if run.last_seq else [],
    }


def _steps(rehearsal: Rehearsal, measures: list[est.StepMeasure], projection: est.Estimate,
           dress: dict[int, float | None]) -> list[dict]:
    by_step: dict[int, list[StepRun]] = {}
    runs = rehearsal.step_runs.select_related("step", "requested_by", "carried_from").prefetch_related(
        "approvals__approver", "approvals__requested_by").order_by("attempt")
    for run in runs:
        by_step.setdefault(run.step_id, []).append(run)
    out = []
    for m, p in zip(measures, projection.steps):
        spec: StepSpec = m.spec
        kind = registry.get(spec.kind)
        attempts = by_step.get(spec.pk, [])
        latest = attempts[-1] if attempts else None
        plan = None
        if m.run is not None:
            approved = [a for a in m.run.approvals.all() if a.decision == Approval.Decision.APPROVED]
            plan = approved[-1].plan if approved else None
        out.append({
            "position": spec.position, "title": spec.title, "kind": spec.kind, "kind_label": kind.label,
            "target": spec.target, "milestone": spec.milestone, "milestone_label": spec.get_milestone_display()
            if spec.milestone else "", "estimated_seconds": spec.estimated_seconds,
            "dress_estimate_seconds": dress.get(spec.position),
            "projected_seconds": p.projected, "projection_method": p.method, "people_seconds": p.people_seconds,
            "status": latest.status if latest else "", "status_label": latest.get_status_display() if latest
            else "not run", "seconds": m.seconds,
            "facts": m.facts, "evidence": kind.report.evidence(m.run.result or {}, plan) if m.run else [],
            "attempts": [_attempt(r) for r in attempts],
        })
    return out


def _findings(rehearsal: Rehearsal, data_bytes: float | None) -> list[dict]:
    last = rehearsal.findings.order_by("-step_run_id").values_list("step_run_id", flat=True).first()
    rows = []
    for f in Finding.objects.filter(step_run_id=last) if last else []:
        size = f.size_production or f.size_clone or 0
        rows.append({"path": f.path, "change": f.get_change_display(), "verdict": f.verdict,
                     "verdict_label": f.get_verdict_display(), "size": size,
                     "percent": round(100.0 * size / data_bytes, 3) if data_bytes else None,
                     "chunks_differ": f.chunks_differ, "chunk_count": f.chunk_count, "selected": f.selected,
                     "drift": f.drift, "drift_override": f.drift_override})
    return rows


def _timeline(rehearsal: Rehearsal) -> list[dict]:
    entries = TimelineEntry.objects.filter(rehearsal=rehearsal).select_related("actor").order_by("at", "pk")
    return [{"at": iso(e.at), "actor": _user(e.actor) or "system", "action": e.action, "message": e.message}
            for e in entries]


def _milestones(rehearsal: Rehearsal, steps: list[dict]) -> list[dict]:
    out = [{"name": "detected", "label": "incident opened", "at": iso(rehearsal.incident.opened_at)}]
    for s in steps:
        done = [a for a in s["attempts"] if a["status"] in (StepRun.Status.SUCCEEDED, StepRun.Status.CARRIED)]
        if s["milestone"] and done:
            last = done[-1]
            # a step carried over reached its milestone in the dress rehearsal, on the same workbench
            out.append({"name": s["milestone"], "label": s["milestone_label"],
                        "at": last["carried_finished_at"] or last["finished_at"], "step": s["position"],
                        "in_rehearsal": last["carried_from_rehearsal"]})
    return out


def dress_rehearsal_of(rehearsal: Rehearsal) -> Rehearsal | None:
    """The dress rehearsal a production run continues from (none for an override)."""
    return None if rehearsal.is_dress_rehearsal else rehearsal.continues_from


def _key_numbers(rehearsal: Rehearsal, measures, steps, milestones, projection) -> dict[str, Any]:
    totals: dict[str, float] = {}
    rates = []
    for m in measures:
        mapping = registry.get(m.spec.kind).report.key_numbers
        for key, f in m.facts.items():
            if key in mapping and f.get("value") is not None:
                totals[mapping[key]] = totals.get(mapping[key], 0) + f["value"]
            if f.get("unit", "").endswith("/s") and f.get("value"):
                rates.append({"step": m.spec.position, "label": f["label"], "value": f["value"], "unit": f["unit"]})
    at = {m["name"]: m["at"] for m in milestones}
    degraded = None
    # In a dress rehearsal the service is disabled on the stand-in: production is not degraded.
    if at.get("service_disabled") and not rehearsal.is_dress_rehearsal:
        end = at.get("service_restored")
        start_t = dt.datetime.fromisoformat(at["service_disabled"])
        end_t = dt.datetime.fromisoformat(end) if end else None
        degraded = {"from": at["service_disabled"], "to": end,
                    "seconds": (end_t - start_t).total_seconds() if end_t else None}
    waits = sum(s["people_seconds"] for s in steps)
    total = None
    if rehearsal.started_at:
        total = ((rehearsal.finished_at or timezone.now()) - rehearsal.started_at).total_seconds()
    return {"bytes": [{"name": k, "label": KEY_NUMBER_LABELS.get(k, k), "value": v} for k, v in totals.items()],
            "rates": rates, "degraded": degraded, "people_seconds": waits, "total_seconds": total,
            "production_changed": not rehearsal.is_dress_rehearsal}


def _estimate_dict(projection: est.Estimate) -> dict:
    return {"total_seconds": projection.total_seconds, "machine_seconds": projection.machine_seconds,
            "people_seconds": projection.people_seconds, "converges": projection.converges,
            "preparation_seconds": projection.preparation_seconds,
            "volumes": projection.volumes, "not_measured": projection.not_measured,
            "steps": [{"position": s.position, "title": s.title, "measured": s.measured, "projected": s.projected,
                       "method": s.method, "people_seconds": s.people_seconds, "preparation": s.preparation}
                      for s in projection.steps]}


def _verdict(rehearsal: Rehearsal, steps: list[dict], estimate: dict, compliance: dict | None) -> str:
    what = rehearsal.get_mode_display()
    failed = [s for s in steps if s["status"] == StepRun.Status.FAILED]
    if rehearsal.status == Rehearsal.Status.SUCCEEDED:
        head = f"The {what} succeeded: every step is done"
    elif rehearsal.status == Rehearsal.Status.CANCELLED:
        head = f"The {what} was cancelled"
    elif failed:
        head = f"The {what} stopped at step {failed[0]['position']} ({failed[0]['title']})"
    else:
        head = f"The {what} is {rehearsal.get_status_display().lower()}"
    if estimate["total_seconds"] is None:
        return head + "; the catch-up does not converge, so the repair has no finite estimate."
    tail = f"; estimated restoration time {duration(estimate['total_seconds'])}"
    if compliance:
        tail += f" ({compliance['label']}, {compliance['ratio']:.2f}× the target)"
    return head + tail + "."


def _summary(rehearsal: Rehearsal, steps, findings, key, estimate) -> str:
    incident = rehearsal.incident
    done = sum(1 for s in steps if s["status"] in StepRun.DONE)
    repaired = [f["path"] for f in findings if f["verdict"] == "corrupted_on_production"]
    newer = sum(1 for f in findings if f["verdict"] == "newer_on_production")
    parts = [f"{incident.production_host} lost its {incident.broken_service or 'service'}; "
             f"{done} of {len(steps)} steps of {rehearsal.runbook} are done in this {rehearsal.get_mode_display()}."]
    if not key["production_changed"]:
        parts.append("Production was not changed: the steps aimed at production acted on its stand-in.")
    if key["degraded"]:
        parts.append(f"Only {incident.broken_service or 'the broken service'} was disabled"
                     + (f", for {duration(key['degraded']['seconds'])}" if key["degraded"]["seconds"] else "")
                     + "; the server stayed in production.")
    if findings:
        parts.append(f"The diff found {len(repaired)} datafile(s) corrupted on production and healthy on the "
                     f"repaired clone ({', '.join(repaired[:5])}{' …' if len(repaired) > 5 else ''}); "
                     f"{newer} more differ only because production is newer and were left alone.")
    if estimate["total_seconds"] is not None:
        parts.append(f"The real repair is estimated at {duration(estimate['total_seconds'])}, of which "
                     f"{duration(estimate['people_seconds'])} is people's time.")
    return " ".join(parts)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    h, m = divmod(minutes, 60)
    return f"{h} h {m:02d} min"


def build(rehearsal: Rehearsal) -> dict[str, Any]:
    """The snapshot of one run's report: plain JSON, everything the renderers need."""
    rehearsal = Rehearsal.objects.select_related("incident__production_host", "runbook", "hypervisor",
                                                 "created_by").get(pk=rehearsal.pk)
    report, _ = Report.objects.get_or_create(rehearsal=rehearsal)
    incident = rehearsal.incident
    measures = est.measure(rehearsal)
    projection = est.estimate(measures)
    half = est.estimate(measures, rate_factor=est.HALF)
    dress = dress_rehearsal_of(rehearsal)
    # a step carried over was not run again: nothing to compare it with
    dress_projection = {s.position: s.projected for s in est.estimate(est.measure(dress)).steps
                        if not s.preparation} if dress else {}
    steps = _steps(rehearsal, measures, projection, dress_projection)
    milestones = _milestones(rehearsal, steps)
    estimate = _estimate_dict(projection)
    compliance = est.compliance(projection.total_seconds, incident.restoration_target_minutes)
    key = _key_numbers(rehearsal, measures, steps, milestones, projection)
    findings = _findings(rehearsal, projection.volumes.get("volume.data_bytes"))
    timeline = _timeline(rehearsal)
    clones = list(Clone.objects.filter(rehearsal=rehearsal).order_by("role"))
    if rehearsal.continues_from_id:
        clones += [c for c in Clone.objects.filter(rehearsal_id=rehearsal.continues_from_id,
                                                   role=Clone.Role.WORKBENCH)]
    generated = _summary(rehearsal, steps, findings, key, estimate)
    authors = sorted({e["actor"] for e in timeline if e["actor"] != "system"}
                     | ({report.updated_by.username} if report.updated_by else set()))
    snapshot = {
        "schema": SCHEMA, "generated_at": iso(timezone.now()),
        "incident": {"id": incident.pk, "title": incident.title, "severity": incident.get_severity_display(),
                     "status": incident.get_status_display(), "broken_service": incident.broken_service,
                     "host": str(incident.production_host),
                     "host_address": f"{incident.production_host.address}:{incident.production_host.port}",
                     "target_minutes": incident.restoration_target_minutes, "opened_at": iso(incident.opened_at)},
        "rehearsal": {"id": rehearsal.pk, "mode": rehearsal.mode, "mode_label": rehearsal.get_mode_display(),
                      "status": rehearsal.get_status_display(), "runbook": str(rehearsal.runbook),
                      "hypervisor": str(rehearsal.hypervisor), "created_by": _user(rehearsal.created_by),
                      "started_at": iso(rehearsal.started_at), "finished_at": iso(rehearsal.finished_at),
                      "kind_label": rehearsal.kind_label, "override_reason": rehearsal.override_reason,
                      "clones": [{"name": str(c), "role": c.get_role_display(), "status": c.get_status_display(),
                                  "rehearsal": c.rehearsal_id, "point_in_time": iso(c.point_in_time),
                                  "consistency": c.consistency or {}} for c in clones],
                      "dress_rehearsal": dress.pk if dress else None},
        "report": {"status": report.get_status_display(), "authors": authors},
        "verdict": _verdict(rehearsal, steps, estimate, compliance),
        "summary": report.summary or generated, "summary_generated": generated,
        "key_numbers": key, "estimate": estimate,
        "estimate_half_rate": _estimate_dict(half), "compliance": compliance,
        "range": est.runbook_range(rehearsal), "milestones": milestones, "timeline": timeline,
        "steps": steps, "findings": findings,
        "failures": [{"position": s["position"], "title": s["title"], "attempt": a["attempt"], "error": a["error"],
                      "finished_at": a["finished_at"], "log_excerpt": a["log_excerpt"][-5:]}
                     for s in steps for a in s["attempts"] if a["status"] == StepRun.Status.FAILED],
        "lessons": {"went_well": report.went_well, "went_wrong": report.went_wrong, "got_lucky": report.got_lucky},
        "action_items": [{"text": a.text, "owner": a.owner, "due": a.due.isoformat() if a.due else None,
                          "done": a.done} for a in report.action_items.all()],
        "procedure": [{"position": s.position, "title": s.title, "kind": s.kind, "target": s.target,
                       "needs_approval": s.needs_approval, "estimated_seconds": s.estimated_seconds,
                       "milestone": s.milestone, "summary": registry.get(s.kind).summary(s.params),
                       "params": json.dumps(s.params, sort_keys=True, ensure_ascii=False)}
                      for s in rehearsal.runbook.steps.order_by("position")],
    }
    snapshot["gantt_svg"] = gantt_svg(snapshot)
    return snapshot
