"""Rollback: put back every original a sync-back run replaced, verified by hash.

The rollback agent on production reads the run's journal
(``<backup_dir>/<run_id>/journal.jsonl``) and restores each backed-up original
(a verified copy, renamed over the target), refusing files that changed after
the sync.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

from ..endpoint import Endpoint
from ..events import Emitter, NullEmitter
from ..manifest import join_path, show_path
from .agents import DEFAULT_TRANSPORT, start_agent
from .errors import RollbackError
from .plan import b64, check_abs, check_run_id, unb64


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


def rollback(run_id: str, prod: Endpoint, *, backup_dir: str | bytes, emitter: Emitter | None = None,
             transport: str = DEFAULT_TRANSPORT) -> RollbackReport:
    """Restore every original the run's journal says was backed up, verified by hash.

    Files already back to their original are left alone; a file that changed after the sync
    (neither the synced nor the original content) is refused and reported.
    """
    emitter = emitter or NullEmitter()
    check_run_id(run_id)
    bd = os.fsencode(backup_dir)
    check_abs(bd, "backup dir")
    emitter.phase("rollback")
    start = time.monotonic()
    proc = start_agent(prod, "rollback", transport)
    files: list[FileOutcome] = []
    end: dict | None = None
    fatal = None
    try:
        proc.write(json.dumps({"run_id": run_id, "backup_dir": b64(bd)}).encode() + b"\n")
        proc.close_stdin()
        for raw in proc.lines():
            msg = json.loads(raw)
            if msg.get("ev") == "state":
                path = show_path(join_path(unb64(msg["root"]), unb64(msg["rel"])))
                files.append(FileOutcome(path, msg["state"], kind=msg.get("kind"), error=msg.get("message")))
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
        code = proc.wait()
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
