"""The one place that sends work to Celery workers.

Every task goes to the queue of the hypervisor it concerns (one worker per
hypervisor host consumes that queue). A task is decided inside a transaction and
written there as an ``OutboxMessage`` row; once the transaction commits, the row is
sent. If the broker cannot take it (down, unreachable), the row stays, its step run
shows "waiting for the broker", and a relay thread sends it again with backoff
until the broker is back (``relay_pending``; also Celery beat and
``manage.py relay_outbox`` for rows left by a process that died). A worker never
sees a row that is not committed, and nothing decided is lost. A message sent twice
(a relay that died between sending and marking it sent) is harmless: the step task
is idempotent by (step run, attempt).

Tasks are sent by name: this module does not import the task bodies
(``workers.tasks``), which sit above it and call back into ``rehearsals.jobs``.
"""
from __future__ import annotations

import logging
import threading
from datetime import timedelta

from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from inventory.models import Hypervisor
from understudy.celery import app

from .audit import record
from .events import publish_status
from .models import Clone, OutboxMessage, StepRun

log = logging.getLogger(__name__)

RUN_STEP = "understudy.run_step"
STEP_JOB = "understudy.step_job"
DESTROY_CLONE = "understudy.destroy_clone"
SCAN_HYPERVISOR = "understudy.scan_hypervisor"
DESTROY_LEFTOVER = "understudy.destroy_leftover"
# sent by Celery beat (settings.CELERY_BEAT_SCHEDULE) on the control queue
REAP_EXPIRED_LEASES = "understudy.reap_expired_leases"
RELAY_OUTBOX = "understudy.relay_outbox"

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0  # seconds before the n-th retry: 0.5 · 2^(n-1), at most 30
WAITING_NOTE = "waiting for the broker"


def _enqueue(name: str, args: list, queue: str, step_run: StepRun | None = None) -> OutboxMessage:
    message = OutboxMessage.objects.create(task=name, args=args, queue=queue, step_run=step_run)
    transaction.on_commit(lambda: _send_now(message.pk))
    return message


def _backoff(attempts: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, attempts - 1))


def _publish(message: OutboxMessage) -> None:
    # No kombu retry loop here: a failure is recorded on the row and the relay retries with backoff.
    app.send_task(message.task, args=message.args, queue=message.queue, task_id=message.task_id, retry=False)


_send_lock = threading.Lock()  # SQLite has no row locks: one sender per process there


def _send_one(pk: int) -> bool | None:
    """Send one unsent row. True: sent; False: the broker refused (row updated); None: nothing to do."""
    with _send_lock, transaction.atomic():
        message = (OutboxMessage.objects.select_for_update(skip_locked=True)
                   .filter(pk=pk, sent_at__isnull=True).first())
        if message is None:
            return None  # sent already, or another relay holds it
        try:
            _publish(message)
        except Exception as exc:  # noqa: BLE001 - any broker failure: keep the row, retry later
            message.attempts += 1
            message.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            message.next_try_at = timezone.now() + timedelta(seconds=_backoff(message.attempts))
            message.save(update_fields=["attempts", "last_error", "next_try_at"])
            if message.attempts == 1 and message.step_run_id:
                _announce_waiting(message)
            log.warning("could not send %s (attempt %s): %s", message, message.attempts, message.last_error)
            return False
        message.sent_at = timezone.now()
        message.save(update_fields=["sent_at"])
        if message.task == RUN_STEP and message.step_run_id:
            StepRun.objects.filter(pk=message.step_run_id).update(task_id=message.task_id)
        if message.attempts and message.step_run_id:
            _announce_waiting(message)  # the note goes away
        return True


def _announce_waiting(message: OutboxMessage) -> None:
    """The first failure and the final send of a step's task go on the timeline and to watchers."""
    run = StepRun.objects.select_related("rehearsal__incident", "step").get(pk=message.step_run_id)
    if message.sent_at is None:
        text = (f"Step {run.step.position} ({run.step.title}) is {WAITING_NOTE}: {message.last_error}; "
                f"it is sent as soon as the broker takes it")
        action = "dispatch.waiting"
    else:
        waited = (message.sent_at - message.created_at).total_seconds()
        text = f"Step {run.step.position} ({run.step.title}) sent to its worker after {waited:.1f}s {WAITING_NOTE}"
        action = "dispatch.sent"
    record(run.rehearsal.incident, None, action, text, rehearsal=run.rehearsal, step_run=run)
    transaction.on_commit(lambda: publish_status(run))


def waiting_note(step_run: StepRun) -> str:
    """"waiting for the broker (since …, n tries: error)" while a task of this step run is unsent
    after a failed try; "" otherwise. The page and the API show it beside the status."""
    message = (OutboxMessage.objects.filter(step_run=step_run, sent_at__isnull=True, attempts__gt=0)
               .order_by("pk").first())
    if message is None:
        return ""
    since = timezone.localtime(message.created_at)
    return (f"{WAITING_NOTE} (since {since:%H:%M:%S}, {message.attempts} "
            f"{'try' if message.attempts == 1 else 'tries'}: {message.last_error})")


def relay_pending(limit: int = 100) -> int:
    """Send the unsent rows whose retry time has come (oldest first); returns how many went out."""
    now = timezone.now()
    due = list(OutboxMessage.objects.filter(sent_at__isnull=True).exclude(next_try_at__gt=now)
               .order_by("pk").values_list("pk", flat=True)[:limit])
    sent = 0
    for pk in due:
        outcome = _send_one(pk)
        if outcome is False:
            break  # the broker is still away: the rest waits for the next round
        sent += bool(outcome)
    return sent


def unsent_count() -> int:
    return OutboxMessage.objects.filter(sent_at__isnull=True).count()


_relay_thread: threading.Thread | None = None
_relay_guard = threading.Lock()


def _relay_until_empty() -> None:
    global _relay_thread
    try:
        while True:
            try:
                close_old_connections()
                relay_pending()
                nxt = (OutboxMessage.objects.filter(sent_at__isnull=True).order_by("next_try_at")
                       .values_list("next_try_at", flat=True).first())
            except Exception:  # noqa: BLE001 - the database may be away too: try again shortly
                log.exception("outbox relay round failed")
                connection.close()
                nxt = timezone.now() + timedelta(seconds=BACKOFF_FIRST)
            with _relay_guard:
                if nxt is None and not OutboxMessage.objects.filter(sent_at__isnull=True).exists():
                    _relay_thread = None
                    return
            wait = 0.0 if nxt is None else (nxt - timezone.now()).total_seconds()
            threading.Event().wait(min(BACKOFF_MAX, max(0.05, wait)))
    finally:
        connection.close()


def ensure_relay() -> None:
    """Start (once per process) the thread that retries unsent rows until none is left."""
    global _relay_thread
    with _relay_guard:
        if _relay_thread is not None and _relay_thread.is_alive():
            return
        _relay_thread = threading.Thread(target=_relay_until_empty, name="outbox-relay", daemon=True)
        _relay_thread.start()


def _send_now(pk: int) -> None:
    """After commit: the fast path. A failure leaves the row to the relay thread."""
    try:
        if _send_one(pk) is False:
            ensure_relay()
    except Exception:  # noqa: BLE001 - e.g. the database went away right after the commit
        log.exception("could not send outbox message %s now; the relay retries it", pk)
        ensure_relay()


def send_step(step_run: StepRun, phase: str = "run") -> None:
    """Run (or preview) a step on its rehearsal's hypervisor, once committed."""
    _enqueue(RUN_STEP, [step_run.pk, phase, step_run.attempt], step_run.rehearsal.hypervisor.queue, step_run)


def send_step_job(step_run: StepRun, job: str, actor, data: dict | None = None) -> None:
    """A step kind's extra worker job (e.g. a sync-back's rollback) for this step run."""
    args = [step_run.pk, job, actor.pk if actor else None, data or {}]
    _enqueue(STEP_JOB, args, step_run.rehearsal.hypervisor.queue, step_run)


def send_clone_destroy(clone: Clone, actor) -> None:
    _enqueue(DESTROY_CLONE, [clone.pk, actor.pk if actor else None], clone.hypervisor.queue)


def send_hypervisor_scan(hypervisor: Hypervisor, actor) -> None:
    _enqueue(SCAN_HYPERVISOR, [hypervisor.pk, actor.pk if actor else None], hypervisor.queue)


def send_leftover_destroy(hypervisor: Hypervisor, domain_name: str, actor) -> None:
    _enqueue(DESTROY_LEFTOVER, [hypervisor.pk, domain_name, actor.pk if actor else None], hypervisor.queue)


def revoke(task_id: str) -> None:
    try:
        app.control.revoke(task_id)
    except Exception:  # the worker also checks the StepRun status before and while running
        log.exception("could not revoke task %s", task_id)
