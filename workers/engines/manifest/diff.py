"""The clone-vs-production diff: two manifests in, every differing path out.

Pure comparison, no I/O. Every path lands in one of ``vocabulary.CATEGORIES``;
anything that cannot be compared (unreadable, changed while being read) is
reported, never counted as equal.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Iterable

from ..vocabulary import CATEGORIES, CHANGE_LABELS
from .model import Entry, Manifest, ManifestError, join_path, path_to_json, show_path

__all__ = ["CATEGORIES", "CHANGE_LABELS", "DiffEntry", "DiffResult", "diff_manifests", "check_comparable"]


@dataclass
class DiffEntry:
    category: str
    root: int
    rel: bytes
    clone_path: bytes
    prod_path: bytes
    type_clone: str | None
    type_prod: str | None
    size_clone: int | None
    size_prod: int | None
    reasons: list[str] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)     # indexes of differing chunks
    chunk_count: int = 0                                # chunks in the larger of the two versions
    error: str | None = None

    @property
    def display(self) -> str:
        return show_path(self.prod_path)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if not isinstance(v, bytes)}
        for key in ("rel", "clone_path", "prod_path"):
            path_to_json(d, key, getattr(self, key))
        d["display"] = self.display
        return d


@dataclass
class DiffResult:
    algo: str
    mode: str
    quick: bool
    chunk_size: int
    entries: list[DiffEntry]
    totals: dict

    def of(self, category: str) -> list[DiffEntry]:
        return [e for e in self.entries if e.category == category]

    @property
    def changed(self) -> list[DiffEntry]:
        return self.of("changed")

    @property
    def missing_on_production(self) -> list[DiffEntry]:
        return self.of("missing_on_production")

    @property
    def extra_on_production(self) -> list[DiffEntry]:
        return self.of("extra_on_production")

    @property
    def type_changed(self) -> list[DiffEntry]:
        return self.of("type_changed")

    @property
    def unreadable(self) -> list[DiffEntry]:
        return self.of("unreadable")

    def find(self, rel: bytes | str) -> DiffEntry | None:
        rel = os.fsencode(rel)
        return next((e for e in self.entries if e.rel == rel), None)

    def to_dict(self) -> dict:
        return {"algo": self.algo, "mode": self.mode, "quick": self.quick, "chunk_size": self.chunk_size,
                "totals": self.totals, "entries": [e.to_dict() for e in self.entries]}


def _link_groups(m: Manifest) -> dict[tuple[int, bytes], frozenset[bytes]]:
    """For files with nlink > 1: the other paths (in this manifest) sharing the inode."""
    groups: dict[str, list[tuple[int, bytes]]] = {}
    for e in m.entries.values():
        if e.type == "f" and e.nlink > 1 and e.ino:
            groups.setdefault(e.ino, []).append((e.root, e.rel))
    out: dict[tuple[int, bytes], frozenset[bytes]] = {}
    for members in groups.values():
        for key in members:
            out[key] = frozenset(b"%d/" % r + rel for r, rel in members if (r, rel) != key)
    return out


def check_comparable(a: Manifest, b: Manifest, quick: bool) -> None:
    """ManifestError unless both manifests are complete, cover as many roots and were hashed alike."""
    if len(a.roots) != len(b.roots):
        raise ManifestError(f"manifests cover {len(a.roots)} vs {len(b.roots)} roots")
    for m in (a, b):
        if not m.complete:
            raise ManifestError(f"manifest of {m.host or 'a host'} is incomplete (agent output was truncated)")
    if quick:
        return
    if a.quick or b.quick:
        raise ManifestError("a quick (metadata-only) manifest cannot be compared by content; pass quick=True")
    if (a.algo, a.mode) != (b.algo, b.mode) or (a.mode == "chunked" and a.chunk_size != b.chunk_size):
        raise ManifestError(f"manifests were hashed differently ({a.algo}/{a.mode}/{a.chunk_size} vs "
                            f"{b.algo}/{b.mode}/{b.chunk_size}): negotiate one algorithm for both sides")


def _differing_chunks(a: list[str] | None, b: list[str] | None) -> list[int]:
    if a is None or b is None:
        return []
    n = max(len(a), len(b))
    return [i for i in range(n) if i >= len(a) or i >= len(b) or a[i] != b[i]]


def _data_bytes(entries: Iterable[Entry]) -> int:
    """Bytes of file data, hard links counted once (the % of data must not double count)."""
    seen: set[str] = set()
    total = 0
    for e in entries:
        if e.type != "f":
            continue
        if e.nlink > 1 and e.ino:
            if e.ino in seen:
                continue
            seen.add(e.ino)
        total += e.size
    return total


def diff_manifests(clone: Manifest, prod: Manifest, *, quick: bool = False) -> DiffResult:
    """Compare two hosts' trees. Full content comparison unless ``quick`` (size + mtime only).

    Anything that cannot be compared (unreadable, changed while being read) is
    reported, never counted as equal. Modification times are ignored in content
    mode: the restore on the clone rewrites them all.
    """
    check_comparable(clone, prod, quick)
    a, b = clone.by_rel(), prod.by_rel()
    la, lb = _link_groups(clone), _link_groups(prod)
    entries: list[DiffEntry] = []
    chunk_size = clone.chunk_size if clone.mode == "chunked" and prod.mode == "chunked" else 0  # whole: no chunks

    for key in sorted(set(a) | set(b)):
        ea, eb = a.get(key), b.get(key)
        root, rel = key
        d = DiffEntry(category="", root=root, rel=rel,
                      clone_path=join_path(clone.roots[root], rel), prod_path=join_path(prod.roots[root], rel),
                      type_clone=ea.type if ea else None, type_prod=eb.type if eb else None,
                      size_clone=ea.size if ea else None, size_prod=eb.size if eb else None)
        if eb is None:
            d.category = "missing_on_production"
        elif ea is None:
            d.category = "extra_on_production"
        elif ea.error or eb.error:
            d.category = "unreadable"
            d.error = "; ".join(f"{side}: {e.error}" for side, e in (("clone", ea), ("production", eb)) if e.error)
        elif ea.type != eb.type:
            d.category = "type_changed"
        else:
            content: list[str] = []
            meta: list[str] = []
            if ea.type == "f":
                if ea.unstable or eb.unstable:
                    content.append("unstable")  # changed while read: never call it equal
                if ea.size != eb.size:
                    content.append("size")
                if quick:
                    res = max(clone.mtime_resolution_ns, prod.mtime_resolution_ns)
                    if ea.mtime_ns // res != eb.mtime_ns // res:
                        content.append("mtime")
                elif ea.digest is None or eb.digest is None:
                    content.append("no-digest")
                elif ea.digest != eb.digest:
                    content.append("content")
                if content and not quick:
                    d.chunks = _differing_chunks(ea.chunks, eb.chunks)
                    if chunk_size:
                        big = max(ea.size, eb.size)
                        d.chunk_count = (big + chunk_size - 1) // chunk_size
                if la.get(key, frozenset()) != lb.get(key, frozenset()):
                    meta.append("hardlinks")
            elif ea.type == "l" and ea.target != eb.target:
                content.append("target")
            elif ea.type in ("c", "b") and ea.rdev != eb.rdev:
                content.append("rdev")
            if ea.mode != eb.mode:
                meta.append("mode")
            if (ea.uid, ea.gid) != (eb.uid, eb.gid):
                meta.append("owner")
            if content:
                d.category = "changed"
                d.reasons = content + meta
            elif meta:
                d.category = "metadata_changed"
                d.reasons = meta
            else:
                continue
        entries.append(d)

    clone_bytes = _data_bytes(a.values())
    changed_files = [e for e in entries if e.category == "changed" and e.type_clone == "f"]
    changed_bytes = sum(max(e.size_clone or 0, e.size_prod or 0) for e in changed_files)
    chunk_bytes = sum(len(e.chunks) * chunk_size for e in changed_files if chunk_size)
    totals = {
        "files_clone": sum(1 for e in a.values() if e.type == "f"),
        "files_production": sum(1 for e in b.values() if e.type == "f"),
        "bytes_clone": clone_bytes,
        "bytes_production": _data_bytes(b.values()),
        "changed_files": len(changed_files),
        "changed_bytes": changed_bytes,
        "changed_chunk_bytes": chunk_bytes,
        "percent_of_data": round(100.0 * changed_bytes / clone_bytes, 3) if clone_bytes else 0.0,
        **{c: sum(1 for e in entries if e.category == c) for c in CATEGORIES},
    }
    return DiffResult(algo=clone.algo, mode=clone.mode, quick=quick, chunk_size=chunk_size,
                      entries=entries, totals=totals)
