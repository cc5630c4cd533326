"""drift_check(): production data that changed after the clone's point in time is flagged."""
from __future__ import annotations

import os
import time
from pathlib import Path

from workers.engines.manifest import build_local_manifest, drift_check

CHUNK = 64 * 1024


def tree(tmp_path: Path) -> Path:
    root = tmp_path / "prod"
    root.mkdir()
    for name in ("a.db", "b.db", "c.db"):
        (root / name).write_bytes(os.urandom(3 * CHUNK))
    old = time.time() - 3600
    for p in root.iterdir():
        os.utime(p, (old, old))
    return root


def test_content_drift_against_manifest_taken_at_clone_time(tmp_path: Path) -> None:
    prod = tree(tmp_path)
    at_clone = build_local_manifest([prod], algo="sha256", chunk_size=CHUNK)
    st = (prod / "a.db").stat()
    with open(prod / "a.db", "r+b") as fh:  # in-place write that hides its mtime
        fh.write(b"new row")
    os.utime(prod / "a.db", ns=(st.st_atime_ns, st.st_mtime_ns))
    (prod / "c.db").unlink()
    (prod / "d.db").write_bytes(b"new")
    now = build_local_manifest([prod], algo="sha256", chunk_size=CHUNK)
    got = {(d.rel, d.reason) for d in drift_check(at_clone, now)}
    assert got == {(b"a.db", "content_changed"), (b"c.db", "deleted"), (b"d.db", "created")}
    assert [d.rel for d in drift_check(at_clone, now, paths=["b.db", "a.db"])] == [b"a.db"]


def test_mtime_drift_against_clone_point_in_time(tmp_path: Path) -> None:
    prod = tree(tmp_path)
    clone_time = time.time() - 60
    (prod / "b.db").write_bytes(b"written after the clone")
    now = build_local_manifest([prod], algo="sha256", quick=True)
    got = drift_check(clone_time, now)
    assert [(d.rel, d.reason) for d in got] == [(b"b.db", "mtime_after_clone")]
    assert drift_check(clone_time, now, paths=["a.db"]) == []
    assert [d.reason for d in drift_check(clone_time, now, paths=["gone.db"])] == ["deleted"]


def test_shell_fallback_second_resolution_errs_towards_drift(tmp_path: Path) -> None:
    prod = tree(tmp_path)
    (prod / "b.db").write_bytes(b"x")
    t = (prod / "b.db").stat().st_mtime
    now = build_local_manifest([prod], algo="sha256", mode="whole", shell=True)
    # a clone taken in the same second as the write: cannot prove it is older -> flagged
    assert [d.rel for d in drift_check(t, now)] == [b"b.db"]


def test_quick_reference_manifest_compares_size_and_mtime(tmp_path: Path) -> None:
    prod = tree(tmp_path)
    at_clone = build_local_manifest([prod], algo="sha256", quick=True)
    (prod / "c.db").write_bytes(b"rewritten")
    now = build_local_manifest([prod], algo="sha256", chunk_size=CHUNK)
    assert [(d.rel, d.reason) for d in drift_check(at_clone, now)] == [(b"c.db", "content_changed")]
