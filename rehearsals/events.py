"""The one event path: engine -> sink -> StepEvent rows -> channel group -> browser.

``StepEventSink`` is the Emitter a worker hands to an engine. It buffers
events, coalesces progress (only the latest progress per unit survives a batch;
log lines are never dropped), allocates a contiguous block of ``seq`` numbers
for the StepRun, bulk-inserts the rows in one transaction, and only then sends
them to the rehearsal's channel group. Because rows are committed before they
are announced, a consumer that sees seq N can always find 1..N-1 in the DB.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from typing import Any, Iterable

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F

from workers.engines.events import BaseEmitter, Event

from .models import StepEvent, StepRun

log = logging.getLogger(__name__)
CLOSE_RETRIES = 5
CLOSE_RETRY_SECONDS = 0.2
# A full batch is written by the sink's own thread, so the engine's reading and the database's writing overlap
# (and under load the next write takes everything that came meanwhile: fewer, larger batches). Past this many
# batches waiting, the engine's thread writes itself: memory stays bounded when the database is slower. The
# backlog is also latency: bench/bench_load.py (4 rehearsals × 100,000 lines, 2 workers) gave, for 2 / 3 / 4 / 10,
# 15.7k / 17.5k / 17.4k / 19.2k events/s at a p95 worker → browser latency of 278 / 330 / 437 / 877 ms.
BACKLOG_BATCHES = 3


def allocate_and_store(step_run_id: int, events: list[Event]) -> list[StepEvent]:
    """Give ``events`` the next seq numbers of the StepRun and insert them.

    The UPDATE ... SET last_seq = last_seq + n holds the StepRun's row lock
    until commit, so two writers for the same StepRun serialise and seq stays
    gap-free and unique.
    """
    if not events:
        return []
    with transaction.atomic():
        StepRun.objects.filter(pk=step_run_id).update(last_seq=F("last_seq") + len(events))
        last = StepRun.objects.values_list("last_seq", flat=True).get(pk=step_run_id)
        first = last - len(events) + 1
        rows = [
            StepEvent.of(step_run_id, first + i, dt.datetime.fromtimestamp(e.ts, tz=dt.timezone.utc), e.kind,
                         e.payload)
            for i, e in enumerate(events)
        ]
        StepEvent.objects.bulk_create(rows)
        progress = [e for e in events if e.kind == "progress"]
        if progress:
            StepRun.objects.filter(pk=step_run_id).update(progress=progress[-1].payload)
    return rows


_server_loop: asyncio.AbstractEventLoop | None = None


def remember_server_loop() -> None:
    """Called by consumers: the event loop that owns the in-memory channel layer.

    Channels' in-memory layer is made of asyncio queues that belong to the
    server's loop; a worker *thread* (the embedded default) must hand its sends
    to that loop instead of running them on a loop of its own, or the consumer
    is never woken up.
    """
    global _server_loop
    _server_loop = asyncio.get_running_loop()


def _send_on_server_loop(layer, group: str, message: dict) -> bool:
    loop = _server_loop
    if not isinstance(layer, InMemoryChannelLayer) or loop is None or not loop.is_running():
        return False
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        loop.create_task(layer.group_send(group, message))
    else:
        asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop).result(timeout=10)
    return True


def send_to_group(group: str, message: dict) -> None:
    """group_send from synchronous code (a worker thread, a view, a signal handler)."""
    layer = get_channel_layer()
    if layer is None:
        return
    if not _send_on_server_loop(layer, group, message):
        async_to_sync(layer.group_send)(group, message)


def user_group_name(user_id: int) -> str:
    """The channel group every socket of one user joins (to end them when the session ends)."""
    return f"user-{user_id}"


def publish(group: str, frames: Iterable[dict[str, Any]]) -> None:
    """Send frames to a rehearsal's group. Best effort: the DB already has them."""
    frames = list(frames)
    if not frames:
        return
    try:
        send_to_group(group, {"type": "stream.frames", "frames": frames})
    except Exception:  # a down channel layer must not fail the step; clients replay from the DB
        log.exception("could not publish %d frames to %s", len(frames), group)


def publish_status(step_run: StepRun) -> None:
    """Tell watchers a StepRun or its rehearsal changed state (not a seq'd event)."""
    rehearsal = step_run.rehearsal
    publish(rehearsal.group_name, [{
        "type": "status", "step_run": step_run.pk, "step": step_run.step_id, "status": step_run.status,
        "attempt": step_run.attempt, "error": step_run.error, "rehearsal_status": rehearsal.status,
    }])


class StepEventSink(BaseEmitter):
    """Emitter for one StepRun; thread-safe; flushes by size, by age, and on close."""

    def __init__(self, step_run: StepRun, *, flush_seconds: float | None = None,
                 batch_size: int | None = None) -> None:
        super().__init__()
        self.step_run_id = step_run.pk
        self.group = step_run.rehearsal.group_name
        self.flush_seconds = settings.UNDERSTUDY_EVENT_FLUSH_SECONDS if flush_seconds is None else flush_seconds
        self.batch_size = batch_size or settings.UNDERSTUDY_EVENT_BATCH
        self._buffer: list[Event] = []
        self._buf_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._closed = threading.Event()
        self._wake = threading.Event()  # a full batch is waiting: write it now, not at the next tick
        self._timer = threading.Thread(target=self._flush_periodically, daemon=True,
                                       name=f"event-sink-{self.step_run_id}")
        self._timer.start()

    def emit(self, event: Event) -> None:
        with self._buf_lock:
            if event.kind == "progress":
                # Coalesce: a newer progress of the same unit replaces an unsent older one.
                unit = event.payload.get("unit")
                for i in range(len(self._buffer) - 1, -1, -1):
                    old = self._buffer[i]
                    if old.kind == "progress" and old.payload.get("unit") == unit:
                        del self._buffer[i]
                        break
            self._buffer.append(event)
            pending = len(self._buffer)
        if pending >= self.batch_size * BACKLOG_BATCHES:
            self.flush()  # the database is behind: the engine waits for it rather than buffer without bound
        elif pending >= self.batch_size:
            self._wake.set()  # the sink's thread writes the batch while the engine goes on reading

    def flush(self) -> None:
        """Write the buffered events as one batch. If the write fails (a locked or lost database),
        the batch goes back in front of the buffer, in order, and the error is raised: the next
        flush (the timer's, or ``close()``'s retries) writes it. Nothing is dropped."""
        with self._flush_lock:
            with self._buf_lock:
                batch, self._buffer = self._buffer, []
            if not batch:
                return
            try:
                rows = allocate_and_store(self.step_run_id, batch)
            except Exception:
                with self._buf_lock:
                    self._buffer = batch + self._buffer
                raise
            publish(self.group, [r.as_frame() for r in rows])

    def _flush_periodically(self) -> None:
        # The timer thread has its own DB connection; close it when done.
        try:
            while not self._closed.is_set():
                self._wake.wait(self.flush_seconds)
                self._wake.clear()
                if self._closed.is_set():
                    return  # close() writes what is left, with its retries
                try:
                    self.flush()
                except Exception:
                    log.exception("event sink flush failed for step run %s", self.step_run_id)
        finally:
            close_old_connections()
            connection.close()

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._timer.join(timeout=5)
        for attempt in range(CLOSE_RETRIES):
            try:
                self.flush()
                return
            except Exception:
                if attempt == CLOSE_RETRIES - 1:
                    raise
                log.warning("event sink flush failed for step run %s; retrying", self.step_run_id,
                            exc_info=True)
                close_old_connections()
                time.sleep(CLOSE_RETRY_SECONDS * (attempt + 1))

    def __enter__(self) -> "StepEventSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

