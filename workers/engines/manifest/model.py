"""The manifest: what the hashing agent reports for a set of roots on one host.

Every entry's type and metadata and, for regular files, a file digest plus
per-chunk digests (``agent/hashagent.py`` computes them; ``hashing`` runs it).

Paths are bytes everywhere (Linux file names are bytes, and a non-UTF-8 name
must neither crash the diff nor be misreported as equal). On disk a manifest is
gzip'd JSON lines in the agent's own format, so the sync-back step can reuse
the chunk digests.
"""
from __future__ import annotations

import base64
import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CHUNK = 1 << 20

Local = None  # an "endpoint" of None means: this machine


class ManifestError(Exception):
    """The agent failed, its output was truncated, or two manifests cannot be compared."""


# ---------------------------------------------------------------------------- paths
def path_from_json(rec: dict, key: str) -> bytes | None:
    """A path stored by ``path_to_json`` (``key`` as UTF-8 text, or ``key + "b"`` as base64)."""
    if key in rec:
        return rec[key].encode("utf-8")
    if key + "b" in rec:
        return base64.b64decode(rec[key + "b"])
    return None


def path_to_json(rec: dict, key: str, raw: bytes) -> None:
    """Store a path under ``key`` as text when it is UTF-8, else under ``key + "b"`` as base64."""
    try:
        rec[key] = raw.decode("utf-8")
    except UnicodeDecodeError:
        rec[key + "b"] = base64.b64encode(raw).decode("ascii")


def show_path(raw: bytes) -> str:
    """Printable form of a path: undecodable bytes as \\xNN, control characters escaped."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode() for c in text)


def join_path(root: bytes, rel: bytes) -> bytes:
    if not rel:
        return root
    return root.rstrip(b"/") + b"/" + rel if root != b"/" else b"/" + rel


# ---------------------------------------------------------------------------- manifest
@dataclass
class Entry:
    root: int                      # index into Manifest.roots
    rel: bytes                     # path relative to its root (b"" = the root itself)
    type: str                      # f d l c b p s ?
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    nlink: int = 1
    ino: str = ""                  # "dev:ino" (hard-link identity on that host)
    alloc: int | None = None       # allocated bytes (st_blocks*512): < size means sparse
    digest: str | None = None
    chunks: list[str] | None = None
    target: bytes | None = None    # symlink target
    rdev: str | None = None        # "major:minor" for devices
    unstable: bool = False         # content changed while it was being read
    error: str | None = None

    @property
    def sparse(self) -> bool:
        return self.type == "f" and self.alloc is not None and self.alloc < self.size

    @classmethod
    def from_json(cls, rec: dict) -> "Entry":
        return cls(
            root=rec.get("r", 0), rel=path_from_json(rec, "p") or b"", type=rec.get("t", "?"),
            size=rec.get("size", 0), mode=rec.get("mode", 0), uid=rec.get("uid", 0), gid=rec.get("gid", 0),
            mtime_ns=rec.get("mtime_ns", 0), nlink=rec.get("nlink", 1), ino=rec.get("ino", ""),
            alloc=rec.get("alloc"), digest=rec.get("h"), chunks=rec.get("c"),
            target=path_from_json(rec, "target"), rdev=rec.get("rdev"),
            unstable=bool(rec.get("unstable")), error=rec.get("err"))

    def to_json(self) -> dict:
        rec: dict[str, Any] = {"r": self.root}
        path_to_json(rec, "p", self.rel)
        rec.update({"t": self.type, "size": self.size, "mode": self.mode, "uid": self.uid, "gid": self.gid,
                    "mtime_ns": self.mtime_ns, "nlink": self.nlink, "ino": self.ino})
        for key, value in (("alloc", self.alloc), ("h", self.digest), ("c", self.chunks),
                           ("rdev", self.rdev), ("err", self.error)):
            if value is not None:
                rec[key] = value
        if self.target is not None:
            path_to_json(rec, "target", self.target)
        if self.unstable:
            rec["unstable"] = True
        return rec


@dataclass
class Manifest:
    roots: list[bytes]
    algo: str
    mode: str = "chunked"          # "chunked" (per-chunk digests) | "whole" (file digest only)
    chunk_size: int = DEFAULT_CHUNK
    quick: bool = False            # metadata only, no content digests
    host: str = ""
    started_ns: int = 0            # host clock when the walk began
    mtime_resolution_ns: int = 1   # the shell fallback only sees whole seconds
    complete: bool = False         # the agent's trailer arrived
    stats: dict = field(default_factory=dict)
    entries: dict[bytes, Entry] = field(default_factory=dict)   # keyed by full path bytes

    def add(self, entry: Entry) -> None:
        self.entries[self.path_of(entry)] = entry

    def path_of(self, entry: Entry) -> bytes:
        return join_path(self.roots[entry.root], entry.rel)

    def by_rel(self) -> dict[tuple[int, bytes], Entry]:
        """Entries keyed by (root index, relative path): how two hosts' trees line up."""
        return {(e.root, e.rel): e for e in self.entries.values()}

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, path: bytes | str) -> Entry | None:
        return self.entries.get(os.fsencode(path))

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries.values() if e.type == "f")

    def header(self) -> dict:
        return {"agent": "understudy-manifest", "v": 1, "algo": self.algo, "mode": self.mode,
                "chunk": self.chunk_size, "quick": self.quick, "host": self.host,
                "started_ns": self.started_ns, "mtime_resolution_ns": self.mtime_resolution_ns,
                "complete": self.complete, "stats": self.stats,
                "rootsb": [base64.b64encode(r).decode("ascii") for r in self.roots]}

    def save(self, path: str | os.PathLike) -> Path:
        """gzip'd JSON lines: header, then one line per entry (the agent's format)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with gzip.open(tmp, "wb", compresslevel=6) as fh:
            fh.write(json.dumps(self.header(), separators=(",", ":")).encode() + b"\n")
            for entry in self.entries.values():
                fh.write(json.dumps(entry.to_json(), separators=(",", ":")).encode() + b"\n")
        os.replace(tmp, path)  # a half-written manifest must never be loaded as a whole one
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        with gzip.open(path, "rb") as fh:
            lines = iter(fh)
            try:
                head = json.loads(next(lines))
            except StopIteration as exc:
                raise ManifestError(f"{path}: empty manifest file") from exc
            if head.get("agent") != "understudy-manifest":
                raise ManifestError(f"{path}: not an understudy manifest")
            m = cls(roots=[base64.b64decode(r) for r in head["rootsb"]], algo=head["algo"], mode=head["mode"],
                    chunk_size=head["chunk"], quick=head["quick"], host=head.get("host", ""),
                    started_ns=head.get("started_ns", 0),
                    mtime_resolution_ns=head.get("mtime_resolution_ns", 1),
                    complete=head.get("complete", False), stats=head.get("stats", {}))
            for line in lines:
                m.add(Entry.from_json(json.loads(line)))
        return m
