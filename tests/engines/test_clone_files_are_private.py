"""The clone's files hold production's files, keys and setuid binaries: the clone dir and staging
are 0700, the disk images and the kernel/initrd copies 0600, whatever the umask (qemu runs as
root on the hypervisor, see docs/clone.md)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from workers.engines import clone
from workers.engines.clone import CloneOptions, SourceFacts
from workers.engines.endpoint import Endpoint
from workers.engines.events import RecordingEmitter
from workers.engines.image import build_disk, build_ext4

@pytest.fixture(autouse=True)
def permissive_umask():
    old = os.umask(0)   # the worst case: nothing masked
    yield
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def _staging(tmp_path: Path) -> Path:
    root = tmp_path / "staging"
    (root / "etc").mkdir(parents=True)
    (root / "etc/shadow").write_text("root:$6$hash:::\n")
    (root / "boot").mkdir()
    (root / "boot/vmlinuz-6.1.0-9-amd64").write_bytes(b"kernel")
    (root / "boot/initrd.img-6.1.0-9-amd64").write_bytes(b"initrd")
    return root


@pytest.mark.parametrize("image_build", ["auto", "staging"])
def test_clone_dir_and_staging_are_private(tmp_path, image_build):
    source = Endpoint("192.0.2.1", 22, "root", None, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtest", label="prod")
    run = clone._CloneRun(source, "test:///default", tmp_path / "storage", CloneOptions(name="us-t-private",
                          hostname="h", image_build=image_build), RecordingEmitter(), None)
    facts = SourceFacts(tar_version="tar (GNU tar) 1.34", xattrs=True, acls=True, selinux=False, bytes=1 << 20,
                        files=10, clock=None, swap_files=[], boot_separate=False, other_mounts=[])
    run.reserve_space(facts)
    try:
        assert _mode(run.clone_dir) == 0o700
        assert _mode(run.staging) == 0o700
        if image_build == "auto":   # root here: the image is mounted at staging, and private too
            assert run.mounted is not None and os.path.ismount(run.staging)
            assert _mode(run.mounted.raw) == 0o600
    finally:
        run.fail(RuntimeError("end of test"))
    assert not run.clone_dir.exists()


def test_disk_images_are_private(tmp_path):
    staging = _staging(tmp_path)
    raw = build_ext4(staging, tmp_path / "out" / "disk.raw", headroom=0)
    assert raw and _mode(tmp_path / "out" / "disk.raw") == 0o600
    image = build_disk(staging, tmp_path / "out" / "disk.qcow2", RecordingEmitter(), headroom=0)
    assert _mode(image.path) == 0o600


def test_kernel_and_initrd_copies_are_private(tmp_path):
    staging = _staging(tmp_path)
    for name in ("vmlinuz-6.1.0-9-amd64", "initrd.img-6.1.0-9-amd64"):
        clone._copy_sparse(staging, staging / "boot" / name, tmp_path / name)
        assert _mode(tmp_path / name) == 0o600
        assert (tmp_path / name).read_bytes() == (staging / "boot" / name).read_bytes()
