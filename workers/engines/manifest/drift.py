"""The drift guard: did production change after the clone's point in time?

Sync-back must stop and ask, never overwrite newer production data unnoticed.
Pure comparison of manifests (or of mtimes against a timestamp), no I/O.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from .diff import check_comparable
from .model import Manifest, join_path, show_path


@dataclass
class Drift:
    rel: bytes
    root: int
    path: bytes
    reason: str                    # content_changed | mtime_after_clone | created | deleted | type_changed | unreadable
    mtime_ns: int | None = None

    @property
    def display(self) -> str:
        return show_path(self.path)


def drift_check(reference: Manifest | float | int, current: Manifest, *,
                paths: Iterable[bytes | str] | None = None) -> list[Drift]:
    """Files whose production content/mtime changed after the clone's point in time.

    ``reference`` is either production's manifest taken at clone time (content is
    compared: catches in-place edits that keep mtime) or the clone's point in time
    as a UNIX timestamp in seconds (mtime is compared). ``paths`` (root-relative)
    limits the check to the files chosen for sync-back. Non-empty result: sync-back
    must stop and ask, never overwrite newer production data unnoticed.
    """
    want = {os.fsencode(p) for p in paths} if paths is not None else None
    cur = current.by_rel()
    out: list[Drift] = []
    if isinstance(reference, Manifest):
        quick = reference.quick or current.quick  # then size + mtime is all there is to compare
        res = max(reference.mtime_resolution_ns, current.mtime_resolution_ns)
        check_comparable(reference, current, quick=quick)
        ref = reference.by_rel()
        for key in sorted(set(ref) | set(cur)):
            if want is not None and key[1] not in want:
                continue
            r, c = ref.get(key), cur.get(key)
            path = current.path_of(c) if c else reference.path_of(r)  # type: ignore[arg-type]
            reason = None
            if c is None:
                reason = "deleted"
            elif r is None:
                reason = "created"
            elif c.error or r.error:
                reason = "unreadable"
            elif c.type != r.type:
                reason = "type_changed"
            elif c.type == "f" and (c.size != r.size or c.unstable or (
                    c.mtime_ns // res != r.mtime_ns // res if quick else c.digest != r.digest)):
                reason = "content_changed"
            elif c.type == "l" and c.target != r.target:
                reason = "content_changed"
            if reason:
                out.append(Drift(key[1], key[0], path, reason, c.mtime_ns if c else None))
        return out
    cutoff_ns = int(float(reference) * 1_000_000_000)
    res = current.mtime_resolution_ns
    for key, c in sorted(cur.items()):
        if want is not None and key[1] not in want:
            continue
        if c.type == "d":
            continue  # a directory's mtime moves with any create/delete inside; its files are checked
        # at coarse resolution (shell fallback) a file touched in the same second counts as drifted
        if c.mtime_ns // res * res > cutoff_ns - (res if res > 1 else 0) or c.unstable:
            out.append(Drift(key[1], key[0], current.path_of(c), "mtime_after_clone", c.mtime_ns))
    if want is not None:
        for rel in want - {k[1] for k in cur}:
            out.append(Drift(rel, 0, join_path(current.roots[0], rel), "deleted"))
    return out
