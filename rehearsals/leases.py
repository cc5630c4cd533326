"""Leases: a worker that dies mid-step must not leave its step "running" forever.

When a worker picks a step run up (``lifecycle.mark_running`` / ``mark_preparing``)
it takes a lease of ``UNDERSTUDY_LEASE_SECONDS``; a ``Heartbeat`` thread renews it
every third of that while the step runs. A worker that is killed (SIGKILL, OOM,
host lost) stops renewing, and ``reap_expired_leases`` — run by Celery beat in the
full stack and by a loop beside the in-process worker in the embedded default, or
by ``manage.py reap_expired_leases`` — marks the step run failed with
"worker lost (no heartbeat since …)". A failed step can be retried as usual: the
retry is a new attempt, and a redelivered task for the lost attempt does nothing
(``execute_step_run`` only starts a queued run of the attempt it was sent for).
"""
from __future__ import annotations

import logging
import threading
from datetime import timedelta

from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from .audit import record
from .lifecycle import LEASED, WORKER_LOST, announce, lease_seconds, lock_run
from .models import StepRun

log = logging.getLogger(__name__)
S = StepRun.Status


def renew(step_run_id: int, worker: str) -> bool:
    """Extend the lease; False once the run is no longer this worker's running attempt."""
    now = timezone.now()
    return bool(StepRun.objects.filter(pk=step_run_id, worker=worker[:200], status__in=LEASED)
                .update(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds())))


class Heartbeat:
    """Renews a step run's lease from a thread while the step runs (``with Heartbeat(run, worker):``).

    A renewal that fails (the database briefly away) is logged and tried again at the next beat: the
    lease is three beats long, so one missed beat does not lose the step."""

    def __init__(self, step_run_id: int, worker: str):
        self.step_run_id, self.worker = step_run_id, worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{step_run_id}", daemon=True)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(lease_seconds() / 3):
                try:
                    close_old_connections()
                    if not renew(self.step_run_id, self.worker):
                        return  # finished, cancelled or reaped: nothing left to hold
                except Exception:  # noqa: BLE001 - the next beat tries again
                    log.exception("could not renew the lease of step run %s", self.step_run_id)
                    connection.close()
        finally:
            connection.close()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def reap_expired_leases(now=None) -> list[StepRun]:
    """Fail every running (or preparing) step run whose worker stopped renewing its lease."""
    now = now or timezone.now()
    reaped = []
    for pk in StepRun.objects.filter(status__in=LEASED, lease_expires_at__lt=now).values_list("pk", flat=True):
        with transaction.atomic():
            run = lock_run(StepRun(pk=pk))
            if run.status not in LEASED or run.lease_expires_at is None or run.lease_expires_at >= now:
                continue  # renewed or finished meanwhile
            since = timezone.localtime(run.heartbeat_at or run.started_at or now)
            run.status = S.FAILED
            run.finished_at = now
            run.error = (f"{WORKER_LOST} (no heartbeat since {since:%Y-%m-%d %H:%M:%S %Z}; worker "
                         f"{run.worker or 'unknown'}): retry the step to run it again")
            run.lease_expires_at = None
            run.save(update_fields=["status", "finished_at", "error", "lease_expires_at"])
            record(run.rehearsal.incident, None, "step.worker_lost",
                   f"Step {run.step.position} ({run.step.title}) attempt {run.attempt} failed: {run.error}",
                   rehearsal=run.rehearsal, step_run=run)
            announce(run)
            reaped.append(run)
            log.warning("step run %s: %s", run.pk, run.error)
    return reaped
