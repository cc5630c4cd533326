"""Worker bodies: what the thin Celery tasks in ``workers.tasks`` run on a hypervisor host.

A step kind gets a ``StepContext`` (params, the Emitter that feeds the event
path, endpoints for production and the clone) and returns a result dict or
raises ``StepFailed``. Any other exception is a bug in understudy: the step
fails with the exception's text and the traceback goes to the worker log.
Clone cleanup and the hypervisor scan run here too, because they need the
hypervisor's libvirt and disks; each records its outcome on the timeline.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone

from inventory.models import Hypervisor
from runbooks.kinds import StepFailed, registry
from runbooks.models import StepSpec
from workers.engines.clone import CloneError
from workers.engines.clone import destroy_clone as destroy_clone_files
from workers.engines.hypervisor import Hypervisor as LibvirtHost
from workers.engines.ssh import Endpoint, Session

from . import lifecycle
from .audit import record
from .events import StepEventSink, publish_status
from .leases import Heartbeat
from .models import Clone, Rehearsal, StepRun

log = logging.getLogger(__name__)


class CloneCleanupError(Exception):
    pass


class ProductionWriteRefused(StepFailed):
    """A step asked to write the real production host in a dress rehearsal."""


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
        """Where a step acts on "production": the real host in a production run, the
        stand-in in a dress rehearsal (which never writes production)."""
        if not self.rehearsal.is_dress_rehearsal:
            return self.rehearsal.incident.production_host.endpoint()
        stand_in = lifecycle.live_clone(self.rehearsal, Clone.Role.STAND_IN)
        if stand_in is None or stand_in.status != Clone.Status.RUNNING:
            raise StepFailed("this dress rehearsal has no running stand-in of production"
                             + ("" if stand_in is None else f" (it is {stand_in.get_status_display().lower()})")
                             + ": run the clone step first (it starts the workbench and the stand-in)")
        return stand_in.endpoint()

    def real_production(self, access: str) -> Endpoint:
        """The real production host, for the few steps that must reach it whatever the mode:
        the clone's stream and fetching the backup archive read it (``access="read"``).
        Asking for ``"write"`` in a dress rehearsal is a bug in the step kind: the step fails."""
        if access not in ("read", "write"):
            raise ValueError(f"access must be 'read' or 'write', not {access!r}")
        host = self.rehearsal.incident.production_host
        if access == "write" and self.rehearsal.is_dress_rehearsal:
            raise ProductionWriteRefused(
                f"refused: step kind {self.spec.kind!r} asked to write the real production host {host} in a dress "
                f"rehearsal, which never changes production (a bug in the step kind; its target is the stand-in)")
        return host.endpoint()

    def workbench(self) -> Clone:
        clone = lifecycle.workbench_of(self.rehearsal)
        if clone is None or clone.status != Clone.Status.RUNNING:
            raise StepFailed("this rehearsal has no running clone (the workbench)"
                             + ("" if clone is None else f" (the clone is {clone.get_status_display().lower()})")
                             + ": run the clone step first")
        return clone

    def clone_endpoint(self) -> Endpoint:
        return self.workbench().endpoint()

    def endpoint(self, target: str | None = None) -> Endpoint:
        target = target or self.spec.target
        return self.clone_endpoint() if target == StepSpec.Target.CLONE else self.production_endpoint()

    def connect(self, endpoint: Endpoint) -> Session:
        return Session.connect(endpoint)

    @property
    def approved_plan(self) -> dict[str, Any] | None:
        return lifecycle.approved_plan(self.step_run)

    def is_cancelled(self) -> bool:
        return StepRun.objects.filter(pk=self.step_run.pk, status=StepRun.Status.CANCELLED).exists()


def _actor(actor_id: int | None):
    return get_user_model().objects.filter(pk=actor_id).first() if actor_id else None


def execute_step_run(step_run_id: int, phase: str = "run", *, worker: str = "", attempt: int | None = None) -> str:
    """``phase``: "run" executes the step; "preview" computes the plan an approver will see.

    Idempotent by (step run, attempt): a redelivered task for a run that already started or ended,
    or for another attempt than the run's, does nothing. While the step runs, ``worker`` renews its
    lease (``leases.Heartbeat``); if the worker dies, the reaper fails the step."""
    close_old_connections()
    run = StepRun.objects.select_related("rehearsal__incident__production_host", "rehearsal__hypervisor",
                                         "step").get(pk=step_run_id)
    worker = worker or f"pid-{os.getpid()}@{socket.gethostname()}"
    ready = (lifecycle.mark_preparing(run, worker, attempt) if phase == "preview"
             else lifecycle.mark_running(run, worker, attempt))
    if not ready:
        log.info("step run %s (attempt %s) is %s; not running its %s", run.pk, run.attempt, run.status, phase)
        return "not-run"
    with Heartbeat(run.pk, worker):
        return _execute(run, phase, worker)


def _until_written(write, what: str, step_run_id: int):
    """Run ``write`` (a database write that records what happened on a host) until the database takes
    it: a lost or restarting database is retried with backoff for ``UNDERSTUDY_FINISH_RETRY_SECONDS``,
    so a step's outcome is not lost to a database blip."""
    deadline = time.monotonic() + settings.UNDERSTUDY_FINISH_RETRY_SECONDS
    pause = 0.5
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("step run %s: could not %s (%s); trying again in %.1fs", step_run_id, what,
                        str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, pause)
            connection.close()  # a broken connection is reopened by the next query
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def _execute(run: StepRun, phase: str, worker: str) -> str:
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
        _until_written(sink.close, "store the step's last events", run.pk)
    if ok and phase == "preview":
        _until_written(lambda: lifecycle.request_approval(run, result), "record the preview", run.pk)
        return "awaiting-approval"
    _until_written(lambda: lifecycle.mark_finished(run, ok=ok, result=result, error=error, worker=worker),
                   "record the step's outcome", run.pk)
    return "succeeded" if ok else "failed"


def execute_step_job(step_run_id: int, job: str, actor_id: int | None, data: dict) -> dict:
    """A step kind's extra worker job (queued by one of its actions), e.g. a sync-back's rollback.
    The job records its own outcome; watchers are told the step run changed."""
    close_old_connections()
    run = StepRun.objects.select_related("rehearsal__incident__production_host", "rehearsal__hypervisor",
                                         "step").get(pk=step_run_id)
    kind = registry.get(run.step.kind)
    body = kind.jobs.get(job)
    if body is None:
        raise ValueError(f"step kind {run.step.kind!r} has no job {job!r}")
    try:
        return body(run, _actor(actor_id), data)
    finally:
        publish_status(StepRun.objects.select_related("rehearsal").get(pk=run.pk))


# ---------------------------------------------------------------- clones and hypervisors

def destroy_clone(clone_id: int, actor_id: int | None) -> dict:
    """Destroy + undefine the domain and delete its directory (disk, kernel copies, staging),
    then audit what was removed (or why not)."""
    clone = Clone.objects.select_related("rehearsal__incident", "hypervisor").filter(pk=clone_id).first()
    if clone is None:  # its rehearsal was deleted meanwhile: nothing of ours left to record on
        log.warning("clone %s no longer exists; nothing to destroy", clone_id)
        return {"removed": []}
    actor = _actor(actor_id)
    try:
        removed = destroy_clone_files(clone.hypervisor.libvirt_uri, clone.domain_name,
                                      storage_dir=clone.hypervisor.storage_dir)
    except CloneError as exc:
        message = f"could not destroy {clone}: {exc}"
        record(clone.rehearsal.incident, actor, "clone.destroy_failed", message, rehearsal=clone.rehearsal)
        raise CloneCleanupError(message) from exc
    clone.status = Clone.Status.DESTROYED
    clone.destroyed_at = timezone.now()
    clone.save(update_fields=["status", "destroyed_at"])
    record(clone.rehearsal.incident, actor, "clone.destroyed",
           f"Destroyed the clone: {', '.join(removed) or 'nothing was left'}", rehearsal=clone.rehearsal)
    return {"removed": removed}


def _capacity(hv: LibvirtHost, storage_dir: str) -> dict:
    """What the hypervisor host has left for clones, seen by its own worker: free disk in its storage
    directory and free memory; a value it cannot read is None, with the reason."""
    out: dict[str, Any] = {}
    try:
        out["free_disk_bytes"] = LibvirtHost.capacity(storage_dir)
    except Exception as exc:  # a missing directory is shown on the page, not a failed scan
        out["free_disk_bytes"], out["disk_error"] = None, str(exc)
    try:
        out["free_memory_bytes"] = hv.conn.getFreeMemory()
    except Exception as exc:
        out["free_memory_bytes"], out["memory_error"] = None, str(exc)
    return out


def scan_hypervisor(hypervisor_id: int, actor_id: int | None = None) -> list[dict]:
    """Record every understudy domain libvirt knows on this hypervisor, marking the ones
    no live Clone row accounts for (leftovers someone must clean up)."""
    hypervisor = Hypervisor.objects.get(pk=hypervisor_id)
    live = set(Clone.objects.filter(hypervisor=hypervisor).exclude(status=Clone.Status.DESTROYED)
               .values_list("domain_name", flat=True))
    with LibvirtHost(hypervisor.libvirt_uri) as hv:
        domains = [{"name": d.name, "state": d.state, "rehearsal": d.rehearsal_id,
                    "disk": str(d.disk_path) if d.disk_path else None, "leftover": d.name not in live}
                   for d in hv.list_clones()]
        capacity = _capacity(hv, hypervisor.storage_dir)
    hypervisor.last_scan = {"domains": domains, "capacity": capacity}
    hypervisor.scanned_at = timezone.now()
    hypervisor.save(update_fields=["last_scan", "scanned_at"])
    leftovers = [d["name"] for d in domains if d["leftover"]]
    record(None, _actor(actor_id), "hypervisor.scanned",
           f"{hypervisor}: {len(domains)} clone domain(s), {len(leftovers)} leftover"
           + (f": {', '.join(leftovers[:20])}" if leftovers else ""))
    return domains


def destroy_leftover(hypervisor_id: int, domain_name: str, actor_id: int | None = None) -> bool:
    hypervisor = Hypervisor.objects.get(pk=hypervisor_id)
    actor = _actor(actor_id)
    if Clone.objects.filter(hypervisor=hypervisor, domain_name=domain_name).exclude(
            status=Clone.Status.DESTROYED).exists():
        raise CloneCleanupError(f"{domain_name} belongs to a live rehearsal; destroy it from its rehearsal")
    try:
        removed = destroy_clone_files(hypervisor.libvirt_uri, domain_name, storage_dir=hypervisor.storage_dir)
    except CloneError as exc:
        record(None, actor, "hypervisor.leftover_destroy_failed", f"{domain_name} on {hypervisor}: {exc}")
        raise CloneCleanupError(str(exc)) from exc
    record(None, actor, "hypervisor.leftover_destroyed",
           f"Destroyed leftover {domain_name} on {hypervisor}: {', '.join(removed) or 'nothing was left'}")
    scan_hypervisor(hypervisor.pk, actor_id)
    return bool(removed)
