"""The embedded default: a Celery worker thread inside the web process.

With the in-memory transport and the in-memory channel layer, the web server,
the worker and the websocket consumers share one process, so nothing has to be
installed. The full stack runs ``celery -A understudy worker -Q <queue>`` per
hypervisor instead.

A hypervisor added (or given a new queue) while the web process runs is served
too: saving the row makes the worker start consuming its queue (``serve_queue``).
"""
from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models.signals import post_save

from inventory.models import Hypervisor
from rehearsals.dispatch import relay_pending
from rehearsals.leases import reap_expired_leases
from understudy.celery import app

log = logging.getLogger(__name__)
_started: dict[str, object] = {}
_lock = threading.Lock()


def start_inprocess_worker(queues: list[str] | None = None, concurrency: int = 2):
    """Start (once) a worker thread consuming ``queues`` (default: every hypervisor's)."""
    with _lock:
        if "worker" in _started:
            return _started["worker"]
        if queues is None:
            queues = sorted(set(Hypervisor.objects.values_list("queue", flat=True)) | {"understudy"})
        worker = app.WorkController(pool_cls="threads", concurrency=concurrency, queues=queues,
                                    loglevel="INFO", without_heartbeat=True, without_mingle=True,
                                    without_gossip=True)
        thread = threading.Thread(target=worker.start, name="celery-inprocess", daemon=True)
        thread.start()
        _started["worker"] = worker
        reaper = threading.Thread(target=_reap_forever, name="lease-reaper", daemon=True)
        reaper.start()
        log.info("in-process Celery worker consuming %s", ", ".join(queues))
        return worker


def serve_queue(queue: str) -> bool:
    """Make the running in-process worker consume ``queue`` too (a hypervisor added after it
    started). False when no in-process worker runs in this process (the full stack: each
    hypervisor host starts its own worker on its queue)."""
    worker = _started.get("worker")
    if worker is None or not queue:
        return False
    consumer = worker.consumer
    # Queues are changed from the consumer's own loop, between two polls of the broker.
    consumer.call_soon(consumer.add_task_queue, queue)
    log.info("in-process Celery worker: consuming %s as well", queue)
    return True


def hypervisor_saved(sender, instance: Hypervisor, **kwargs) -> None:
    """``post_save`` of a Hypervisor: once committed, serve its queue."""
    transaction.on_commit(lambda: serve_queue(instance.queue))


def connect() -> None:
    post_save.connect(hypervisor_saved, sender=Hypervisor, dispatch_uid="workers.inprocess.hypervisor_saved")


def _reap_forever() -> None:
    """What Celery beat does in the full stack: fail the steps whose worker stopped renewing its lease,
    send what the dispatch outbox holds."""
    stop = threading.Event()
    while not stop.wait(settings.UNDERSTUDY_REAPER_SECONDS):
        try:
            close_old_connections()
            reap_expired_leases()
            relay_pending()  # what a process that died left unsent
        except Exception:  # noqa: BLE001 - the database may be briefly away; the next round tries again
            log.exception("the lease reaper failed; trying again in %ss", settings.UNDERSTUDY_REAPER_SECONDS)
            connection.close()
