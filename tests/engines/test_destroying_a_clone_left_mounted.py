"""A worker that dies while a clone's image is loop-mounted at its staging directory leaves the mount and the
loop device behind; destroying that clone (the retry's cleanup, the hypervisor scan's leftovers) releases them
before it removes the directory, instead of failing on a busy mount point."""
import subprocess
from pathlib import Path

import pytest

from workers.engines.clone import CLONE_MARKER, destroy_clone
from workers.engines.image import MiB, MountedImage, loop_mount_unavailable


def test_a_clone_whose_image_is_still_mounted_is_destroyed_completely(tmp_path):
    if why := loop_mount_unavailable():
        pytest.skip(f"the mounted-image path cannot run here: {why}")
    storage = tmp_path / "hv"
    clone_dir = storage / "understudy-dead-worker"
    staging = clone_dir / "staging"
    staging.mkdir(parents=True, mode=0o700)
    (clone_dir / CLONE_MARKER).write_text("understudy-dead-worker\n")
    image = MountedImage.create(clone_dir / "disk.raw", staging, size=64 * MiB, files=100)
    (staging / "etc").mkdir()
    (staging / "etc" / "hostname").write_text("db01\n")
    # the worker dies here: nothing unmounts

    removed = destroy_clone("test:///default", "understudy-dead-worker", storage_dir=storage)

    assert f"mount {staging}" in removed and str(clone_dir) in removed, removed
    assert not clone_dir.exists()
    mounts = Path("/proc/self/mounts").read_text()
    assert f" {storage}/" not in mounts
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert f"({storage}/" not in loops, loops
    image.mounted = False  # released by destroy_clone; nothing for the fixture's cleanup to do
