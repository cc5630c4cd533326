"""Sync back: copy the repaired files from the clone to production, safely. And live catch-up.

This is the only engine that writes to production. The guarantees and where they live:

* **Preview** (``plan_sync``): per file the chunks/bytes to send (from the two
  manifests' chunk digests), the backup location, and drift-guard conflicts that block
  the file unless a person overrides it. ``SyncPlan.fingerprint()`` is what an approval
  records; a changed plan has a different fingerprint.
* **Transfer** (``sync_back``): a reader agent on the clone and an apply agent on
  production (``agent/syncagent.py``, sent over SSH with ``agent/hashagent.py`` so
  digests are the manifests' own). Bytes go clone -> worker -> production: the clone
  has no route to production. Production asks for the 4 KiB blocks of the planned
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
* **Rollback** (``rollback``): restore every backed-up original (a verified copy,
  renamed over the target), refusing files that changed after the sync.

No Django or Celery: engines report through an ``Emitter``.
"""
from __future__ import annotations

import abc
import base64
import hashlib
import json
import os
import re
import subprocess
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

from .agent import AGENT_PATH
from .events import Emitter, NullEmitter
from .manifest import (DEFAULT_CHUNK, Algorithm, DiffEntry, Manifest, build_pair, diff_manifests, drift_check,
                       join_path, show_path)
from .ssh import Endpoint, Session, SSHError, command_string

BLOCK = 4096
SYNC_AGENT_PATH = AGENT_PATH.with_name("syncagent.py")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Measured here (bench/bench_sync.py, docs/sync.md): starting an agent costs 0.17-0.21 s with paramiko
# (in-process) vs 0.30-0.36 s with the OpenSSH client, while a bulk stream runs 74-86 MiB/s through
# OpenSSH vs 34-68 MiB/s through paramiko. Break-even is ~10 MiB of data; a repair's delta is usually a few
# 4 KiB blocks per file, so "auto" takes paramiko unless the plan's upper bound (whole differing
# chunks) is large.
DEFAULT_TRANSPORT = "auto"
AUTO_OPENSSH_FROM_BYTES = 32 << 20


def pick_transport(transport: str, planned_bytes: int) -> str:
    if transport == "auto":
        return "openssh" if planned_bytes >= AUTO_OPENSSH_FROM_BYTES else "paramiko"
    if transport not in ("openssh", "paramiko"):
        raise ValueError(f"transport must be auto, openssh or paramiko, not {transport!r}")
    return transport


# ---------------------------------------------------------------------------- errors
class SyncError(Exception):
    """A sync did not complete. ``report`` (when set) says which files got where."""

    def __init__(self, message: str, report: "SyncReport | LiveSyncReport | None" = None) -> None:
        super().__init__(message)
        self.report = report


class PlanError(SyncError):
    """The selection or the manifests cannot make a safe plan."""


class UnsafePath(PlanError):
    pass


class SyncRefused(SyncError):
    """The plan has drift-guard conflicts nobody overrode."""


class ConnectionLost(SyncError):
    pass


class RollbackError(SyncError):
    pass


# ---------------------------------------------------------------------------- plan
def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def check_rel(rel: bytes) -> None:
    """A root-relative path: no absolute, empty, '.' or '..' component, no NUL."""
    if not rel or rel.startswith(b"/") or b"\0" in rel:
        raise UnsafePath(f"unsafe path {show_path(rel)!r}: must be relative to a root and non-empty")
    if any(p in (b"", b".", b"..") for p in rel.split(b"/")):
        raise UnsafePath(f"unsafe path {show_path(rel)!r}: empty, '.' or '..' component")


def check_abs(path: bytes, what: str) -> None:
    if not path.startswith(b"/") or b"\0" in path or any(p in (b".", b"..") for p in path.split(b"/")):
        raise UnsafePath(f"{what} {show_path(path)!r} must be an absolute path without '.' or '..'")


@dataclass
class PlanFile:
    root: int
    rel: bytes
    clone_path: bytes
    prod_path: bytes
    clone_size: int
    clone_hash: str
    expect_size: int               # production content the approval agreed to replace
    expect_hash: str
    chunks: list[int]              # chunk indexes to send (all of them when ``whole``)
    whole: bool
    send_bytes: int                # upper bound; block refinement usually sends less
    conflicts: list[str] = field(default_factory=list)
    overridden: bool = False

    @property
    def blocked(self) -> bool:
        return bool(self.conflicts) and not self.overridden

    @property
    def display(self) -> str:
        return show_path(self.prod_path)

    def to_dict(self) -> dict:
        return {"root": self.root, "rel": _b64(self.rel), "clone_path": _b64(self.clone_path),
                "prod_path": _b64(self.prod_path), "display": self.display, "clone_size": self.clone_size,
                "clone_hash": self.clone_hash, "expect_size": self.expect_size, "expect_hash": self.expect_hash,
                "chunks": self.chunks, "whole": self.whole, "send_bytes": self.send_bytes,
                "conflicts": self.conflicts, "overridden": self.overridden, "blocked": self.blocked}

    @classmethod
    def from_dict(cls, d: dict) -> "PlanFile":
        return cls(root=d["root"], rel=_unb64(d["rel"]), clone_path=_unb64(d["clone_path"]),
                   prod_path=_unb64(d["prod_path"]), clone_size=d["clone_size"], clone_hash=d["clone_hash"],
                   expect_size=d["expect_size"], expect_hash=d["expect_hash"], chunks=list(d["chunks"]),
                   whole=d["whole"], send_bytes=d["send_bytes"], conflicts=list(d["conflicts"]),
                   overridden=d["overridden"])


@dataclass
class SyncPlan:
    algo: str
    mode: str
    chunk_size: int
    block_size: int
    backup_dir: bytes
    clone_roots: list[bytes]
    prod_roots: list[bytes]
    files: list[PlanFile]
    drift_guard: str               # "content" (production manifest now vs at clone time) | "mtime"

    @property
    def blocked(self) -> list[PlanFile]:
        return [f for f in self.files if f.blocked]

    @property
    def send_bytes(self) -> int:
        return sum(f.send_bytes for f in self.files)

    def backup_location(self, f: PlanFile, run_id: str) -> bytes:
        return self.backup_dir.rstrip(b"/") + b"/" + run_id.encode() + b"/" + f.prod_path.lstrip(b"/")

    def to_dict(self) -> dict:
        files = []
        for f in self.files:
            d = f.to_dict()
            d["backup"] = show_path(self.backup_location(f, "{run_id}"))
            files.append(d)
        return {"v": 1, "algo": self.algo, "mode": self.mode, "chunk_size": self.chunk_size,
                "block_size": self.block_size, "backup_dir": _b64(self.backup_dir),
                "clone_roots": [_b64(r) for r in self.clone_roots], "prod_roots": [_b64(r) for r in self.prod_roots],
                "drift_guard": self.drift_guard, "files": files,
                "totals": {"files": len(self.files), "send_bytes": self.send_bytes,
                           "chunks": sum(len(f.chunks) for f in self.files), "blocked": len(self.blocked)}}

    @classmethod
    def from_dict(cls, d: dict) -> "SyncPlan":
        if d.get("v") != 1:
            raise PlanError("unknown plan format")
        plan = cls(algo=d["algo"], mode=d["mode"], chunk_size=d["chunk_size"], block_size=d["block_size"],
                   backup_dir=_unb64(d["backup_dir"]), clone_roots=[_unb64(r) for r in d["clone_roots"]],
                   prod_roots=[_unb64(r) for r in d["prod_roots"]],
                   files=[PlanFile.from_dict(f) for f in d["files"]], drift_guard=d["drift_guard"])
        plan.validate()
        return plan

    def fingerprint(self) -> str:
        """sha256 of the canonical plan: an approval is for exactly this plan."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def validate(self) -> None:
        """Every path is a safe relative path under one of the diff's roots (checked again on the host)."""
        check_abs(self.backup_dir, "backup dir")
        for r in self.clone_roots + self.prod_roots:
            check_abs(r, "root")
        if self.mode != "chunked" or self.chunk_size < BLOCK or self.chunk_size % BLOCK:
            raise PlanError("sync-back needs chunked manifests with a chunk size that is a multiple of 4 KiB "
                            f"(got {self.mode}/{self.chunk_size}); both hosts need python3")
        for root in self.prod_roots:
            # a root of "/" holds everything; otherwise the backups must not become part of the synced data
            if root != b"/" and (self.backup_dir == root or self.backup_dir.startswith(root.rstrip(b"/") + b"/")):
                raise UnsafePath(f"backup dir {show_path(self.backup_dir)} lies inside the synced root "
                                 f"{show_path(root)}")
        for f in self.files:
            check_rel(f.rel)
            if not 0 <= f.root < len(self.prod_roots):
                raise UnsafePath(f"{f.display}: root index {f.root} is not one of the diff's roots")
            if f.prod_path != join_path(self.prod_roots[f.root], f.rel) or \
                    f.clone_path != join_path(self.clone_roots[f.root], f.rel):
                raise UnsafePath(f"{f.display}: path is not its root joined with its relative path")



def _chunk_indexes(size: int, chunk: int) -> list[int]:
    return list(range((size + chunk - 1) // chunk))


def _chunk_bytes(indexes: Iterable[int], size: int, chunk: int) -> int:
    return sum(max(0, min(chunk, size - i * chunk)) for i in indexes)


def plan_sync(items: Sequence[DiffEntry], clone_manifest: Manifest, prod_manifest: Manifest, *,
              backup_dir: str | bytes, current_prod_manifest: Manifest | None = None,
              clone_point_in_time: float | None = None,
              overrides: Iterable[str | bytes] = ()) -> SyncPlan:
    """The preview a person approves. Needs a drift guard: ``current_prod_manifest`` (production
    hashed again now; compared by content with ``prod_manifest``, taken at clone time) or
    ``clone_point_in_time`` (UNIX seconds; ``prod_manifest`` is then the current state and its
    mtimes are compared). ``overrides``: relative paths whose conflicts a person accepted."""
    if current_prod_manifest is None and clone_point_in_time is None:
        raise PlanError("a drift guard is required: pass current_prod_manifest or clone_point_in_time")
    if clone_manifest.mode != "chunked" or prod_manifest.mode != "chunked":
        raise PlanError("sync-back needs chunked manifests (python3 on both hosts) to send only changed chunks")
    now = current_prod_manifest or prod_manifest
    if now.chunk_size != clone_manifest.chunk_size or now.algo != clone_manifest.algo:
        raise PlanError("clone and production manifests were hashed differently")
    ovr = {os.fsencode(o) for o in overrides}
    rels = [it.rel for it in items]
    if len(set((it.root, it.rel) for it in items)) != len(items):
        raise PlanError("a file is selected twice")
    if current_prod_manifest is not None:
        drifts, guard = drift_check(prod_manifest, current_prod_manifest, paths=rels), "content"
    else:
        drifts, guard = drift_check(float(clone_point_in_time), prod_manifest, paths=rels), "mtime"  # type: ignore
    by_file: dict[tuple[int, bytes], list[str]] = {}
    for d in drifts:
        by_file.setdefault((d.root, d.rel), []).append(d.reason)
    ca, cb = clone_manifest.by_rel(), now.by_rel()
    chunk = clone_manifest.chunk_size
    files: list[PlanFile] = []
    for it in items:
        check_rel(it.rel)
        if it.type_clone != "f" or it.type_prod != "f":
            raise PlanError(f"{it.display}: sync-back replaces regular files that exist on both sides "
                            f"(clone: {it.type_clone}, production: {it.type_prod})")
        ea, eb = ca.get((it.root, it.rel)), cb.get((it.root, it.rel))
        if ea is None or ea.digest is None:
            raise PlanError(f"{it.display}: the clone manifest has no digest for it")
        conflicts = list(by_file.get((it.root, it.rel), []))
        if eb is None or eb.digest is None:
            conflicts.append("deleted" if eb is None else "unreadable")
        whole = eb is None or ea.size != eb.size or ea.chunks is None or eb.chunks is None
        if whole:
            idx = _chunk_indexes(ea.size, chunk)
        else:
            idx = [i for i in range(len(ea.chunks)) if ea.chunks[i] != eb.chunks[i]]  # type: ignore[index]
        files.append(PlanFile(
            root=it.root, rel=it.rel, clone_path=join_path(clone_manifest.roots[it.root], it.rel),
            prod_path=join_path(now.roots[it.root], it.rel), clone_size=ea.size, clone_hash=ea.digest,
            expect_size=eb.size if eb else 0, expect_hash=(eb.digest or "") if eb else "", chunks=idx,
            whole=whole, send_bytes=_chunk_bytes(idx, ea.size, chunk), conflicts=conflicts,
            overridden=bool(conflicts) and it.rel in ovr))
    plan = SyncPlan(algo=clone_manifest.algo, mode="chunked", chunk_size=chunk, block_size=BLOCK,
                    backup_dir=os.fsencode(backup_dir), clone_roots=list(clone_manifest.roots),
                    prod_roots=list(now.roots), files=files, drift_guard=guard)
    plan.validate()
    return plan


# ---------------------------------------------------------------------------- journal mirror
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

    def states(self, run_id: str) -> dict[str, str]:
        """Last state per file."""
        out: dict[str, str] = {}
        for rid, path, st, _d in self.records:
            if rid == run_id:
                out[path] = st
        return out


# ---------------------------------------------------------------------------- agents over SSH
# Reads the compressed hashagent+syncagent from stdin (exact length), leaving stdin open for the protocol.
_BOOT = ("import sys,zlib,types\n"
         "n=int(sys.argv[1]);raw=zlib.decompress(sys.stdin.buffer.read(n));k=int(raw[:10])\n"
         "m=types.ModuleType('hashagent');exec(compile(raw[10:10+k],'hashagent.py','exec'),m.__dict__)\n"
         "sys.modules['hashagent']=m;del sys.argv[1];sys.argv[0]='syncagent'\n"
         "exec(compile(raw[10+k:],'syncagent.py','exec'),{'__name__':'__main__'})\n")
_BLOB: bytes | None = None


def _agent_blob() -> bytes:
    global _BLOB
    if _BLOB is None:
        h = AGENT_PATH.read_bytes()
        _BLOB = zlib.compress(b"%010d" % len(h) + h + SYNC_AGENT_PATH.read_bytes(), 9)
    return _BLOB


def _agent_command(mode: str) -> str:
    return command_string(["python3", "-c", _BOOT, str(len(_agent_blob())), mode])


class _Remote(abc.ABC):
    """A remote agent process: stdin/stdout bytes, stderr tail, exit code."""

    def __init__(self) -> None:
        self.stderr_tail: list[str] = []
        self.sent = 0
        self._err_thread: threading.Thread | None = None

    def _collect_stderr(self, read: Callable[[], bytes]) -> None:
        buf = b""
        while True:
            try:
                data = read()
            except (OSError, EOFError):
                break
            if not data:
                break
            buf += data
        self.stderr_tail = buf.decode("utf-8", "replace").splitlines()[-20:]

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send bytes to the agent's stdin (raises OSError when it is gone)."""

    @abc.abstractmethod
    def close_stdin(self) -> None:
        """EOF for the agent."""

    @abc.abstractmethod
    def read(self, n: int) -> bytes:
        """Up to n bytes of the agent's stdout; b"" at the end."""

    @abc.abstractmethod
    def wait(self) -> int | None:
        """Exit code once it ended."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Drop the connection (the agent sees EOF)."""


class _OpenSSH(_Remote):
    def __init__(self, endpoint: Endpoint, command: str) -> None:
        super().__init__()
        self.kh = endpoint.write_known_hosts()
        self.proc = subprocess.Popen(endpoint.openssh_argv(command, self.kh), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        assert self.proc.stderr is not None
        err = self.proc.stderr
        self._err_thread = threading.Thread(target=self._collect_stderr, args=(lambda: err.read(65536),),
                                            daemon=True)
        self._err_thread.start()

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.sent += len(data)

    def close_stdin(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass

    def read(self, n: int) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.read(n)

    def wait(self) -> int | None:
        code = self.proc.wait()
        if self._err_thread:
            self._err_thread.join(5)
        self.kh.unlink(missing_ok=True)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


class _Paramiko(_Remote):
    def __init__(self, endpoint: Endpoint, command: str) -> None:
        super().__init__()
        self.session = Session.connect(endpoint)
        self.chan = self.session.open_stream(command)
        self._err_thread = threading.Thread(target=self._collect_stderr,
                                            args=(lambda: self.chan.recv_stderr(65536),), daemon=True)
        self._err_thread.start()

    def write(self, data: bytes) -> None:
        self.chan.sendall(data)
        self.sent += len(data)

    def close_stdin(self) -> None:
        try:
            self.chan.shutdown_write()
        except (OSError, EOFError):
            pass

    def read(self, n: int) -> bytes:
        return self.chan.recv(n)

    def wait(self) -> int | None:
        code = self.chan.recv_exit_status()
        if self._err_thread:
            self._err_thread.join(5)
        self.session.close()
        return code

    def kill(self) -> None:
        self.chan.close()
        self.session.close()


def _start(endpoint: Endpoint, mode: str, transport: str) -> _Remote:
    transport = pick_transport(transport, 0)
    cmd = _agent_command(mode)
    try:
        proc: _Remote = _OpenSSH(endpoint, cmd) if transport == "openssh" else _Paramiko(endpoint, cmd)
        proc.write(_agent_blob())
    except (OSError, SSHError) as exc:
        raise ConnectionLost(f"{endpoint}: cannot start the sync agent: {exc}") from exc
    return proc


class _Lines:
    """Line reader over a _Remote's stdout."""

    def __init__(self, proc: _Remote) -> None:
        self.proc, self.buf = proc, b""

    def __iter__(self):
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                yield line
            try:
                data = self.proc.read(65536)
            except (OSError, EOFError):
                data = b""
            if not data:
                return
            self.buf += data


@dataclass
class _Transfer:
    """Result of one reader->apply exchange."""

    end: dict | None
    fatal: str | None
    states: dict[int, dict]                 # last state record per file index
    to_target: int                          # bytes written to the target side's SSH stdin (all of it)
    to_source: int
    payload: int                            # file data bytes that travelled
    target_exit: int | None
    target_stderr: list[str]
    source_exit: int | None = None
    source_stderr: list[str] = field(default_factory=list)

    def source_trouble(self) -> str:
        """The clone-side agent's failure, if it had one (a dead reader ends the target's stream too)."""
        if self.source_exit in (0, None) and not self.source_stderr:
            return ""
        return f"; clone agent exit {self.source_exit}" + (f": {self.source_stderr[-1]}" if self.source_stderr else "")


def _exchange(src_ep: Endpoint, dst_ep: Endpoint, src_plan: dict, dst_plan: dict, *, transport: str,
              on_state: Callable[[dict], None], emitter: Emitter) -> _Transfer:
    """Run reader (source) and apply (target) agents with the worker relaying between them."""
    starts: dict[str, Any] = {}

    def start(key: str, ep: Endpoint, mode: str) -> None:
        try:
            starts[key] = _start(ep, mode, transport)
        except BaseException as exc:  # noqa: BLE001 — re-raised below after the other side is cleaned up
            starts[key] = exc

    threads = [threading.Thread(target=start, args=("dst", dst_ep, "apply")),
               threading.Thread(target=start, args=("src", src_ep, "read"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [v for v in starts.values() if isinstance(v, BaseException)]
    if failed:
        for v in starts.values():
            if isinstance(v, _Remote):
                v.kill()
                v.wait()
        raise failed[0]
    dst: _Remote = starts["dst"]
    src: _Remote = starts["src"]
    payload = [0]
    try:
        dst.write(json.dumps(dst_plan).encode() + b"\n")
        src.write(json.dumps(src_plan).encode() + b"\n")
    except OSError as exc:
        src.kill()
        dst.kill()
        raise ConnectionLost(f"agent exited before reading its plan: {exc}") from exc

    def pump() -> None:
        # clone -> production: a plain byte relay (frames are parsed by the apply agent)
        try:
            while True:
                data = src.read(1 << 20)
                if not data:
                    break
                dst.write(data)
        except (OSError, EOFError):
            pass
        finally:
            dst.close_stdin()

    relay = threading.Thread(target=pump, daemon=True)
    relay.start()
    end: dict | None = None
    fatal: str | None = None
    states: dict[int, dict] = {}
    try:
        end, fatal = _route(dst, src, states, payload, on_state, emitter)
    except BaseException:
        # a Journal/emitter callback failed (or the worker is being stopped): drop both connections
        # so no agent keeps running unattended; production stays consistent (temp + rename)
        src.kill()
        dst.kill()
        relay.join(5)
        raise
    src.close_stdin()
    relay.join(30)
    if relay.is_alive():
        src.kill()
        relay.join(5)
    code = dst.wait()
    if end is None:
        src.kill()
    scode = src.wait()
    return _Transfer(end, fatal, states, dst.sent, src.sent, payload[0], code, dst.stderr_tail, scode,
                     src.stderr_tail)


def _route(dst: _Remote, src: _Remote, states: dict[int, dict], payload: list[int],
           on_state: Callable[[dict], None], emitter: Emitter) -> tuple[dict | None, str | None]:
    """Production agent's messages: requests go to the clone's reader, states to the caller."""
    end: dict | None = None
    fatal: str | None = None
    for raw in _Lines(dst):
        try:
            msg = json.loads(raw)
        except ValueError:
            emitter.log(f"production agent: {raw[:200]!r}", "stderr")
            continue
        ev = msg.get("ev")
        if ev in ("need", "skip"):
            try:
                src.write(raw + b"\n")
            except (OSError, EOFError):
                pass  # the source died: its EOF reaches the apply agent through the relay
        elif ev == "state":
            states[msg["i"]] = msg
            if msg.get("state") == "patched":
                payload[0] += msg.get("bytes", 0)
            on_state(msg)
        elif ev == "end":
            end = msg
            src.close_stdin()
        elif ev == "fatal":
            fatal = msg.get("message", "agent failed")
            src.close_stdin()
    return end, fatal


# ---------------------------------------------------------------------------- sync back
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
    files = [{"i": i, "root": f.root, "rel": _b64(f.rel), "chunks": f.chunks, "source_size": f.clone_size,
              "source_hash": f.clone_hash, "expect_size": f.expect_size, "expect_hash": f.expect_hash}
             for i, f in enumerate(plan.files)]
    common = {"run_id": run_id, "algo": plan.algo, "mode": plan.mode, "chunk": plan.chunk_size,
              "block": plan.block_size, "files": files}
    dst = dict(common, roots=[_b64(r) for r in plan.prod_roots], backup_dir=_b64(plan.backup_dir),
               on_error="stop", mtime="original", fingerprint=fingerprint)
    src = dict(common, source_roots=[_b64(r) for r in plan.clone_roots])
    return src, dst


def sync_back(plan: SyncPlan, clone: Endpoint, prod: Endpoint, *, run_id: str, emitter: Emitter | None = None,
              journal: Journal | None = None, transport: str = DEFAULT_TRANSPORT,
              on_error: str = "rollback") -> SyncReport:
    """Apply an approved plan. Resume an interrupted run by calling again with the same ``run_id``.

    The first failing file stops the run; with ``on_error="rollback"`` (the design's rule) the
    files already replaced in this run are restored from the backup, with ``"stop"`` they stay.
    Raises ``SyncError`` (``.report`` tells which file reached which state).
    """
    emitter = emitter or NullEmitter()
    journal = journal or MemoryJournal()
    if not RUN_ID_RE.match(run_id):
        raise PlanError(f"run id {run_id!r} must match {RUN_ID_RE.pattern}")
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

    def on_state(msg: dict) -> None:
        f = plan.files[msg["i"]]
        detail = {k: v for k, v in msg.items() if k not in ("ev", "i", "rel")}
        journal.record(run_id, f.display, msg["state"], detail)
        if msg["state"] in ("done", "skipped", "failed"):
            done_count[0] += 1
            emitter.progress(done_count[0], len(plan.files), "files")
            stream = "stderr" if msg["state"] == "failed" else "info"
            emitter.log(f"{f.display}: {msg['state']}" + (f" — {msg['message']}" if msg.get("message") else "")
                        + (f" ({msg['bytes']} bytes sent)" if msg.get("bytes") else ""), stream)

    try:
        t = _exchange(clone, prod, src_plan, dst_plan, transport=transport, on_state=on_state, emitter=emitter)
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
                                          transport=transport)
        except RollbackError as exc:
            report.rolled_back = exc.report  # type: ignore[assignment]
            report.error += f"; ROLLBACK FAILED: {exc}"
    journal.finish(run_id, "failed", {"error": report.error,
                                      "rolled_back": report.rolled_back.restored if report.rolled_back else 0})
    cls = ConnectionLost if t.end is None and not t.fatal else SyncError
    raise cls(report.error, report)


def rollback(run_id: str, prod: Endpoint, *, backup_dir: str | bytes, emitter: Emitter | None = None,
             transport: str = DEFAULT_TRANSPORT) -> RollbackReport:
    """Restore every original the run's journal says was backed up, verified by hash.

    Files already back to their original are left alone; a file that changed after the sync
    (neither the synced nor the original content) is refused and reported.
    """
    emitter = emitter or NullEmitter()
    if not RUN_ID_RE.match(run_id):
        raise PlanError(f"run id {run_id!r} must match {RUN_ID_RE.pattern}")
    bd = os.fsencode(backup_dir)
    check_abs(bd, "backup dir")
    emitter.phase("rollback")
    start = time.monotonic()
    proc = _start(prod, "rollback", pick_transport(transport, 0))
    files: list[FileOutcome] = []
    end: dict | None = None
    fatal = None
    try:
        proc.write(json.dumps({"run_id": run_id, "backup_dir": _b64(bd)}).encode() + b"\n")
        proc.close_stdin()
        for raw in _Lines(proc):
            msg = json.loads(raw)
            if msg.get("ev") == "state":
                path = show_path(join_path(_unb64(msg["root"]), _unb64(msg["rel"])))
                files.append(FileOutcome(path, msg["state"], kind=msg.get("kind"), error=msg.get("message")))
                emitter.log(f"{path}: {msg['state']}" + (f" — {msg['message']}" if msg.get("message") else ""),
                            "stderr" if msg.get("message") else "info")
            elif msg.get("ev") == "end":
                end = msg
            elif msg.get("ev") == "fatal":
                fatal = msg.get("message")
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


# ---------------------------------------------------------------------------- live sync: files
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
                    chunk_size: int = DEFAULT_CHUNK, settle: float = 0.0, run_id: str = "live") -> LiveSyncReport:
    """Repeated delta passes ``src -> dst`` (``direction="reverse"``: ``dst -> src``) over the same
    absolute ``paths`` on both hosts until a pass finds nothing to move, or ``time_limit``.

    A pass: quick size/mtime manifests of both sides, then for each file that moved the apply
    agent sends its block digests and only differing 4 KiB blocks travel; the swap is the same
    temp + fsync + verify + atomic rename as sync-back, and the source's mtime is kept so the
    next quick scan sees the file as equal. No backup (this is catch-up, not a repair).
    """
    emitter = emitter or NullEmitter()
    if direction not in ("forward", "reverse"):
        raise ValueError("direction must be forward or reverse")
    if direction == "reverse":
        src, dst = dst, src
    roots = [os.fsencode(p) for p in paths]
    for r in roots:
        check_abs(r, "path")
    if not RUN_ID_RE.match(run_id):
        raise PlanError(f"run id {run_id!r} must match {RUN_ID_RE.pattern}")
    emitter.phase("live_sync")
    start = time.monotonic()
    passes: list[LivePass] = []
    algo: Algorithm | None = None
    lag_files = lag_bytes = 0
    while True:
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
        files = [{"i": i, "root": e.root, "rel": _b64(e.rel), "chunks": None, "source_size": None,
                  "source_hash": None, "expect_size": None, "expect_hash": None} for i, e in enumerate(moved)]
        for e in moved:
            check_rel(e.rel)
        common = {"run_id": run_id, "algo": ms.algo, "mode": "chunked", "chunk": chunk_size, "block": BLOCK,
                  "files": files}
        t = _exchange(src, dst, dict(common, source_roots=[_b64(r) for r in ms.roots]),
                      dict(common, roots=[_b64(r) for r in md.roots], backup_dir=None, on_error="continue",
                           mtime="source"),
                      transport=pick_transport(transport, lag_bytes), on_state=lambda m: None, emitter=emitter)
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


# ---------------------------------------------------------------------------- live sync: vendor catch-up
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
                     time_limit: float, emitter: Emitter | None = None) -> VendorCatchupReport:
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
    buf = {"stdout": b"", "stderr": b""}

    def lines(stream: str, data: bytes) -> None:
        buf[stream] += data
        *done, buf[stream] = buf[stream].split(b"\n")
        for raw in done:
            line = raw.decode("utf-8", "replace").rstrip("\r")
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
    with Session.connect(endpoint) as s:
        chan = s.open_stream(cmd)
        chan.shutdown_write()
        import select
        while True:
            while chan.recv_ready():
                lines("stdout", chan.recv(65536))
            while chan.recv_stderr_ready():
                lines("stderr", chan.recv_stderr(65536))
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if time.monotonic() - start > time_limit:
                timed_out = True
                break
            select.select([chan], [], [], 0.2)
        for stream in ("stdout", "stderr"):
            if buf[stream]:
                lines(stream, b"\n")
        code = None if timed_out else chan.recv_exit_status()
        chan.close()
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


# ---------------------------------------------------------------------------- command line
def _cli(argv: Sequence[str]) -> int:
    """``python -m workers.engines.sync sync-back SPEC.json``: run one sync-back from a JSON spec
    ``{"plan": SyncPlan.to_dict(), "clone": Endpoint fields, "prod": Endpoint fields, "run_id",
    "on_error"?, "transport"?}`` — used by the kill-and-resume test and the benchmark, which
    SIGKILL this process at random points."""
    import sys

    from .events import PrintEmitter
    if len(argv) != 2 or argv[0] != "sync-back":
        print("usage: python -m workers.engines.sync sync-back SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[1]).read_text())
    try:
        report = sync_back(SyncPlan.from_dict(spec["plan"]), Endpoint(**spec["clone"]), Endpoint(**spec["prod"]),
                           run_id=spec["run_id"], emitter=PrintEmitter(), on_error=spec.get("on_error", "rollback"),
                           transport=spec.get("transport", DEFAULT_TRANSPORT))
    except SyncError as exc:
        print(f"sync-back failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict()))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(_cli(sys.argv[1:]))
