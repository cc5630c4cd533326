"""Slow tier: boot a real clone VM under TCG on qemu:///system.

Builds the busybox/sshd test-host rootfs (testbed.rootfs, which calls
testbed.boot.install_boot), makes a qcow2 with workers.engines.image,
boots it with workers.engines.hypervisor, logs in over the 127.0.0.1 SSH
forward with a key placed in the rootfs, proves from inside the guest that the
host (10.0.2.2, where a listener waits) is unreachable (restrict=on), then
destroys it and checks nothing is left behind.

Needs root, libvirt-daemon(-driver-qemu), qemu-system-x86, qemu-utils,
busybox-static, kmod, openssh-server/-client, and apt access for the kernel
(or UNDERSTUDY_KERNEL_DEB). Timings are printed (pytest -s) and recorded as
junit properties.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from workers.engines.events import RecordingEmitter
from workers.engines.hypervisor import (
    CloneDomainSpec,
    DomainStartError,
    Hypervisor,
    detect_accel,
    free_port,
    wait_for_serial,
)
from workers.engines.image import build_disk, find_boot_files

URI = "qemu:///system"

pytestmark = [
    pytest.mark.timeout(900),
]


def _report(record_property, key: str, value: float) -> None:
    record_property(key, round(value, 2))
    print(f"\n[timing] {key}: {value:.2f}s", flush=True)


@pytest.fixture(scope="module")
def vm_rootfs(tmp_path_factory) -> tuple[Path, Path, float]:
    from testbed import boot
    from testbed.rootfs import build_rootfs

    work = tmp_path_factory.mktemp("vmroot")
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    t = time.monotonic()
    root = build_rootfs(work / "root", hostname="clone-under-test", with_boot=True)
    secs = time.monotonic() - t
    ssh_dir = root / "root" / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    print(f"\n[boot] {boot.LAST_INSTALL}")
    return root, key, secs


def _clone(tmp_path: Path, root: Path, **spec_kw) -> tuple[CloneDomainSpec, float]:
    """Stage kernel/initrd and disk as the clone engine does (the staging dir
    is gone by the time the VM runs)."""
    store = tmp_path / "store"
    store.mkdir()
    bf = find_boot_files(root)
    shutil.copyfile(bf.kernel, store / "vmlinuz")
    assert bf.initrd is not None
    shutil.copyfile(bf.initrd, store / "initrd.img")
    t = time.monotonic()
    disk = build_disk(root, store / "disk.qcow2", RecordingEmitter(), headroom=64 << 20)
    build_s = time.monotonic() - t
    print(f"\n[image] {disk.tree.bytes / 2**20:.1f} MiB tree -> {disk.virtual_size >> 20} MiB ext4, "
          f"{disk.qcow2_bytes / 2**20:.1f} MiB qcow2 in {build_s:.2f}s")
    spec = CloneDomainSpec(
        name=f"us-slow-{uuid.uuid4().hex[:8]}", disk_path=disk.path, kernel_path=store / "vmlinuz",
        initrd_path=store / "initrd.img", ssh_port=free_port(), serial_log=store / "serial.log",
        memory_mib=512, vcpus=1,
        domain_type=detect_accel(os.environ.get("UNDERSTUDY_TEST_ACCEL", "tcg")),
        rehearsal_id="slow-test", clone_id="boot-vm", **spec_kw)
    return spec, build_s


class _Listener:
    """A TCP service on the worker's loopback the guest must NOT reach."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[tuple] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(peer)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._t.join()
        self.sock.close()


def _ssh(key: Path, port: int, known_hosts: Path, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known_hosts}",
         "-o", "ConnectTimeout=20", "root@127.0.0.1", script],
        capture_output=True, text=True, timeout=120)


def test_clone_boots_and_is_reachable_only_through_the_ssh_forward(
        tmp_path, libvirt_up, vm_rootfs, record_property):
    root, key, rootfs_s = vm_rootfs
    _report(record_property, "libvirt_up", libvirt_up)
    _report(record_property, "rootfs_with_boot", rootfs_s)
    spec, build_s = _clone(tmp_path, root)
    _report(record_property, "image_build", build_s)
    listener = _Listener()
    emitter = RecordingEmitter()
    hv = Hypervisor(URI, emitter)
    try:
        t = time.monotonic()
        info = hv.define_and_start(spec)
        assert info.active and info.ssh_port == spec.ssh_port
        assert spec.name in [c.name for c in hv.list_clones("slow-test")]
        banner, _ = hv.wait_until_ssh(info, timeout=300)
        _report(record_property, "boot_to_ssh", time.monotonic() - t)
        assert banner.startswith("SSH-2.0-OpenSSH")
        assert "understudy-initramfs: mounted /dev/vda" in spec.serial_log.read_text(errors="replace")

        probes = {"host-listener": f"10.0.2.2 {listener.port}", "host-ssh-forward": f"10.0.2.2 {spec.ssh_port}",
                  "slirp-dns": "10.0.2.3 53", "internet": "1.1.1.1 443"}
        script = "cat /etc/hostname; uname -r; " + "".join(
            f"if nc -w 3 {addr} </dev/null >/dev/null 2>&1; then echo 'REACHED {name}'; "
            f"else echo 'blocked {name}'; fi; " for name, addr in probes.items())
        t = time.monotonic()
        out = _ssh(key, spec.ssh_port, tmp_path / "known_hosts", script)
        _report(record_property, "ssh_session", time.monotonic() - t)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "clone-under-test"
        assert lines[1].endswith("-amd64")
        for name in probes:
            assert f"blocked {name}" in lines, out.stdout
        assert listener.accepted == [], "the guest reached a service on the worker"
    finally:
        listener.close()
        hv.destroy(spec.name, remove_disk=True)
        virsh = subprocess.run(["virsh", "-c", URI, "list", "--all", "--name"], capture_output=True, text=True)
        hv.close()
    assert spec.name not in virsh.stdout.split()
    assert not spec.disk_path.exists()


def test_unbootable_clone_fails_fast_with_the_console_tail(tmp_path, libvirt_up, vm_rootfs):
    root, _key, _ = vm_rootfs
    # no /dev/vdb: the initramfs reports FATAL and powers the guest off
    spec, _ = _clone(tmp_path, root, cmdline="root=/dev/vdb rw console=ttyS0")
    with Hypervisor(URI) as hv:
        try:
            info = hv.define_and_start(spec)
            t = time.monotonic()
            with pytest.raises(DomainStartError, match="FATAL: root device /dev/vdb did not appear"):
                hv.wait_until_ssh(info, timeout=300)
            assert time.monotonic() - t < 120
            assert not hv.is_active(spec.name)
            wait_for_serial(spec.serial_log, "FATAL", 1)
        finally:
            hv.destroy(spec.name, remove_disk=True, remove_serial_log=True)
        assert spec.name not in [c.name for c in hv.list_clones()]
    assert not spec.disk_path.exists() and not spec.serial_log.exists()


def test_taken_ssh_port_is_a_typed_error_and_can_be_retried(tmp_path, libvirt_up, vm_rootfs):
    from workers.engines.hypervisor import PortInUseError

    root, _key, _ = vm_rootfs
    spec, _ = _clone(tmp_path, root)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", spec.ssh_port))
    squatter.listen()
    with Hypervisor(URI) as hv:
        try:
            with pytest.raises(PortInUseError, match=f"port {spec.ssh_port} .* already in use"):
                hv.define_and_start(spec)
            assert spec.name not in [c.name for c in hv.list_clones()], "failed start left a domain"
            info = hv.define_and_start(spec, port_retries=2)
            assert info.active and info.ssh_port != spec.ssh_port
        finally:
            squatter.close()
            hv.destroy(spec.name, remove_disk=True, remove_serial_log=True)
    assert not spec.disk_path.exists()
