"""The one place that sends work to Celery workers.

Every task goes to the queue of the hypervisor it concerns (one worker per
hypervisor host consumes that queue) and is sent only once the transaction that
decided it has committed, so a worker never sees a row that is not there yet.
Tasks are sent by name: this module does not import the task bodies
(``workers.tasks``), which sit above it and call back into ``rehearsals.jobs``.
"""
from __future__ import annotations

import logging

from django.db import transaction

from inventory.models import Hypervisor
from understudy.celery import app

from .models import Clone, StepRun

log = logging.getLogger(__name__)

RUN_STEP = "understudy.run_step"
STEP_JOB = "understudy.step_job"
DESTROY_CLONE = "understudy.destroy_clone"
SCAN_HYPERVISOR = "understudy.scan_hypervisor"
DESTROY_LEFTOVER = "understudy.destroy_leftover"
REAP_EXPIRED_LEASES = "understudy.reap_expired_leases"  # sent by Celery beat (settings.CELERY_BEAT_SCHEDULE)


def _send(name: str, args: list, queue: str):
    return app.send_task(name, args=args, queue=queue)


def send_step(step_run: StepRun, phase: str = "run") -> None:
    """Run (or preview) a step on its rehearsal's hypervisor, once committed."""
    queue = step_run.rehearsal.hypervisor.queue

    def send() -> None:
        res = _send(RUN_STEP, [step_run.pk, phase, step_run.attempt], queue)
        StepRun.objects.filter(pk=step_run.pk).update(task_id=res.id)

    transaction.on_commit(send)


def send_step_job(step_run: StepRun, job: str, actor, data: dict | None = None) -> None:
    """A step kind's extra worker job (e.g. a sync-back's rollback) for this step run."""
    queue = step_run.rehearsal.hypervisor.queue
    args = [step_run.pk, job, actor.pk if actor else None, data or {}]
    transaction.on_commit(lambda: _send(STEP_JOB, args, queue))


def send_clone_destroy(clone: Clone, actor) -> None:
    args = [clone.pk, actor.pk if actor else None]
    queue = clone.hypervisor.queue
    transaction.on_commit(lambda: _send(DESTROY_CLONE, args, queue))


def send_hypervisor_scan(hypervisor: Hypervisor, actor) -> None:
    args = [hypervisor.pk, actor.pk if actor else None]
    transaction.on_commit(lambda: _send(SCAN_HYPERVISOR, args, hypervisor.queue))


def send_leftover_destroy(hypervisor: Hypervisor, domain_name: str, actor) -> None:
    args = [hypervisor.pk, domain_name, actor.pk if actor else None]
    transaction.on_commit(lambda: _send(DESTROY_LEFTOVER, args, hypervisor.queue))


def revoke(task_id: str) -> None:
    try:
        app.control.revoke(task_id)
    except Exception:  # the worker also checks the StepRun status before and while running
        log.exception("could not revoke task %s", task_id)
