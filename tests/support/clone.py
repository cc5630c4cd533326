"""Shared helpers for the clone-engine tests (no tests here): endpoints, keys, a held-open
test:///default connection, and the "nothing left behind" check."""
from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from workers.engines.hypervisor import Hypervisor
from workers.engines.endpoint import Endpoint

TEST_URI = "test:///default"


def endpoint(host: Any, **overrides: Any) -> Endpoint:
    kw = dict(host=host.address, port=host.port, user=host.user, key_path=str(host.client_key_path),
              host_key=host.host_public_key, label=f"production {host.hostname}")
    kw.update(overrides)
    return Endpoint(**kw)


def make_bootable(host: Any) -> Any:
    """Put a Debian kernel + initramfs into a running host's /boot (its rootfs is a plain dir)."""
    from testbed.boot import install_boot

    install_boot(host.rootfs)
    return host


@pytest.fixture
def hv_test() -> Iterator[Hypervisor]:
    """libvirt's test driver forgets every domain when its last connection closes: hold one
    open for the whole test so what clone_host defined can be inspected."""
    with Hypervisor(TEST_URI) as hv:
        yield hv
        for d in hv.list_clones():
            if d.name.startswith("us-t-"):
                hv.destroy(d.name)


@pytest.fixture
def worker_key(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "worker_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "worker", "-f", str(key)], check=True)
    return key, " ".join(key.with_suffix(".pub").read_text().split()[:2])


def assert_nothing_left(hv: Hypervisor, storage: Path, name: str) -> None:
    assert name not in [d.name for d in hv.list_clones()], f"domain {name} left behind"
    assert hv._lookup(name) is None
    # a loop-mounted image: unmounted and its loop device detached, whatever failed
    mounts = Path("/proc/self/mounts").read_text().split("\n")
    assert not [m for m in mounts if f" {storage}/" in m], f"still mounted under {storage}"
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert f"({storage}/" not in loops, f"loop device left attached: {loops}"
    leftovers = sorted(str(p) for p in storage.rglob("*")) if storage.exists() else []
    assert leftovers == [], f"left behind in {storage}: {leftovers[:10]}"


@contextlib.contextmanager
def tree_parent(kind: str, tmp_path: Path) -> Iterator[Path]:
    """Where a test builds the clone's tree: ``tmp_path`` itself ("directory", the staging
    fallback), or the root of a loop-mounted ext4 image ("mounted image", as clone_host does
    when it can mount), unmounted and removed afterwards."""
    from workers.engines.image import MountedImage

    if kind == "directory":
        yield tmp_path
        return
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    image = MountedImage.create(tmp_path / "disk.raw", mnt, size=64 << 20, files=1000)
    try:
        yield mnt
    finally:
        assert image.discard() == []
        assert not (tmp_path / "disk.raw").exists() and image.loop_devices() == []


TREE_KINDS = ["directory", "mounted image"]
