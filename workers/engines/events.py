"""The Emitter interface: how engines report what they are doing.

Engines never know about Django, Celery or websockets. They receive an
``Emitter`` and call ``log``/``progress``/``phase`` on it; the Celery task
supplies a sink that batches these into ``StepEvent`` rows and fans them out to
the browser (see ``rehearsals/events.py``). Tests and a Python shell use
``RecordingEmitter`` or ``PrintEmitter``.

Event kinds (the ``kind`` column of StepEvent, the ``type`` in websocket frames):

``log``       one line of output: ``{"line": str, "stream": "stdout"|"stderr"|"info"}``
``progress``  ``{"done": int, "total": int|None, "unit": "bytes"|"files"|..., "rate": float|None,
               "eta": float|None, ...extra}``
``phase``     ``{"name": str}`` — a named stage of a long step ("stream", "delta", "image"...)
``data``      ``{"key": str, "value": any}`` — a structured partial result worth showing live
"""
from __future__ import annotations

import abc
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO


class Emitter(Protocol):
    def log(self, line: str, stream: str = "stdout") -> None: ...

    def progress(self, done: int, total: int | None = None, unit: str = "bytes", **extra: Any) -> None: ...

    def phase(self, name: str) -> None: ...

    def data(self, key: str, value: Any) -> None: ...


@dataclass
class Event:
    kind: str
    payload: dict[str, Any]
    ts: float = field(default_factory=time.time)


class BaseEmitter(abc.ABC):
    """Turns the four calls into ``Event`` objects and hands them to ``emit``.

    Also computes rate and ETA for progress so every engine reports them the
    same way. Thread-safe: engines may report from reader threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress_start: dict[str, tuple[float, int]] = {}

    @abc.abstractmethod
    def emit(self, event: Event) -> None:
        """Deliver one event."""

    def log(self, line: str, stream: str = "stdout") -> None:
        self.emit(Event("log", {"line": line, "stream": stream}))

    def phase(self, name: str) -> None:
        # A new phase measures its own rate: the delta pass or the image conversion report
        # "bytes" too, and must not inherit the stream's start time.
        with self._lock:
            self._progress_start.clear()
        self.emit(Event("phase", {"name": name}))

    def data(self, key: str, value: Any) -> None:
        self.emit(Event("data", {"key": key, "value": value}))

    def progress(self, done: int, total: int | None = None, unit: str = "bytes", **extra: Any) -> None:
        now = time.monotonic()
        with self._lock:
            start = self._progress_start.setdefault(unit, (now, done))
        elapsed = now - start[0]
        rate = (done - start[1]) / elapsed if elapsed > 0.05 else None
        eta = None
        if rate and total is not None and total >= done:
            eta = (total - done) / rate if rate > 0 else None
        payload = {"done": done, "total": total, "unit": unit, "rate": rate, "eta": eta}
        payload.update(extra)
        self.emit(Event("progress", payload))


class RecordingEmitter(BaseEmitter):
    """Keeps every event in memory. For tests and interactive use."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def lines(self, stream: str | None = None) -> list[str]:
        return [e.payload["line"] for e in self.events
                if e.kind == "log" and (stream is None or e.payload["stream"] == stream)]

    def of_kind(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


class PrintEmitter(BaseEmitter):
    """Writes events to a stream; handy from a Python shell or a script."""

    def __init__(self, out: TextIO | None = None) -> None:
        super().__init__()
        self.out = out or sys.stderr

    def emit(self, event: Event) -> None:
        p = event.payload
        if event.kind == "log":
            text = f"[{p['stream']}] {p['line']}"
        elif event.kind == "progress":
            text = f"[progress] {p['done']}/{p['total']} {p['unit']}"
        elif event.kind == "phase":
            text = f"[phase] {p['name']}"
        else:
            text = f"[{event.kind}] {p}"
        with self._lock:
            print(text, file=self.out, flush=True)


class NullEmitter(BaseEmitter):
    def emit(self, event: Event) -> None:
        pass
