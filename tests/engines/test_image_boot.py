"""Fast checks of testbed.boot's initramfs builder on a synthetic
kernel tree (the real Debian kernel is exercised in tests/slow/test_boot_vm.py)."""
from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import pytest

from testbed import boot

pytestmark = pytest.mark.skipif(not any(os.path.exists(p) for p in boot.BUSYBOX_CANDIDATES),
                                reason="needs busybox-static")


def _fake_kernel_tree(tmp_path: Path) -> Path:
    ver = "6.1.0-99-amd64"
    mods = tmp_path / "k" / "modules" / "lib" / "modules" / ver
    dep = {
        "kernel/drivers/virtio/virtio.ko": [],
        "kernel/drivers/virtio/virtio_ring.ko": [],
        "kernel/drivers/virtio/virtio_pci.ko": ["kernel/drivers/virtio/virtio.ko",
                                                 "kernel/drivers/virtio/virtio_ring.ko"],
        "kernel/drivers/block/virtio_blk.ko": ["kernel/drivers/virtio/virtio.ko"],
        "kernel/drivers/net/virtio_net.ko": ["kernel/net/core/failover.ko", "kernel/drivers/virtio/virtio.ko"],
        "kernel/net/core/failover.ko": [],
        "kernel/crypto/crc32c_generic.ko": [],
        "kernel/fs/jbd2/jbd2.ko": [],
        "kernel/fs/ext4/ext4.ko": ["kernel/fs/jbd2/jbd2.ko"],
        "kernel/sound/unrelated.ko": [],
    }
    for rel in dep:
        (mods / rel).parent.mkdir(parents=True, exist_ok=True)
        (mods / rel).write_bytes(b"\x7fELF fake " + rel.encode())
    (mods / "modules.dep").write_text("".join(f"{k}: {' '.join(v)}\n" for k, v in dep.items()))
    kdir = tmp_path / "k"
    order = boot._module_order(mods, boot.INITRAMFS_MODULES)
    (kdir / "version").write_text(ver + "\n")
    (kdir / "load-order").write_text("\n".join(order) + "\n")
    return kdir


def test_module_order_puts_dependencies_first(tmp_path):
    kdir = _fake_kernel_tree(tmp_path)
    order = (kdir / "load-order").read_text().split()
    assert "kernel/sound/unrelated.ko" not in order
    assert len(order) == len(set(order)) == 9
    for mod, dep in [("virtio_pci", "virtio_ring"), ("virtio_net", "failover"), ("ext4", "jbd2"),
                     ("virtio_blk", "virtio")]:
        assert order.index(next(p for p in order if p.endswith(f"/{dep}.ko"))) < \
            order.index(next(p for p in order if p.endswith(f"/{mod}.ko")))


def test_missing_module_is_a_clear_error(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "modules.dep").write_text("kernel/fs/ext4/ext4.ko:\n")
    with pytest.raises(boot.BootError, match="virtio_pci is neither a module nor built in"):
        boot._module_order(d, ("virtio_pci", "ext4"))
    (d / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n")
    assert boot._module_order(d, ("virtio_pci", "ext4")) == ["kernel/fs/ext4/ext4.ko"]


def test_initramfs_is_a_valid_newc_archive(tmp_path):
    kdir = _fake_kernel_tree(tmp_path)
    out = tmp_path / "initrd.img"
    boot._build_initramfs(kdir, out)
    listing = subprocess.run(["cpio", "-itv"], input=gzip.decompress(out.read_bytes()),
                             capture_output=True, check=True).stdout.decode()
    names = {line.split()[-1] if "->" not in line else line.split()[-3] for line in listing.splitlines()}
    for want in ("init", "bin/busybox", "bin/sh", "bin/switch_root", "bin/insmod", "dev/console",
                 "etc/initramfs-modules", "lib/modules/kernel/fs/ext4/ext4.ko"):
        assert want in names, listing
    console = next(line for line in listing.splitlines() if line.endswith("dev/console"))
    assert console.startswith("crw") and "5," in console
    extract = tmp_path / "x"
    extract.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=gzip.decompress(out.read_bytes()), cwd=extract, check=True)
    init = (extract / "init").read_text()
    assert "switch_root /newroot" in init and os.access(extract / "init", os.X_OK)
    assert (extract / "etc" / "initramfs-modules").read_text().split() == \
        (kdir / "load-order").read_text().split()
    # the shell script must at least parse
    subprocess.run([str(extract / "bin" / "busybox"), "sh", "-n", str(extract / "init")], check=True)
