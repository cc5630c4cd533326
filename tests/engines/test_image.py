"""Fast tier for workers.engines.image: real mke2fs / qemu-img / debugfs."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from workers.engines import image
from workers.engines.events import RecordingEmitter
from workers.engines.image import (
    MiB, DiskFullError, ImageError, ToolMissingError, build_disk, build_ext4, estimate_tree_size,
    find_boot_files, image_size_for, resolve_in_root,
)

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) or os.path.exists(f"/usr/sbin/{t}") for t in ("mke2fs", "debugfs", "qemu-img")),
    reason="needs e2fsprogs and qemu-utils")


def _debugfs(img: Path, req: str) -> str:
    out = subprocess.run(["debugfs", "-R", req, str(img)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    root = tmp_path / "staging"
    (root / "etc").mkdir(parents=True)
    (root / "var" / "lib" / "app").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("prod-db-1\n")
    (root / "etc" / "file with spaces").write_text("x")
    (root / "etc" / "ünïcode").write_text("u")
    (root / "var" / "lib" / "app" / "data.bin").write_bytes(os.urandom(2 * MiB))
    os.link(root / "var" / "lib" / "app" / "data.bin", root / "var" / "lib" / "app" / "hardlink.bin")
    (root / "empty").write_bytes(b"")
    os.symlink("/etc/hostname", root / "abs-link")
    os.chmod(root / "etc" / "hostname", 0o640)
    return root


def test_estimate_counts_hardlinks_once_and_sparse_by_allocation(staging, tmp_path):
    before = estimate_tree_size(staging)
    with open(staging / "sparse", "wb") as f:
        f.truncate(1 << 30)  # 1 GiB hole, no blocks
    after = estimate_tree_size(staging)
    assert after.bytes - before.bytes < MiB
    assert after.files == before.files + 1
    assert 2 * MiB <= before.bytes < 3 * MiB, "the 2 MiB hard-linked file counts once"
    with pytest.raises(ImageError, match="does not exist"):
        estimate_tree_size(tmp_path / "nope")


def test_build_disk_yields_qcow2_with_the_files(staging, tmp_path):
    out = tmp_path / "out" / "clone.qcow2"
    em = RecordingEmitter()
    result = build_disk(staging, out, em, headroom=32 * MiB, label="clone-test")

    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(out)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == result.virtual_size >= 64 * MiB
    assert sorted(p.name for p in out.parent.iterdir()) == ["clone.qcow2"], "no temp files left"

    raw = tmp_path / "check.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(out), str(raw)], check=True)
    fsck = subprocess.run(["e2fsck", "-fn", str(raw)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert "clone-test" in _debugfs(raw, "stats")
    listing = _debugfs(raw, "ls -l /etc")
    # debugfs prints non-ASCII names as \xNN escapes
    for name in ("hostname", "file with spaces", "".join(f"\\x{b:02x}" if b > 127 else chr(b)
                                                         for b in "ünïcode".encode())):
        assert name in listing
    assert _debugfs(raw, "cat /etc/hostname") == "prod-db-1\n"
    assert "Mode:  0640" in _debugfs(raw, "stat /etc/hostname")
    assert "Links: 2" in _debugfs(raw, "stat /var/lib/app/data.bin")
    assert "/etc/hostname" in _debugfs(raw, "stat /abs-link")

    phases = [e.payload["name"] for e in em.of_kind("phase")]
    assert phases == ["image", "image.mkfs", "image.qcow2"]
    last = em.of_kind("progress")[-1].payload
    assert last["done"] == last["total"]
    assert em.of_kind("data")[0].payload["key"] == "disk_image"


def test_build_ext4_too_small_fails_cleanly(staging, tmp_path):
    img = tmp_path / "small.raw"
    with pytest.raises(ImageError, match="too small"):
        build_ext4(staging, img, size=1 * MiB)
    assert list(tmp_path.glob("small.raw*")) == []
    # passes the estimate check but mke2fs itself cannot fit the inode tables
    tree = estimate_tree_size(staging)
    with pytest.raises(ImageError, match="mke2fs failed"):
        build_ext4(staging, img, size=3 * MiB, tree=dataclasses.replace(tree, files=100_000))
    assert list(tmp_path.glob("small.raw*")) == []


def test_convert_failure_leaves_no_partial_files(staging, tmp_path, monkeypatch):
    # A qemu-img that writes half an output and then hits ENOSPC.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "qemu-img").write_text(
        '#!/bin/sh\nfor a; do last="$a"; done\nhead -c 4096 /dev/zero > "$last"\n'
        'echo "qemu-img: error while writing sector 2048: No space left on device" >&2\nexit 1\n')
    (fake / "qemu-img").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    out = tmp_path / "out" / "clone.qcow2"
    with pytest.raises(DiskFullError, match="No space left"):
        build_disk(staging, out, headroom=16 * MiB)
    assert list(out.parent.iterdir()) == []


def test_refuses_early_when_disk_is_too_full(staging, tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(image.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=5 * MiB))
    out = tmp_path / "out.qcow2"
    with pytest.raises(DiskFullError, match="only 5 MiB free"):
        build_disk(staging, out)
    assert not out.exists()


def test_missing_tool_error_names_the_package():
    with pytest.raises(ToolMissingError, match="apt-get install -y some-pkg"):
        image._require("understudy-no-such-tool", "some-pkg")


def test_image_size_has_headroom_and_minimum(staging):
    tree = estimate_tree_size(staging)
    assert image_size_for(tree, headroom=0) == 64 * MiB
    big = image_size_for(dataclasses.replace(tree, bytes=1 << 30), headroom=512 * MiB)
    assert big >= (1 << 30) + 512 * MiB and big % MiB == 0


def test_find_boot_files_stays_inside_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "vmlinuz-6.1.0-9-amd64").write_bytes(b"k")
    (root / "boot" / "initrd.img-6.1.0-9-amd64").write_bytes(b"i")
    # Debian puts absolute symlinks in /: they must resolve inside the tree
    os.symlink("/boot/vmlinuz-6.1.0-9-amd64", root / "vmlinuz")
    os.symlink("boot/initrd.img-6.1.0-9-amd64", root / "initrd.img")
    bf = find_boot_files(root)
    assert bf.kernel == root / "boot" / "vmlinuz-6.1.0-9-amd64"
    assert bf.initrd == root / "boot" / "initrd.img-6.1.0-9-amd64"

    os.symlink("/etc/passwd", root / "escape")
    assert resolve_in_root(root, "escape") == root / "etc" / "passwd"
    os.symlink("../../../../etc", root / "dots")
    assert resolve_in_root(root, "dots/passwd") == root / "etc" / "passwd"

    (root / "vmlinuz").unlink()
    (root / "initrd.img").unlink()
    assert find_boot_files(root).kernel.name == "vmlinuz-6.1.0-9-amd64"  # newest versioned
    for p in (root / "boot").iterdir():
        p.unlink()
    with pytest.raises(ImageError, match="no kernel found"):
        find_boot_files(root)
