"""The clone's second (delta) pass cannot write through a symlink its first pass left in the
staging tree. A real GNU tar guards links within one archive, not those already on disk; a
compromised production host can send a delta stream without directory entries, so "x/f" would
land wherever the link "x" points — on the hypervisor, as root. The delta is extracted into an
empty directory and merged in with O_NOFOLLOW walks instead."""
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.support.clone import TREE_KINDS, tree_parent
from workers.engines.confined import identical_entries, merge_tree


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("tree_kind", TREE_KINDS)
def test_a_hostile_delta_stream_lands_inside_the_tree(tmp_path: Path, tree_kind: str):
    with tree_parent(tree_kind, tmp_path) as parent:
        _hostile_delta(tmp_path, parent)


def _hostile_delta(tmp_path: Path, parent: Path) -> None:
    """Staging and delta under ``parent`` (one file system: the merge renames), the hypervisor's files outside."""
    outside = tmp_path / "hypervisor-etc"
    outside.mkdir()
    (outside / "passwd").write_bytes(b"the hypervisor's own file\n")
    staging = parent / "staging"
    (staging / "etc").mkdir(parents=True)
    (staging / "etc" / "conf").symlink_to(outside)          # left by the first pass
    (staging / "etc" / "keep").write_bytes(b"unchanged\n")
    (staging / "var").symlink_to("/nonexistent")
    stream = _tar({"./etc/conf/passwd": b"owned\n", "./etc/new": b"new\n", "./var/x/f": b"deep\n"})

    # what extracting the delta straight over staging does (the hole)
    probe = tmp_path / "probe"
    subprocess.run(["cp", "-a", str(staging), str(probe)], check=True)
    subprocess.run(["tar", "-x", "-f", "-", "-C", str(probe)], input=stream, capture_output=True)
    assert (outside / "passwd").read_bytes() == b"owned\n", "GNU tar follows a link already on disk"
    (outside / "passwd").write_bytes(b"the hypervisor's own file\n")

    # what the clone does: an empty directory, then a merge that never follows a link
    delta = parent / "delta"
    delta.mkdir()
    subprocess.run(["tar", "-x", "-f", "-", "-C", str(delta)], input=stream, check=True)
    assert merge_tree(delta, staging) >= 3
    assert (outside / "passwd").read_bytes() == b"the hypervisor's own file\n"
    assert sorted(os.listdir(outside)) == ["passwd"]
    assert not (staging / "etc" / "conf").is_symlink() and (staging / "etc" / "conf" / "passwd").read_bytes() == \
        b"owned\n"
    assert (staging / "etc" / "new").read_bytes() == b"new\n"
    assert (staging / "etc" / "keep").read_bytes() == b"unchanged\n"
    assert not (staging / "var").is_symlink() and (staging / "var" / "x" / "f").read_bytes() == b"deep\n"
    assert os.listdir(delta) == []


def test_a_delta_updates_files_and_directories_in_place(tmp_path: Path):
    staging, delta = tmp_path / "staging", tmp_path / "delta"
    (staging / "d" / "sub").mkdir(parents=True)
    (staging / "d" / "old").write_bytes(b"1")
    (staging / "d" / "sub" / "gone-dir-now-file").mkdir()
    (delta / "d" / "sub").mkdir(parents=True)
    (delta / "d" / "old").write_bytes(b"2")
    (delta / "d" / "sub" / "gone-dir-now-file").write_bytes(b"file now")
    os.chmod(delta / "d", 0o700)
    merge_tree(delta, staging)
    assert (staging / "d" / "old").read_bytes() == b"2"
    assert (staging / "d" / "sub" / "gone-dir-now-file").read_bytes() == b"file now"
    assert (staging / "d").stat().st_mode & 0o777 == 0o700


def test_a_delta_entry_the_first_pass_already_had_is_not_a_change(tmp_path: Path):
    """The delta's window opens on production's clock, which busybox reads in whole seconds: it
    takes files completed just before the copy began. Only entries that differ from what the
    first pass copied are changes during the copy; links in either tree are compared, not followed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(b"same\n")
    staging, delta = tmp_path / "staging", tmp_path / "delta"
    for tree in (staging, delta):
        (tree / "etc").mkdir(parents=True)
        (tree / "etc" / "same").write_bytes(b"unchanged\n")
        (tree / "etc" / "rewritten").write_bytes(b"old\n" if tree == staging else b"new\n")
        (tree / "etc" / "link").symlink_to("/etc/same")
        (tree / "etc" / "retargeted").symlink_to("/a" if tree == staging else "/b")
    (staging / "etc" / "touched").write_bytes(b"x")
    (delta / "etc" / "touched").write_bytes(b"x")
    (staging / "etc" / "new-in-delta-only").symlink_to(outside)  # a link in staging: not descended
    (delta / "etc" / "new-in-delta-only").mkdir()
    (delta / "etc" / "new-in-delta-only" / "f").write_bytes(b"same\n")
    for name in ("same", "rewritten", "touched"):
        os.utime(staging / "etc" / name, ns=(0, 1_000_000_000))
        os.utime(delta / "etc" / name, ns=(0, 1_000_000_000 if name != "touched" else 2_000_000_000))
    for name in ("link", "retargeted"):
        st = os.lstat(staging / "etc" / name)
        os.utime(delta / "etc" / name, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    assert identical_entries(delta, staging) == {"/etc/same", "/etc/link"}
