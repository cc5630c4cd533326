"""Sync back: copy the repaired files from the clone to production, safely.

This is the only engine that writes to production. The guarantees and where they live:

* **Preview** (``plan.plan_sync``): what a person approves; ``SyncPlan.fingerprint()``.
* **Transfer** (``sync_back``): a reader agent on the clone and an apply agent on
  production (``agents``). Production asks for the 4 KiB blocks of the planned
  chunks it lacks (8-byte block digests), only those travel.
* **Safe swap** on production (in the agent): copy the original to a temp file beside
  it while hashing it (must be what the plan expected, or already the clone's content:
  skipped by content), patch, set owner/mode/xattrs/mtime, fsync, verify the hash,
  hard-link the original into ``<backup_dir>/<run_id>/<path>``, re-check the target
  did not change, rename over it, fsync the directory, re-hash the result.
* **Journal**: ``<backup_dir>/<run_id>/journal.jsonl`` on production (fsync'd per
  record) and mirrored to a :class:`Journal` (the Django side stores DB rows).
  Resuming is running again with the same ``run_id``: every file is re-checked by
  content, leftover temp files are removed.
* **Rollback** (``rollback``): restore every backed-up original.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Protocol

from ..endpoint import Endpoint
from ..events import Emitter, NullEmitter
from ..manifest import show_path
from ..remote import CancelWatch, pick_transport
from .agents import DEFAULT_TRANSPORT, exchange
from .errors import ConnectionLost, RollbackError, SyncCancelled, SyncError, SyncRefused
from .plan import SyncPlan, b64, check_run_id
from .rollback import FileOutcome, RollbackReport, backed_up_files, rollback


class Journal(Protocol):
    """Where the worker mirrors the production journal (the Django side: DB rows)."""

    def start(self, run_id: str, fingerprint: str, files: list[str]) -> None: ...

    def record(self, run_id: str, path: str, state: str, detail: dict) -> None: ...

    def finish(self, run_id: str, outcome: str, summary: dict) -> None: ...


class MemoryJournal:
    """In-memory Journal for tests and scripts."""

    def __init__(self) -> None:
        self.runs: dict[str, dict] = {}
        self.records: list[tuple[str, str, str, dict]] = []
        self.lock = threading.Lock()

    def start(self, run_id: str, fingerprint: str, files: list[str]) -> None:
        with self.lock:
            self.runs.setdefault(run_id, {"fingerprint": fingerprint, "files": files, "attempts": 0})
            self.runs[run_id]["attempts"] += 1

    def record(self, run_id: str, path: str, state: str, detail: dict) -> None:
        with self.lock:
            self.records.append((run_id, path, state, detail))

    def finish(self, run_id: str, outcome: str, summary: dict) -> None:
        with self.lock:
            self.runs[run_id].update(outcome=outcome, summary=summary)

    def backed_up(self, run_id: str) -> list[dict]:
        """What a rollback of the run restores (``rollback(files=…)``)."""
        return backed_up_files(dict(d, state=st) for rid, _p, st, d in self.records if rid == run_id)

    def states(self, run_id: str) -> dict[str, str]:
        """Last state per file."""
        out: dict[str, str] = {}
        for rid, path, st, _d in self.records:
            if rid == run_id:
                out[path] = st
        return out


@dataclass
class SyncReport:
    run_id: str
    ok: bool
    files: list[FileOutcome]
    planned_bytes: int             # the preview's upper bound (whole differing chunks)
    data_bytes: int                # file data that travelled (differing 4 KiB blocks)
    bytes_to_production: int       # everything written to production's SSH stdin (agent, plan, frames)
    bytes_to_clone: int
    seconds: float
    transport: str
    error: str | None = None
    rolled_back: RollbackReport | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _agent_plan(plan: SyncPlan, run_id: str, on_error: str, fingerprint: str) -> tuple[dict, dict]:
    files = [{"i": i, "root": f.root, "rel": b64(f.rel), "chunks": f.chunks, "source_size": f.clone_size,
              "source_hash": f.clone_hash, "expect_size": f.expect_size, "expect_hash": f.expect_hash}
             for i, f in enumerate(plan.files)]
    common = {"run_id": run_id, "algo": plan.algo, "mode": plan.mode, "chunk": plan.chunk_size,
              "block": plan.block_size, "files": files}
    dst = dict(common, roots=[b64(r) for r in plan.prod_roots], backup_dir=b64(plan.backup_dir),
               on_error="stop", mtime="original", fingerprint=fingerprint)
    src = dict(common, source_roots=[b64(r) for r in plan.clone_roots])
    return src, dst


def sync_back(plan: SyncPlan, clone: Endpoint, prod: Endpoint, *, run_id: str, emitter: Emitter | None = None,
              journal: Journal | None = None, transport: str = DEFAULT_TRANSPORT,
              on_error: str = "rollback", cancelled: Callable[[], bool] | None = None) -> SyncReport:
    """Apply an approved plan. Resume an interrupted run by calling again with the same ``run_id``.

    The first failing file stops the run; with ``on_error="rollback"`` (the design's rule) the
    files already replaced in this run are restored from the backup, with ``"stop"`` they stay.
    Raises ``SyncError`` (``.report`` tells which file reached which state).
    ``cancelled``: polled while the agents work; once it says yes both agents are stopped on their
    hosts (the file being swapped is finished first, a half-written temp file is removed) and
    ``SyncCancelled`` says after which file; nothing is rolled back automatically.
    """
    emitter = emitter or NullEmitter()
    journal = journal or MemoryJournal()
    check_run_id(run_id)
    if on_error not in ("rollback", "stop"):
        raise ValueError("on_error must be rollback or stop")
    plan.validate()
    if plan.blocked:
        names = ", ".join(f"{f.display} ({'/'.join(f.conflicts)})" for f in plan.blocked[:10])
        raise SyncRefused(f"{len(plan.blocked)} file(s) changed on production since the clone and nobody "
                          f"overrode them: {names}")
    fp = plan.fingerprint()
    transport = pick_transport(transport, plan.send_bytes)
    names = [f.display for f in plan.files]
    journal.start(run_id, fp, names)
    emitter.phase("sync_back")
    emitter.log(f"sync-back run {run_id}: {len(plan.files)} file(s), at most {plan.send_bytes} bytes of "
                f"changed chunks, backups in {show_path(plan.backup_dir)}/{run_id}/", "info")
    start = time.monotonic()
    src_plan, dst_plan = _agent_plan(plan, run_id, on_error, fp)
    done_count = [0]
    backed: list[dict] = []   # this run's backed_up records: what its own rollback restores

    def on_state(msg: dict) -> None:
        f = plan.files[msg["i"]]
        if msg["state"] == "backed_up":
            backed.append(msg)
        # "rel" (base64) stays in the detail: a rollback takes the files from this journal
        detail = {k: v for k, v in msg.items() if k not in ("ev", "i")}
        journal.record(run_id, f.display, msg["state"], detail)
        if msg["state"] in ("done", "skipped", "failed"):
            done_count[0] += 1
            emitter.progress(done_count[0], len(plan.files), "files")
            stream = "stderr" if msg["state"] == "failed" else "info"
            emitter.log(f"{f.display}: {msg['state']}" + (f" — {msg['message']}" if msg.get("message") else "")
                        + (f" ({msg['bytes']} bytes sent)" if msg.get("bytes") else ""), stream)

    try:
        with CancelWatch(cancelled) as watch:
            t = exchange(clone, prod, src_plan, dst_plan, transport=transport, on_state=on_state, emitter=emitter,
                         watch=watch)
    except ConnectionLost as exc:
        report = SyncReport(run_id, False, [FileOutcome(n, "not_started") for n in names], plan.send_bytes, 0, 0, 0,
                            time.monotonic() - start, transport, str(exc))
        journal.finish(run_id, "failed", {"error": str(exc)})
        raise ConnectionLost(str(exc), report) from exc
    outcomes = []
    for i, f in enumerate(plan.files):
        s = t.states.get(i)
        outcomes.append(FileOutcome(f.display, s["state"] if s else "not_started",
                                    (s or {}).get("bytes", 0), (s or {}).get("kind"), (s or {}).get("message")))
    ok = t.end is not None and t.fatal is None and all(o.state in ("done", "skipped") for o in outcomes)
    report = SyncReport(run_id, ok, outcomes, plan.send_bytes, t.payload, t.to_target, t.to_source,
                        time.monotonic() - start, transport)
    if ok:
        journal.finish(run_id, "done", {"files": len(outcomes), "data_bytes": t.payload})
        emitter.data("sync_back", {"run_id": run_id, "data_bytes": t.payload, "seconds": round(report.seconds, 3)})
        return report
    if t.cancelled:
        finished = sum(1 for o in outcomes if o.state in ("done", "skipped", "failed"))
        report.error = (f"cancelled: stopped after file {finished} of {len(outcomes)}; files done are journalled, "
                        f"see rollback (each file on production is either its original or the clone's version)")
        emitter.log(report.error, "stderr")
        journal.finish(run_id, "cancelled", {"error": report.error, "files_finished": finished})
        raise SyncCancelled(report.error, report)
    if t.fatal:
        report.error = f"production agent: {t.fatal}"
    elif t.end is None:
        inflight = [o for o in outcomes if o.state not in ("done", "skipped", "failed", "not_started")]
        report.error = (f"connection to production lost (agent exit {t.target_exit}"
                        + (f": {t.target_stderr[-1]}" if t.target_stderr else "") + ")" + t.source_trouble()
                        + (f" while {inflight[0].path} was at '{inflight[0].state}'" if inflight else "")
                        + "; a file is only replaced by an atomic rename after its copy verified, so every "
                          "target is either its original or the clone's version. Run again with the same "
                          "run id to resume, or roll back.")
    else:
        bad = next(o for o in outcomes if o.state == "failed")
        report.error = bad.error or f"{bad.path} failed"
    emitter.log(report.error, "stderr")
    # any file that got past its backup may have been swapped (even one whose post-swap check failed)
    if on_error == "rollback" and t.end is not None and any(o.state in ("done", "failed") for o in outcomes):
        emitter.log("rolling back the files this run already replaced", "info")
        try:
            report.rolled_back = rollback(run_id, prod, backup_dir=plan.backup_dir, emitter=emitter,
                                          transport=transport, plan=plan, files=backed_up_files(backed))
        except RollbackError as exc:
            report.rolled_back = exc.report  # type: ignore[assignment]
            report.error += f"; ROLLBACK FAILED: {exc}"
    journal.finish(run_id, "failed", {"error": report.error,
                                      "rolled_back": report.rolled_back.restored if report.rolled_back else 0})
    cls = ConnectionLost if t.end is None and not t.fatal else SyncError
    raise cls(report.error, report)
