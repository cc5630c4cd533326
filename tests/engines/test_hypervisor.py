"""Fast tier for workers.engines.hypervisor: libvirt's in-process test:///default
driver (no daemon), plus XML rendering for the qemu driver."""
from __future__ import annotations

import socket
import threading
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from workers.engines import hypervisor as hv_mod
from workers.engines.events import RecordingEmitter
from workers.engines.hypervisor import (
    METADATA_NS, QEMU_NS, CapacityError, CloneDomainSpec, DomainExistsError, DomainNotFoundError,
    Hypervisor, LibvirtUnavailableError, ReadinessTimeout, SpecError, detect_accel, free_port,
    read_ssh_banner, render_domain_xml, wait_for_serial, wait_for_ssh_banner, wait_for_tcp,
)


def _spec(tmp_path: Path, **kw) -> CloneDomainSpec:
    name = kw.pop("name", f"us-t-{uuid.uuid4().hex[:8]}")
    base = dict(name=name, disk_path=tmp_path / f"{name}.qcow2", kernel_path=tmp_path / "vmlinuz",
                initrd_path=tmp_path / "initrd.img", ssh_port=2222, serial_log=tmp_path / f"{name}.log",
                memory_mib=256, rehearsal_id="reh-1", clone_id="clone-1")
    base.update(kw)
    return CloneDomainSpec(**base)


@pytest.fixture
def hv():
    emitter = RecordingEmitter()
    with Hypervisor("test:///default", emitter) as h:
        yield h
        # test:///default is shared within the process: leave no clones behind
        h.cleanup_leftovers(remove_disks=False)


def test_qemu_xml_has_only_restricted_usernet_with_ssh_forward(tmp_path):
    xml = render_domain_xml(_spec(tmp_path, ssh_port=40222, domain_type="qemu"), user_net=True)
    root = ET.fromstring(xml)
    assert root.get("type") == "qemu"
    assert root.find("devices/interface") is None, "no libvirt-managed NIC may exist"
    args = [a.get("value") for a in root.iter(f"{{{QEMU_NS}}}arg")]
    netdevs = [args[i + 1] for i, a in enumerate(args) if a == "-netdev"]
    assert netdevs == ["user,id=usnet0,restrict=on,hostfwd=tcp:127.0.0.1:40222-:22"]
    devices = [args[i + 1] for i, a in enumerate(args) if a == "-device"]
    assert len(devices) == 1 and devices[0].startswith("virtio-net-pci,netdev=usnet0")
    assert root.findtext("os/cmdline") == "root=/dev/vda rw console=ttyS0"
    assert root.find("devices/serial").get("type") == "file"
    meta = root.find(f"metadata/{{{METADATA_NS}}}clone")
    assert meta.findtext(f"{{{METADATA_NS}}}rehearsal") == "reh-1"
    assert meta.find(f"{{{METADATA_NS}}}ssh").get("port") == "40222"


def test_kvm_xml_uses_host_passthrough(tmp_path):
    root = ET.fromstring(render_domain_xml(_spec(tmp_path, domain_type="kvm")))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"


def test_test_driver_xml_has_no_qemu_namespace(hv, tmp_path):
    xml = hv.domain_xml(_spec(tmp_path))
    assert QEMU_NS not in xml
    ET.fromstring(xml)


@pytest.mark.parametrize("kw, msg", [
    ({"name": "bad name"}, "bad domain name"),
    ({"ssh_host": "0.0.0.0"}, "loopback"),
    ({"disk_path": Path("relative.qcow2")}, "absolute"),
    ({"disk_path": Path("/tmp/a,b.qcow2")}, "comma"),
    ({"domain_type": "xen"}, "domain_type"),
    ({"memory_mib": 16}, "too small"),
])
def test_spec_validation(tmp_path, kw, msg):
    with pytest.raises(SpecError, match=msg):
        render_domain_xml(_spec(tmp_path, **kw))


def test_define_start_list_destroy_cycle(hv, tmp_path):
    spec = _spec(tmp_path)
    info = hv.define_and_start(spec)
    assert info.active and info.state == "running"
    assert (info.rehearsal_id, info.clone_id, info.ssh_port) == ("reh-1", "clone-1", 2222)
    assert info.disk_path == spec.disk_path

    names = [c.name for c in hv.list_clones()]
    assert spec.name in names
    assert "test" not in names, "the driver's own domain has no understudy metadata"

    with pytest.raises(DomainExistsError, match=spec.name):
        hv.define_and_start(spec)

    assert hv.destroy(spec.name) is True
    assert spec.name not in [d.name() for d in hv.conn.listAllDomains()]
    assert hv.destroy(spec.name) is False  # idempotent
    with pytest.raises(DomainNotFoundError):
        hv.destroy(spec.name, missing_ok=False)
    assert any("destroyed and undefined" in line for line in hv.emitter.lines("info"))


def test_destroy_removes_snapshot_metadata_and_disk_only_when_asked(hv, tmp_path):
    keep, drop = _spec(tmp_path), _spec(tmp_path)
    for s in (keep, drop):
        s.disk_path.write_bytes(b"disk")
        s.serial_log.write_text("log")
        hv.define_and_start(s)
    # snapshot metadata makes a plain undefine() fail: destroy must cope
    hv.conn.lookupByName(drop.name).snapshotCreateXML("<domainsnapshot><name>s1</name></domainsnapshot>")
    hv.destroy(keep.name)
    hv.destroy(drop.name, remove_disk=True, remove_serial_log=True)
    assert keep.disk_path.exists() and keep.serial_log.exists()
    assert not drop.disk_path.exists() and not drop.serial_log.exists()


def test_list_clones_filters_and_cleanup_removes_leftovers(hv, tmp_path):
    a = _spec(tmp_path, rehearsal_id="reh-A")
    b = _spec(tmp_path, rehearsal_id="reh-B")
    for s in (a, b):
        s.disk_path.write_bytes(b"x")
        hv.define_and_start(s)
    # a stopped-but-defined leftover is a leftover too
    hv.conn.lookupByName(b.name).destroy()
    assert [c.name for c in hv.list_clones("reh-A")] == [a.name]
    leftover = hv.list_clones("reh-B")[0]
    assert not leftover.active and leftover.state == "shutoff"

    assert hv.cleanup_leftovers("reh-B") == [b.name]
    assert not b.disk_path.exists() and a.disk_path.exists()
    assert hv.cleanup_leftovers() == [a.name]
    assert hv.list_clones() == []
    assert "test" in [d.name() for d in hv.conn.listAllDomains()], "foreign domains untouched"


def test_capacity_check(tmp_path):
    free = Hypervisor.capacity(tmp_path)
    assert free > 0
    assert Hypervisor.check_capacity(tmp_path, 1024, reserve_bytes=0) == free
    with pytest.raises(CapacityError, match=rf"not enough space in {tmp_path}: need .* only .* free"):
        Hypervisor.check_capacity(tmp_path, free + (1 << 30))
    with pytest.raises(CapacityError, match="does not exist"):
        Hypervisor.capacity(tmp_path / "missing")


def test_memory_check(hv):
    with pytest.raises(CapacityError, match="not enough host memory"):
        hv.check_memory(1 << 40)


def test_unreachable_libvirt_has_clear_error(tmp_path):
    uri = f"qemu+unix:///system?socket={tmp_path}/no-such-sock"
    with pytest.raises(LibvirtUnavailableError, match="libvirt-up.sh"):
        Hypervisor(uri)


def test_detect_accel_force_env_and_probe(monkeypatch):
    assert detect_accel("tcg") == "qemu"
    assert detect_accel("KVM") == "kvm"
    with pytest.raises(SpecError):
        detect_accel("hvf")
    monkeypatch.setenv("UNDERSTUDY_FORCE_TCG", "1")
    assert detect_accel() == "qemu"
    monkeypatch.delenv("UNDERSTUDY_FORCE_TCG")
    # real probe (runs qemu briefly when installed; cached afterwards): its verdict decides
    kind, reason = hv_mod._detect_accel_cached()
    assert detect_accel() == kind
    assert (kind == "kvm") == (reason == "SeaBIOS completed under KVM"), reason
    assert hv_mod.accel_reason() == reason


def test_detect_accel_follows_the_kvm_probe(monkeypatch):
    monkeypatch.delenv("UNDERSTUDY_FORCE_TCG", raising=False)
    for works, expected in ((True, "kvm"), (False, "qemu")):
        hv_mod._detect_accel_cached.cache_clear()
        monkeypatch.setattr(hv_mod, "probe_kvm", lambda works=works: (works, f"probe says {works}"))
        assert detect_accel() == expected
        assert hv_mod.accel_reason() == f"probe says {works}"
    hv_mod._detect_accel_cached.cache_clear()  # later tests probe for real again


def _serve(banner: bytes | None):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    stop = threading.Event()

    def loop():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            if banner:
                c.sendall(banner)
                c.close()
            else:
                threading.Timer(5, c.close).start()  # silent, like slirp before the guest is up

    threading.Thread(target=loop, daemon=True).start()
    return srv, stop


def test_readiness_helpers(tmp_path):
    srv, stop = _serve(b"SSH-2.0-OpenSSH_test\r\n")
    silent, stop2 = _serve(None)
    try:
        port = srv.getsockname()[1]
        assert wait_for_tcp("127.0.0.1", port, 5) < 5
        assert read_ssh_banner("127.0.0.1", port) == "SSH-2.0-OpenSSH_test"
        banner, secs = wait_for_ssh_banner("127.0.0.1", port, 5)
        assert banner.startswith("SSH-2.0") and secs < 5
        with pytest.raises(ReadinessTimeout, match="no SSH banner"):
            wait_for_ssh_banner("127.0.0.1", silent.getsockname()[1], 1.0)
    finally:
        stop.set(), stop2.set()
        srv.close(), silent.close()
    chatty, stop3 = _serve(b"pre-banner notice\r\nSSH-2.0-Chatty_1\r\n")
    try:
        assert read_ssh_banner("127.0.0.1", chatty.getsockname()[1]) == "SSH-2.0-Chatty_1"
    finally:
        stop3.set()
        chatty.close()
    with pytest.raises(ReadinessTimeout, match="did not accept TCP"):
        wait_for_tcp("127.0.0.1", free_port(), 0.5)

    log = tmp_path / "serial.log"
    log.write_text("[    1.0] booting\nunderstudy: boot complete\n")
    assert wait_for_serial(log, r"boot complete", 1) < 1
    with pytest.raises(ReadinessTimeout, match="booting"):
        wait_for_serial(log, r"never", 0.3)


def test_free_port_is_bindable():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        assert s.getsockname() == ("127.0.0.1", port)


def test_libvirt_error_handler_is_silenced(capfd):
    with pytest.raises(libvirt.libvirtError):
        libvirt.open("test:///default").lookupByName("nope")
    assert "nope" not in capfd.readouterr().err
