"""Live sync: catching one host up with another while the source keeps writing.

Two modes:

* ``live_sync_files``: repeated delta passes over the same absolute paths on both
  hosts (quick size/mtime manifests, then only the differing 4 KiB blocks travel
  through the sync agents) until a pass finds nothing to move, or a time limit.
* ``live_sync_vendor``: a vendor's own catch-up command (e.g. ``minidb-replay``),
  its output streamed and a lag number parsed from every line.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from ..endpoint import Cancelled, CommandTimeout, Endpoint, command_string
from ..events import Emitter, NullEmitter
from ..manifest import DEFAULT_CHUNK, Algorithm, build_pair, diff_manifests
from ..remote import CancelWatch, LineSplitter, pick_transport, text
from ..ssh import Session
from .agents import DEFAULT_TRANSPORT, exchange
from .errors import ConnectionLost, SyncError
from .plan import BLOCK, b64, check_abs, check_rel, check_run_id


@dataclass
class LivePass:
    n: int
    moved_files: int
    moved_bytes: int               # size of the files that moved (quick scan)
    data_bytes: int                # what actually travelled
    failed: int
    seconds: float


@dataclass
class LiveSyncReport:
    ok: bool
    direction: str
    passes: list[LivePass]
    lag_files: int
    lag_bytes: int
    seconds: float
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def live_sync_files(src: Endpoint, dst: Endpoint, paths: Sequence[str | bytes], *, direction: str = "forward",
                    time_limit: float, emitter: Emitter | None = None, transport: str = DEFAULT_TRANSPORT,
                    chunk_size: int = DEFAULT_CHUNK, settle: float = 0.0, run_id: str = "live",
                    cancelled: Callable[[], bool] | None = None) -> LiveSyncReport:
    """Repeated delta passes ``src -> dst`` (``direction="reverse"``: ``dst -> src``) over the same
    absolute ``paths`` on both hosts until a pass finds nothing to move, or ``time_limit``.

    A pass: quick size/mtime manifests of both sides, then for each file that moved the apply
    agent sends its block digests and only differing 4 KiB blocks travel; the swap is the same
    temp + fsync + verify + atomic rename as sync-back, and the source's mtime is kept so the
    next quick scan sees the file as equal. No backup (this is catch-up, not a repair).
    ``cancelled``: asked between passes and polled during a pass (the agents are then stopped on
    their hosts); ``Cancelled`` is raised.
    """
    emitter = emitter or NullEmitter()
    if direction not in ("forward", "reverse"):
        raise ValueError("direction must be forward or reverse")
    if direction == "reverse":
        src, dst = dst, src
    roots = [os.fsencode(p) for p in paths]
    for r in roots:
        check_abs(r, "path")
    check_run_id(run_id)
    emitter.phase("live_sync")
    start = time.monotonic()
    passes: list[LivePass] = []
    algo: Algorithm | None = None
    lag_files = lag_bytes = 0
    watch = CancelWatch(cancelled)
    while True:
        if watch.check():
            raise Cancelled(f"live sync cancelled after {len(passes)} pass(es); {lag_files} file(s) still to move")
        t0 = time.monotonic()
        ms, md = build_pair(src, dst, roots, chunk_size=chunk_size, quick=True, algo=algo)
        algo = algo or Algorithm(ms.algo, "chunked")
        diff = diff_manifests(ms, md, quick=True)
        moved = [e for e in diff.changed if e.type_clone == "f" and e.type_prod == "f"]
        other = [e for e in diff.entries if e.category in ("missing_on_production", "type_changed")]
        lag_files = len(moved) + len(other)
        lag_bytes = sum(e.size_clone or 0 for e in moved + other)
        emitter.progress(lag_files, None, "lag_files", lag_bytes=lag_bytes, lag_files=lag_files, pass_n=len(passes) + 1)
        emitter.data("lag", {"files": lag_files, "bytes": lag_bytes, "pass": len(passes) + 1})
        if not moved and not other:
            passes.append(LivePass(len(passes) + 1, 0, 0, 0, 0, time.monotonic() - t0))
            report = LiveSyncReport(True, direction, passes, 0, 0, time.monotonic() - start)
            emitter.log(f"converged after {len(passes)} pass(es)", "info")
            return report
        if other:
            names = ", ".join(e.display for e in other[:5])
            raise SyncError(f"live sync moves existing regular files only; these exist on one side only or "
                            f"changed type: {names}", LiveSyncReport(False, direction, passes, lag_files,
                                                                     lag_bytes, time.monotonic() - start))
        if time.monotonic() - start > time_limit:
            break
        files = [{"i": i, "root": e.root, "rel": b64(e.rel), "chunks": None, "source_size": None,
                  "source_hash": None, "expect_size": None, "expect_hash": None} for i, e in enumerate(moved)]
        for e in moved:
            check_rel(e.rel)
        common = {"run_id": run_id, "algo": ms.algo, "mode": "chunked", "chunk": chunk_size, "block": BLOCK,
                  "files": files}
        with watch:
            t = exchange(src, dst, dict(common, source_roots=[b64(r) for r in ms.roots]),
                         dict(common, roots=[b64(r) for r in md.roots], backup_dir=None, on_error="continue",
                              mtime="source"),
                         transport=pick_transport(transport, lag_bytes), on_state=lambda m: None, emitter=emitter,
                         watch=watch)
        if t.cancelled:
            raise Cancelled(f"live sync cancelled during pass {len(passes) + 1}; the agents were stopped")
        if t.end is None:
            raise ConnectionLost(f"connection lost during live sync pass {len(passes) + 1}"
                                 + (f": {t.fatal}" if t.fatal else ""),
                                 LiveSyncReport(False, direction, passes, lag_files, lag_bytes,
                                                time.monotonic() - start))
        failed = [s for s in t.states.values() if s.get("state") == "failed"]
        for s in failed:
            emitter.log(f"pass {len(passes) + 1}: {s.get('message')} (retried next pass)", "stderr")
        passes.append(LivePass(len(passes) + 1, len(moved), lag_bytes, t.payload, len(failed),
                               time.monotonic() - t0))
        if time.monotonic() - start > time_limit:
            break
        if settle:
            time.sleep(settle)
    report = LiveSyncReport(False, direction, passes, lag_files, lag_bytes, time.monotonic() - start,
                            f"not converged within {time_limit:.0f}s: {lag_files} file(s), {lag_bytes} bytes still "
                            f"to move")
    raise SyncError(report.error or "", report)


# ---------------------------------------------------------------------------- vendor catch-up
@dataclass
class VendorCatchupReport:
    ok: bool
    command: str
    exit_code: int | None
    lags: list[int]
    seconds: float
    error: str | None = None

    @property
    def last_lag(self) -> int | None:
        return self.lags[-1] if self.lags else None

    def to_dict(self) -> dict:
        return dict(asdict(self), last_lag=self.last_lag)


def live_sync_vendor(endpoint: Endpoint, command: str | Sequence[str], lag_pattern: str, *, converged_at: int = 0,
                     time_limit: float, emitter: Emitter | None = None,
                     cancelled: Callable[[], bool] | None = None) -> VendorCatchupReport:
    """Run a catch-up command (e.g. ``minidb-replay``), streaming its output; ``lag_pattern``'s
    named group ``lag`` is parsed from every line and reported. Success: exit 0 and the last lag
    <= ``converged_at``. A list command is quoted element by element (no shell interpretation)."""
    emitter = emitter or NullEmitter()
    rx = re.compile(lag_pattern)
    if "lag" not in rx.groupindex:
        raise ValueError("lag_pattern needs a named group (?P<lag>...)")
    cmd = command_string(command)
    emitter.phase("catch_up")
    start = time.monotonic()
    lags: list[int] = []
    peak = [0]

    def on_line(line: str, stream: str) -> None:
        emitter.log(line, stream)
        m = rx.search(line)
        if m:
            lag = int(m.group("lag"))
            lags.append(lag)
            # the total is the largest lag seen: a tool may print 0 before it knows its target
            peak[0] = max(peak[0], lag)
            emitter.progress(peak[0] - lag, peak[0], "lag", lag=lag)
            emitter.data("lag", lag)

    timed_out = False
    code = None
    out = LineSplitter(lambda raw: on_line(text(raw), "stdout"))
    with Session.connect(endpoint) as s, CancelWatch(cancelled) as watch:
        with s.start(cmd, on_stderr_line=lambda line: on_line(line, "stderr")) as proc:
            watch.track(proc)
            proc.close_stdin()
            try:
                proc.drain(out.feed, deadline=start + time_limit)
            except CommandTimeout:
                timed_out = True
            out.flush()
            if not timed_out:
                code = proc.wait()
    if watch.fired.is_set():
        raise Cancelled(f"catch-up cancelled; {cmd} was stopped on the host (last lag {lags[-1] if lags else '?'})")
    report = VendorCatchupReport(False, cmd, code, lags, time.monotonic() - start)
    if timed_out:
        report.error = f"not caught up within {time_limit:.0f}s (last lag {report.last_lag})"
    elif code != 0:
        report.error = f"catch-up command exited {code}"
    elif not lags:
        report.error = "the command never printed a line matching the lag pattern"
    elif lags[-1] > converged_at:
        report.error = f"command finished with lag {lags[-1]} > {converged_at}"
    else:
        report.ok = True
        return report
    emitter.log(report.error, "stderr")
    raise SyncError(report.error, None)
