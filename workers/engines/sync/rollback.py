"""Rollback: put back every original a sync-back run replaced, verified by hash.

The rollback agent on production restores each backed-up original (a verified
copy, renamed over the target), refusing files that changed after the sync.
Which files, under which roots, with which hashes, comes from the worker: the
approved plan and the worker's own journal of the run (``backed_up`` records,
the DB rows on the Django side), never from the journal file on production,
which anyone who can write the backup dir could have edited. It holds the
production writer lock while it works, like a sync-back.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from ..endpoint import Endpoint
from ..events import Emitter, NullEmitter
from ..manifest import join_path, show_path
from .agents import DEFAULT_TRANSPORT, start_agent
from ..remote import CancelWatch
from .errors import RollbackError, SyncCancelled
from .plan import b64, check_abs, check_run_id, unb64

if TYPE_CHECKING:
    from .plan import SyncPlan


@dataclass
class FileOutcome:
    path: str
    state: str                     # done | skipped | failed | not_started | <last state reached>
    bytes: int = 0
    kind: str | None = None
    error: str | None = None


@dataclass
class RollbackReport:
    run_id: str
    restored: int
    unchanged: int
    failed: int
    files: list[FileOutcome]
    seconds: float

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def to_dict(self) -> dict:
        return asdict(self)


def backed_up_files(records: Iterable[dict]) -> list[dict]:
    """The files a run replaced, from the worker's journal records (``state``, ``root``, ``rel``,
    ``orig_hash``, ``new_hash``): the latest ``backed_up`` record per file."""
    latest: dict[tuple[str, str], dict] = {}
    for r in records:
        if r.get("state") == "backed_up" and r.get("root") and r.get("rel"):
            latest[(r["root"], r["rel"])] = {k: r.get(k) for k in ("root", "rel", "orig_hash", "new_hash")}
    return list(latest.values())


def rollback(run_id: str, prod: Endpoint, *, backup_dir: str | bytes, emitter: Emitter | None = None,
             transport: str = DEFAULT_TRANSPORT, plan: "SyncPlan | None" = None, files: Sequence[dict] | None = None,
             cancelled: Callable[[], bool] | None = None) -> RollbackReport:
    """Restore every original the run replaced, verified by hash.

    ``plan`` (the approved one) and ``files`` (``backed_up_files`` of the worker's journal):
    which files to restore and the hashes to check; a file not in the plan, or under a root the
    plan does not have, is refused. Without them (a caller with no journal of its own) the
    journal file on production is read instead. Files already back to their original are left
    alone; a file that changed after the sync (neither the synced nor the original content) is
    refused and reported. ``cancelled``: polled; the agent is stopped on production once it says yes.
    """
    emitter = emitter or NullEmitter()
    check_run_id(run_id)
    bd = os.fsencode(backup_dir)
    check_abs(bd, "backup dir")
    request: dict = {"run_id": run_id, "backup_dir": b64(bd)}
    if files is not None:
        if plan is None:
            raise ValueError("rollback with a file list needs the approved plan (hash algorithm, roots)")
        roots = [b64(r) for r in plan.prod_roots]
        planned = {(roots[f.root], b64(f.rel)) for f in plan.files}
        wanted = [f for f in files if (f["root"], f["rel"]) in planned]
        for f in files:
            if (f["root"], f["rel"]) not in planned:
                emitter.log(f"rollback: the journal names {show_path(unb64(f['rel']))}, which is not in the approved "
                            f"plan; left alone", "stderr")
        request.update(files=wanted, roots=roots, algo=plan.algo, mode=plan.mode, chunk=plan.chunk_size)
    emitter.phase("rollback")
    start = time.monotonic()
    proc = start_agent(prod, "rollback", transport)
    files_out: list[FileOutcome] = []
    end: dict | None = None
    fatal = None
    watch = CancelWatch(cancelled)
    watch.track(proc)
    try:
        watch.__enter__()
        proc.write(json.dumps(request).encode() + b"\n")
        proc.close_stdin()
        for raw in proc.lines():
            msg = json.loads(raw)
            if msg.get("ev") == "state":
                path = show_path(join_path(unb64(msg["root"]), unb64(msg["rel"])))
                files_out.append(FileOutcome(path, msg["state"], kind=msg.get("kind"), error=msg.get("message")))
                emitter.log(f"{path}: {msg['state']}" + (f" — {msg['message']}" if msg.get("message") else ""),
                            "stderr" if msg.get("message") else "info")
            elif msg.get("ev") == "end":
                end = msg
            elif msg.get("ev") == "fatal":
                fatal = msg.get("message")
    except BaseException:
        proc.kill()  # the caller is failing or being stopped: no agent keeps running unattended
        raise
    finally:
        watch.__exit__(None, None, None)
        code = proc.wait()
    files = files_out
    if end is None and watch.fired.is_set():
        report = RollbackReport(run_id, sum(1 for f in files if f.state == "restored"), 0, 0, files,
                                time.monotonic() - start)
        raise SyncCancelled(f"cancelled: rollback stopped after {len(files)} file(s); each file is either its "
                            f"original or the synced version; run the rollback again to finish", report)
    if end is None:
        report = RollbackReport(run_id, 0, 0, len(files), files, time.monotonic() - start)
        raise RollbackError(fatal or f"rollback agent ended without finishing (exit {code}"
                            + (f": {proc.stderr_tail[-1]}" if proc.stderr_tail else "") + ")", report)
    report = RollbackReport(run_id, end["restored"], end["unchanged"], end["failed"], files,
                            time.monotonic() - start)
    emitter.data("rollback", {"run_id": run_id, "restored": report.restored, "failed": report.failed})
    if not report.ok:
        raise RollbackError(f"{report.failed} file(s) could not be rolled back: "
                            + "; ".join(f.error or f.path for f in files if f.state == "rollback_failed"), report)
    return report
