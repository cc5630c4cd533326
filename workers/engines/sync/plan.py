"""The sync-back plan: the preview a person approves.

Per file the chunks/bytes to send (from the two manifests' chunk digests), the
backup location, and drift-guard conflicts that block the file unless a person
overrides it. ``SyncPlan.fingerprint()`` is what an approval records; a changed
plan has a different fingerprint. Pure data and checks, no I/O.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ..manifest import DiffEntry, Manifest, drift_check, join_path, show_path
from .errors import PlanError, UnsafePath

BLOCK = 4096
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def check_run_id(run_id: str) -> None:
    """A run id names the backup directory on production: letters, digits, '._-', at most 64."""
    if not RUN_ID_RE.match(run_id):
        raise PlanError(f"run id {run_id!r} must match {RUN_ID_RE.pattern}")


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
        return {"root": self.root, "rel": b64(self.rel), "clone_path": b64(self.clone_path),
                "prod_path": b64(self.prod_path), "display": self.display, "clone_size": self.clone_size,
                "clone_hash": self.clone_hash, "expect_size": self.expect_size, "expect_hash": self.expect_hash,
                "chunks": self.chunks, "whole": self.whole, "send_bytes": self.send_bytes,
                "conflicts": self.conflicts, "overridden": self.overridden, "blocked": self.blocked}

    @classmethod
    def from_dict(cls, d: dict) -> "PlanFile":
        return cls(root=d["root"], rel=unb64(d["rel"]), clone_path=unb64(d["clone_path"]),
                   prod_path=unb64(d["prod_path"]), clone_size=d["clone_size"], clone_hash=d["clone_hash"],
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
                "block_size": self.block_size, "backup_dir": b64(self.backup_dir),
                "clone_roots": [b64(r) for r in self.clone_roots], "prod_roots": [b64(r) for r in self.prod_roots],
                "drift_guard": self.drift_guard, "files": files,
                "totals": {"files": len(self.files), "send_bytes": self.send_bytes,
                           "chunks": sum(len(f.chunks) for f in self.files), "blocked": len(self.blocked)}}

    @classmethod
    def from_dict(cls, d: dict) -> "SyncPlan":
        if d.get("v") != 1:
            raise PlanError("unknown plan format")
        plan = cls(algo=d["algo"], mode=d["mode"], chunk_size=d["chunk_size"], block_size=d["block_size"],
                   backup_dir=unb64(d["backup_dir"]), clone_roots=[unb64(r) for r in d["clone_roots"]],
                   prod_roots=[unb64(r) for r in d["prod_roots"]],
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
    ca, cb, at_diff = clone_manifest.by_rel(), now.by_rel(), prod_manifest.by_rel()
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
        if (conflicts and current_prod_manifest is not None and eb is not None and eb.digest == ea.digest
                and eb.size == ea.size and at_diff.get((it.root, it.rel)) is not None):
            # Production already holds the clone's content: an earlier attempt of this sync-back replaced it
            # (a worker killed mid-run). That is not drift; plan it as the diff saw it, so the original stays
            # the expected file (its backup is the rollback's) and the agent skips it by content.
            conflicts, eb = [], at_diff[(it.root, it.rel)]
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
