"""The restoration-time estimate for the real repair, from what a run measured.

Each step's own kind projects its duration (``StepKind.report.project``): data-bound
steps scale with the production host's volumes and their measured throughput, command
steps take their measured duration. People time — approval waits and the steps a person
completes — is kept apart, as measured. Steps that did not run fall back to the
runbook's estimate and say so. Several runs of the same runbook version give a range.

The window is the production run: the leading block of steps whose work lives on the
workbench (``StepKind.carries_over``: the clone, the import, the re-initialization, the
checks on the clone) is done beforehand in the dress rehearsal and carried over, so it
is shown as preparation, outside the window the target is compared with.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from rehearsals.models import Approval, Rehearsal, StepEvent, StepRun
from runbooks.kinds import registry

HALF = 0.5


@dataclass
class StepMeasure:
    """One runbook step as a run measured it (its latest successful attempt)."""

    spec: Any
    run: StepRun | None
    seconds: float | None
    facts: dict[str, dict]
    approval_wait: float
    people: bool                 # a person completes the step: its duration is people time
    carried: bool = False        # done beforehand on the workbench: outside the production window


@dataclass
class StepProjection:
    position: int
    title: str
    measured: float | None
    projected: float | None      # None: does not converge
    method: str
    people_seconds: float
    preparation: bool = False


@dataclass
class Estimate:
    steps: list[StepProjection]
    machine_seconds: float | None
    people_seconds: float
    volumes: dict[str, float]
    converges: bool
    not_measured: list[int] = field(default_factory=list)
    preparation_seconds: float = 0.0

    @property
    def total_seconds(self) -> float | None:
        return None if self.machine_seconds is None else self.machine_seconds + self.people_seconds


def data_values(run: StepRun, keys: tuple[str, ...]) -> dict[str, Any]:
    """The latest value of each named ``data`` event of a run; only queried when a kind reads some."""
    if not keys:
        return {}
    out: dict[str, Any] = {}
    for payload in StepEvent.objects.filter(step_run=run, kind="data").order_by("seq").values_list(
            "payload", flat=True):
        if payload.get("key") in keys:
            out[payload["key"]] = payload.get("value")
    return out


def approval_wait_seconds(run: StepRun) -> float:
    return sum((a.decided_at - a.requested_at).total_seconds()
               for a in run.approvals.all() if a.decided_at and a.decision != Approval.Decision.PENDING)


def measure(rehearsal: Rehearsal) -> list[StepMeasure]:
    """Per runbook step, its latest successful attempt; a step a production run carried over
    is measured by the dress rehearsal's attempt it reuses."""
    runs: dict[int, StepRun] = {}
    done = rehearsal.step_runs.filter(status__in=[StepRun.Status.SUCCEEDED, StepRun.Status.CARRIED])
    for run in done.select_related("carried_from").prefetch_related("approvals", "carried_from__approvals"):
        if run.step_id not in runs or run.attempt > runs[run.step_id].attempt:
            runs[run.step_id] = run
    out = []
    # Like the rule a production run carries steps over by (the first unbroken block of steps
    # whose work lives on the workbench), except that a step not measured here still belongs to
    # the preparation it would be part of.
    in_block, block_ended = False, False
    for spec in rehearsal.runbook.steps.order_by("position"):
        kind = registry.get(spec.kind)
        run = runs.get(spec.pk)
        if run is not None and run.status == StepRun.Status.CARRIED:
            run = run.carried_from
        seconds = run.duration_seconds if run else None
        facts = kind.report.facts(run.result or {}, seconds, data_values(run, kind.report.data_keys)) \
            if run else {}
        carried = not block_ended and kind.carries_over(spec)
        if carried:
            in_block = True
        elif in_block:
            block_ended = True
        out.append(StepMeasure(spec, run, seconds, facts, approval_wait_seconds(run) if run else 0.0,
                               kind.interactive, carried))
    return out


def volumes_of(measures: list[StepMeasure]) -> dict[str, float]:
    """The measured volumes shared by every step's projection: the production host's
    ("volume.*") and the workbench's the rehearsal ran on ("workbench.*")."""
    volumes: dict[str, float] = {}
    for m in measures:
        for key, f in m.facts.items():
            if key.startswith(("volume.", "workbench.")) and f.get("value"):
                volumes[key] = max(volumes.get(key, 0), f["value"])
    return volumes


def estimate(measures: list[StepMeasure], *, rate_factor: float = 1.0) -> Estimate:
    volumes = volumes_of(measures)
    steps, machine, people, converges, not_measured, preparation = [], 0.0, 0.0, True, [], 0.0
    for m in measures:
        spec = m.spec
        if m.carried:
            how = "done beforehand on the workbench (carried over into the production run)"
            if m.seconds is None:
                not_measured.append(spec.position)
                how += "; not measured in this run: the runbook's estimate"
            preparation += m.seconds if m.seconds is not None else float(spec.estimated_seconds)
            steps.append(StepProjection(spec.position, spec.title, m.seconds, 0.0, how, 0.0, preparation=True))
            continue
        if m.run is None or m.seconds is None:
            not_measured.append(spec.position)
            method = "not measured in this run: the runbook's estimate"
            if m.people:
                projected, step_people = 0.0, float(spec.estimated_seconds)
                method += " (people time)"
            else:
                projected, step_people = float(spec.estimated_seconds), 0.0
        elif m.people:
            projected, method = 0.0, "a person's time (counted as people time)"
            step_people = m.seconds
        else:
            projected, method = registry.get(spec.kind).report.project(m.facts, m.seconds, volumes,
                                                                       rate_factor=rate_factor)
            step_people = 0.0
        step_people += m.approval_wait
        if projected is None:
            converges = False
        else:
            machine += projected
        people += step_people
        steps.append(StepProjection(spec.position, spec.title, m.seconds, projected, method, step_people))
    return Estimate(steps, machine if converges else None, people, volumes, converges, not_measured, preparation)


def compliance(total_seconds: float | None, target_minutes: int | None) -> dict[str, Any] | None:
    """Estimate ÷ target: < 1 within target, ≤ 2 exceeded, > 2 severely exceeded."""
    if not target_minutes:
        return None
    if total_seconds is None:
        return {"ratio": None, "label": "severely exceeded (does not converge)", "level": "severe"}
    ratio = total_seconds / (target_minutes * 60)
    if ratio < 1:
        label, level = "within target", "ok"
    elif ratio <= 2:
        label, level = "exceeded", "warn"
    else:
        label, level = "severely exceeded", "severe"
    return {"ratio": round(ratio, 3), "label": label, "level": level}


def runbook_range(rehearsal: Rehearsal) -> dict[str, Any] | None:
    """min–median–max of the estimate over the runs of the same runbook version that measured a step."""
    totals = []
    for other in Rehearsal.objects.filter(runbook=rehearsal.runbook).order_by("pk"):
        est = estimate(measure(other))
        if est.total_seconds is not None and len(est.not_measured) < len(est.steps):
            totals.append(est.total_seconds)
    if len(totals) < 2:
        return None
    return {"runs": len(totals), "min": min(totals), "median": statistics.median(totals), "max": max(totals)}
