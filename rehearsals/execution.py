"""Runs one StepRun inside a worker: the body behind the thin Celery task.

The step kind gets a ``StepContext`` (params, the Emitter that feeds the event
path, endpoints for production and the clone) and returns a result dict or
raises ``StepFailed``. Any other exception is a bug in understudy: the step
fails with the exception's text and the traceback goes to the worker log.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import close_old_connections

from workers.engines.ssh import Endpoint, Session

from . import services
from .events import StepEventSink
from .models import Rehearsal, StepRun, StepSpec
from .steps import StepFailed, registry

log = logging.getLogger(__name__)


@dataclass
class StepContext:
    step_run: StepRun
    emitter: StepEventSink

    @property
    def rehearsal(self) -> Rehearsal:
        return self.step_run.rehearsal

    @property
    def spec(self) -> StepSpec:
        return self.step_run.step

    @property
    def params(self) -> dict[str, Any]:
        return self.spec.params

    def production_endpoint(self) -> Endpoint:
        return self.rehearsal.incident.production_host.endpoint()

    def clone_endpoint(self) -> Endpoint:
        from .models import Clone

        clone = Clone.objects.filter(rehearsal=self.rehearsal).first()
        if clone is None or clone.status != Clone.Status.RUNNING:
            raise StepFailed("this rehearsal has no running clone"
                             + ("" if clone is None else f" (the clone is {clone.get_status_display().lower()})")
                             + ": run the clone step first")
        return clone.endpoint()

    def endpoint(self, target: str | None = None) -> Endpoint:
        target = target or self.spec.target
        return self.clone_endpoint() if target == StepSpec.Target.CLONE else self.production_endpoint()

    def connect(self, endpoint: Endpoint) -> Session:
        return Session.connect(endpoint)

    @property
    def approved_plan(self) -> dict[str, Any] | None:
        return services.approved_plan(self.step_run)

    def is_cancelled(self) -> bool:
        return StepRun.objects.filter(pk=self.step_run.pk, status=StepRun.Status.CANCELLED).exists()


def execute_step_run(step_run_id: int, phase: str = "run") -> str:
    """``phase``: "run" executes the step; "preview" computes the plan an approver will see."""
    close_old_connections()
    run = StepRun.objects.select_related("rehearsal__incident__production_host", "rehearsal__hypervisor",
                                         "step").get(pk=step_run_id)
    ready = services.mark_preparing(run) if phase == "preview" else services.mark_running(run)
    if not ready:
        log.info("step run %s is %s; not running its %s", run.pk, run.status, phase)
        return "not-run"
    kind = registry.get(run.step.kind)
    sink = StepEventSink(run)
    ok, result, error = False, {}, ""
    try:
        ctx = StepContext(run, sink)
        result = (kind.preview(ctx) if phase == "preview" else kind.run(ctx)) or {}
        ok = True
    except StepFailed as exc:
        error, result = str(exc), exc.result
        sink.log(f"step failed: {error}", "info")
    except Exception as exc:  # a bug: fail the step visibly rather than leave it "running"
        log.exception("step run %s crashed", run.pk)
        error = f"internal error in {run.step.kind} step: {type(exc).__name__}: {exc}"
        sink.log(error, "stderr")
    finally:
        sink.close()
    if ok and phase == "preview":
        services.request_approval(run, result)
        return "awaiting-approval"
    services.mark_finished(run, ok=ok, result=result, error=error)
    return "succeeded" if ok else "failed"
