"""libvirt wrapper for rehearsal clones.

A clone is a libvirt domain booted straight from a kernel + initrd (taken from
the clone's own /boot) with one qcow2 virtio disk. Its only network is qemu
user-mode networking with ``restrict=on``: the guest cannot open connections to
anything (no route to production, not even to the host), and the single way in
is an SSH port forward bound to 127.0.0.1 on the worker.

Every clone domain carries an ``<understudy:clone>`` metadata element
(rehearsal id, clone id, disk, ssh port) so that leftovers from crashed workers
can be found and removed with ``list_clones`` / ``destroy``.

Plain Python on purpose (no Django/Celery): engines report through an Emitter.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from xml.sax.saxutils import escape, quoteattr

import libvirt

from .events import Emitter, NullEmitter

METADATA_NS = "https://understudy.invalid/xmlns/clone/1"
METADATA_PREFIX = "understudy"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"

ACCELS = ("kvm", "qemu")
# qemu parses custom -device args before libvirt's own devices, so an
# unaddressed NIC would grab slot 2 that libvirt assigned to the disk. Pin it
# far above the handful of slots libvirt uses for a clone.
NIC_PCI_SLOT = "0x1e"
DOMAIN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Characters that would break qemu's comma-separated -netdev option syntax.
_UNSAFE_ARG = re.compile(r"[,\s]")

# libvirt prints every error to stderr by default even when we catch it;
# our typed exceptions already carry the message.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


# --------------------------------------------------------------------------- errors

class HypervisorError(Exception):
    """Base class for everything this module raises."""


class LibvirtUnavailableError(HypervisorError):
    pass


class SpecError(HypervisorError, ValueError):
    pass


class CapacityError(HypervisorError):
    pass


class DomainExistsError(HypervisorError):
    pass


class DomainNotFoundError(HypervisorError):
    pass


class DomainStartError(HypervisorError):
    pass


class PortInUseError(DomainStartError):
    """qemu could not bind the SSH forward: another process took the port."""


class DestroyError(HypervisorError):
    pass


class ReadinessTimeout(HypervisorError):
    pass


# --------------------------------------------------------------------------- accel

def _cpu_has_virt_flag(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    return bool(re.search(r"^flags\s*:.*\b(vmx|svm)\b", text, re.M))


def probe_kvm(timeout: float = 10.0, qemu: str = "qemu-system-x86_64") -> tuple[bool, str]:
    """Really try KVM: boot SeaBIOS under ``-accel kvm -cpu host`` (the CPU model
    ``domain_xml`` uses for kvm domains) and wait for it to reach the end of
    its boot sequence on the debug console.

    /dev/kvm alone proves nothing: on some VMs it exists and answers but qemu
    aborts in kvm_buf_set_msrs or hangs. Returns (works, reason).
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm missing or not accessible"
    if shutil.which(qemu) is None:
        return False, f"{qemu} not installed"
    cmd = [qemu, "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-m", "64",
           "-nodefaults", "-display", "none", "-no-reboot",
           "-chardev", "stdio,id=dbg", "-device", "isa-debugcon,iobase=0x402,chardev=dbg"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = proc.stdout.read()
            if chunk:
                out += chunk
            # SeaBIOS got through POST with vCPUs really executing under KVM.
            if b"No bootable device" in out:
                if not _cpu_has_virt_flag():
                    # Seen on nested setups: firmware runs, Linux guests then hang.
                    return False, "qemu ran under KVM but the CPU shows no vmx/svm flag"
                return True, "SeaBIOS completed under KVM"
            if proc.poll() is not None:
                tail = out.decode(errors="replace").strip().splitlines()[-2:]
                return False, f"qemu exited with {proc.returncode} under KVM: {' | '.join(tail)}"
            time.sleep(0.05)
        return False, f"qemu under KVM made no progress in {timeout:.0f}s (hang)"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


@functools.lru_cache(maxsize=None)
def _detect_accel_cached() -> tuple[str, str]:
    works, reason = probe_kvm()
    return ("kvm" if works else "qemu"), reason


def detect_accel(force: str | None = None) -> str:
    """Return the libvirt domain type to use: "kvm" or "qemu" (TCG).

    ``force`` ("kvm", "qemu" or "tcg") wins, then ``UNDERSTUDY_FORCE_TCG=1``,
    then a real probe (cached for the life of the process).
    """
    if force is not None:
        f = force.lower()
        if f == "tcg":
            f = "qemu"
        if f not in ACCELS:
            raise SpecError(f"unknown accelerator {force!r}; use 'kvm', 'qemu' or 'tcg'")
        return f
    if os.environ.get("UNDERSTUDY_FORCE_TCG", "").strip() not in ("", "0"):
        return "qemu"
    return _detect_accel_cached()[0]


def accel_reason() -> str:
    """Why the probe chose what it chose (for logs)."""
    return _detect_accel_cached()[1]


# --------------------------------------------------------------------------- helpers

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host``. There is a race until qemu binds
    it; ``define_and_start`` reports a clear error if somebody took it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_tcp(host: str, port: int, timeout: float, interval: float = 0.2) -> float:
    """Wait until a TCP connect succeeds; return seconds waited.

    Note: for a user-mode ``hostfwd`` qemu accepts on the host side before the
    guest listens, so this only proves qemu is up; use ``wait_for_ssh_banner``
    for guest readiness.
    """
    start = time.monotonic()
    last: OSError | None = None
    while time.monotonic() - start < timeout:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, timeout)):
                return time.monotonic() - start
        except OSError as e:
            last = e
            time.sleep(interval)
    raise ReadinessTimeout(f"{host}:{port} did not accept TCP within {timeout:.0f}s (last error: {last})")


def read_ssh_banner(host: str, port: int, timeout: float = 3.0) -> str | None:
    """Return the server's ``SSH-2.0-...`` line, or None if none came."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            buf = b""
            # RFC 4253 allows other lines before the identification string
            while not re.search(rb"(^|\n)SSH-[^\n]*\n", buf) and len(buf) < 4096:
                chunk = s.recv(256)
                if not chunk:
                    break
                buf += chunk
    except OSError:
        return None
    for line in buf.split(b"\n"):
        if line.startswith(b"SSH-"):
            return line.strip().decode(errors="replace")
    return None


def wait_for_ssh_banner(host: str, port: int, timeout: float, interval: float = 0.25,
                        alive: Callable[[], bool] | None = None) -> tuple[str, float]:
    """Wait until an SSH server answers with its banner; return (banner, seconds).

    ``alive`` lets the caller abort early (e.g. the domain died)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        # Short per-attempt timeout: before the guest NIC is up, slirp holds
        # the host-side connection open silently; sshd sends its banner at once.
        banner = read_ssh_banner(host, port, timeout=min(1.5, timeout))
        if banner:
            return banner, time.monotonic() - start
        if alive is not None and not alive():
            raise DomainStartError(f"guest stopped before SSH answered on {host}:{port}")
        time.sleep(interval)
    raise ReadinessTimeout(f"no SSH banner on {host}:{port} within {timeout:.0f}s")


def wait_for_serial(log_path: Path, pattern: str, timeout: float, interval: float = 0.2,
                    alive: Callable[[], bool] | None = None) -> float:
    """Wait until ``pattern`` (a regex) appears in a serial-console log file."""
    rx = re.compile(pattern.encode())
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if rx.search(Path(log_path).read_bytes()):
                return time.monotonic() - start
        except FileNotFoundError:
            pass
        if alive is not None and not alive():
            raise DomainStartError(f"guest stopped before {pattern!r} appeared in {log_path}:\n"
                                   + tail_file(log_path))
        time.sleep(interval)
    raise ReadinessTimeout(f"{pattern!r} not seen in {log_path} within {timeout:.0f}s:\n"
                           + tail_file(log_path))


def tail_file(path: Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_bytes().decode(errors="replace")
    except OSError as e:
        return f"(cannot read {path}: {e.strerror})"
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class CloneDomainSpec:
    name: str
    disk_path: Path
    kernel_path: Path
    initrd_path: Path | None
    ssh_port: int
    serial_log: Path
    memory_mib: int = 1024
    vcpus: int = 1
    cmdline: str = "root=/dev/vda rw console=ttyS0"
    domain_type: str = "qemu"          # "kvm" or "qemu" (TCG); see detect_accel()
    rehearsal_id: str = ""
    clone_id: str = ""
    ssh_host: str = "127.0.0.1"

    def validate(self) -> None:
        if not DOMAIN_NAME_RE.match(self.name):
            raise SpecError(f"bad domain name {self.name!r}: use letters, digits, '_.-', max 64")
        if self.domain_type not in ACCELS:
            raise SpecError(f"domain_type must be one of {ACCELS}, not {self.domain_type!r}")
        if self.memory_mib < 64:
            raise SpecError(f"memory_mib={self.memory_mib} is too small (min 64)")
        if self.vcpus < 1:
            raise SpecError(f"vcpus={self.vcpus} must be >= 1")
        if not 1 <= self.ssh_port <= 65535:
            raise SpecError(f"ssh_port={self.ssh_port} out of range")
        if self.ssh_host not in ("127.0.0.1", "::1", "localhost"):
            # Exposing a clone of a production box on a routable address defeats the isolation.
            raise SpecError(f"ssh_host must be a loopback address, not {self.ssh_host!r}")
        paths = [self.disk_path, self.kernel_path, self.serial_log]
        if self.initrd_path is not None:
            paths.append(self.initrd_path)
        for p in paths:
            if not Path(p).is_absolute():
                raise SpecError(f"path {p} must be absolute (libvirtd resolves paths itself)")
            if _UNSAFE_ARG.search(str(p)):
                raise SpecError(f"path {p} contains a comma or whitespace")


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str
    active: bool
    state: str
    rehearsal_id: str
    clone_id: str
    disk_path: Path | None
    serial_log: Path | None
    ssh_host: str | None
    ssh_port: int | None
    created: float | None
    understudy: bool = True   # carries our metadata element (False: foreign domain)


_STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


def render_domain_xml(spec: CloneDomainSpec, *, user_net: bool = True) -> str:
    """libvirt XML for a clone. ``user_net`` adds the restricted user-mode NIC
    (qemu driver only: it goes through ``<qemu:commandline>``)."""
    spec.validate()
    created = f"{time.time():.3f}"
    meta = (
        f"<{METADATA_PREFIX}:clone xmlns:{METADATA_PREFIX}={quoteattr(METADATA_NS)}>"
        f"<{METADATA_PREFIX}:rehearsal>{escape(spec.rehearsal_id)}</{METADATA_PREFIX}:rehearsal>"
        f"<{METADATA_PREFIX}:clone-id>{escape(spec.clone_id)}</{METADATA_PREFIX}:clone-id>"
        f"<{METADATA_PREFIX}:disk>{escape(str(spec.disk_path))}</{METADATA_PREFIX}:disk>"
        f"<{METADATA_PREFIX}:serial-log>{escape(str(spec.serial_log))}</{METADATA_PREFIX}:serial-log>"
        f"<{METADATA_PREFIX}:ssh host={quoteattr(spec.ssh_host)} port='{spec.ssh_port}'/>"
        f"<{METADATA_PREFIX}:created>{created}</{METADATA_PREFIX}:created>"
        f"</{METADATA_PREFIX}:clone>")
    initrd = f"<initrd>{escape(str(spec.initrd_path))}</initrd>" if spec.initrd_path else ""
    # host-passthrough under KVM is exactly what probe_kvm() exercised;
    # under TCG the default qemu64 model boots Debian kernels fine.
    cpu = "<cpu mode='host-passthrough'/>" if spec.domain_type == "kvm" else ""
    use_qemu_ns = user_net
    ns_attr = f" xmlns:qemu={quoteattr(QEMU_NS)}" if use_qemu_ns else ""
    netargs = ""
    if use_qemu_ns:
        # User-mode net, restrict=on: the guest cannot reach any host or
        # network; only the hostfwd into its sshd exists. libvirt's own
        # <interface type='user'> cannot set restrict, hence custom argv.
        host = "127.0.0.1" if spec.ssh_host == "localhost" else spec.ssh_host
        netdev = f"user,id=usnet0,restrict=on,hostfwd=tcp:{host}:{spec.ssh_port}-:22"
        netargs = (
            "<qemu:commandline>"
            "<qemu:arg value='-netdev'/>"
            f"<qemu:arg value={quoteattr(netdev)}/>"
            "<qemu:arg value='-device'/>"
            f"<qemu:arg value='virtio-net-pci,netdev=usnet0,bus=pci.0,addr={NIC_PCI_SLOT}'/>"
            "</qemu:commandline>")
    xml = f"""<domain type='{spec.domain_type}'{ns_attr}>
  <name>{escape(spec.name)}</name>
  <title>understudy clone {escape(spec.clone_id or spec.name)}</title>
  <metadata>{meta}</metadata>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>{spec.vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(spec.kernel_path))}</kernel>
    {initrd}
    <cmdline>{escape(spec.cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  {cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file={quoteattr(str(spec.disk_path))}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <serial type='file'>
      <source path={quoteattr(str(spec.serial_log))}/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
  {netargs}
</domain>
"""
    ET.fromstring(xml)  # fail here, with a Python traceback, rather than deep in libvirt
    return xml


# --------------------------------------------------------------------------- hypervisor

class Hypervisor:
    """One libvirt connection. ``test:///default`` for fast tests,
    ``qemu:///system`` for real clones (start it with scripts/libvirt-up.sh)."""

    def __init__(self, uri: str = "qemu:///system", emitter: Emitter | None = None) -> None:
        self.uri = uri
        self.emitter: Emitter = emitter or NullEmitter()
        start = time.monotonic()
        try:
            self.conn = libvirt.open(uri)
        except libvirt.libvirtError as e:
            hint = " (is libvirtd running? run scripts/libvirt-up.sh)" if uri.startswith("qemu") else ""
            raise LibvirtUnavailableError(f"cannot connect to libvirt at {uri}: {e}{hint}") from e
        self.connect_seconds = time.monotonic() - start
        self.is_test_driver = self.conn.getType().upper() == "TEST"

    # context manager so tests and tasks close the connection deterministically
    def __enter__(self) -> "Hypervisor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass

    # ---- capacity

    @staticmethod
    def capacity(storage_dir: Path) -> int:
        """Free bytes in ``storage_dir`` (as available to non-root, i.e. minus
        the ext4 root reserve, so we never eat the last blocks)."""
        try:
            return shutil.disk_usage(storage_dir).free
        except FileNotFoundError as e:
            raise CapacityError(f"storage dir {storage_dir} does not exist") from e

    @classmethod
    def check_capacity(cls, storage_dir: Path, needed_bytes: int, reserve_bytes: int = 256 << 20) -> int:
        """Raise CapacityError unless ``needed_bytes`` + a safety reserve fit.
        Returns the free bytes seen."""
        free = cls.capacity(storage_dir)
        if needed_bytes + reserve_bytes > free:
            raise CapacityError(
                f"not enough space in {storage_dir}: need {_h(needed_bytes)} "
                f"(+{_h(reserve_bytes)} reserve), only {_h(free)} free")
        return free

    def check_memory(self, memory_mib: int) -> None:
        free = self.conn.getFreeMemory()
        if memory_mib * 1024 * 1024 > free:
            raise CapacityError(f"not enough host memory: clone wants {memory_mib} MiB, "
                                f"{free >> 20} MiB free")

    # ---- XML

    def domain_xml(self, spec: CloneDomainSpec) -> str:
        # The test driver knows nothing of qemu's argv passthrough.
        return render_domain_xml(spec, user_net=not self.is_test_driver)

    # ---- lifecycle

    def _lookup(self, name: str) -> libvirt.virDomain | None:
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise HypervisorError(f"libvirt lookup of {name!r} failed: {e}") from e

    def define_and_start(self, spec: CloneDomainSpec, *, port_retries: int = 0) -> DomainInfo:
        """Define and boot the clone. With ``port_retries`` > 0, a lost race for
        the SSH forward port (see ``free_port``) is retried on fresh ports;
        the returned DomainInfo carries the port actually used."""
        for attempt in range(port_retries + 1):
            try:
                return self._define_and_start(spec)
            except PortInUseError:
                if attempt == port_retries:
                    raise
                new_port = free_port(spec.ssh_host if spec.ssh_host != "localhost" else "127.0.0.1")
                self.emitter.log(f"port {spec.ssh_port} taken, retrying on {new_port}", "info")
                spec = dataclasses.replace(spec, ssh_port=new_port)
        raise AssertionError("unreachable")

    def _define_and_start(self, spec: CloneDomainSpec) -> DomainInfo:
        xml = self.domain_xml(spec)
        if not self.is_test_driver:
            # libvirtd would report a missing file too, but less clearly.
            for label, p in (("disk", spec.disk_path), ("kernel", spec.kernel_path),
                             ("initrd", spec.initrd_path)):
                if p is not None and not Path(p).is_file():
                    raise SpecError(f"{label} {p} does not exist")
            Path(spec.serial_log).parent.mkdir(parents=True, exist_ok=True)
        if self._lookup(spec.name) is not None:
            raise DomainExistsError(f"a domain named {spec.name!r} already exists on {self.uri}; "
                                    f"destroy it first (leftover? see list_clones())")
        try:
            dom = self.conn.defineXML(xml)
        except libvirt.libvirtError as e:
            raise DomainStartError(f"libvirt rejected the domain XML for {spec.name!r}: {e}") from e
        self.emitter.log(f"defined domain {spec.name} ({spec.domain_type}, {spec.memory_mib} MiB, "
                         f"{spec.vcpus} vCPU, ssh on {spec.ssh_host}:{spec.ssh_port})", "info")
        try:
            dom.create()
        except libvirt.libvirtError as e:
            detail = str(e)
            port_taken = "Could not set up host forwarding" in detail
            qlog = Path("/var/log/libvirt/qemu") / f"{spec.name}.log"
            try:
                dom.undefineFlags(self._undefine_flags())
            except libvirt.libvirtError:
                pass
            if port_taken:
                raise PortInUseError(f"starting {spec.name!r} failed: SSH forward port {spec.ssh_port} on "
                                     f"{spec.ssh_host} is already in use ({detail})") from e
            raise DomainStartError(f"starting {spec.name!r} failed: {detail}"
                                   + (f"\nqemu log tail:\n{tail_file(qlog, 8)}" if qlog.exists() else "")) from e
        self.emitter.log(f"started domain {spec.name}", "info")
        return self._info(dom)

    @staticmethod
    def _undefine_flags() -> int:
        # Snapshot metadata would make a plain undefine() fail (and leave the
        # leftover behind); NVRAM is not supported by every driver and we never
        # boot UEFI.
        return (libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)

    def destroy(self, name: str, *, remove_disk: bool = False, remove_serial_log: bool = False,
                missing_ok: bool = True) -> bool:
        """Stop (hard) and undefine ``name``; optionally delete its disk / serial log.

        Returns False if there was no such domain (and ``missing_ok``).
        Only files recorded in the understudy metadata are deleted, so this
        never removes a disk it did not create.
        """
        dom = self._lookup(name)
        if dom is None:
            if missing_ok:
                return False
            raise DomainNotFoundError(f"no domain named {name!r} on {self.uri}")
        info = self._info(dom)
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError as e:
            # It may have stopped by itself between isActive() and destroy().
            if dom.isActive():
                raise DestroyError(f"could not stop domain {name!r}: {e}") from e
        try:
            dom.undefineFlags(self._undefine_flags())
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise DestroyError(f"could not undefine domain {name!r}: {e}") from e
        self.emitter.log(f"destroyed and undefined domain {name}", "info")
        for wanted, path in ((remove_disk, info.disk_path), (remove_serial_log, info.serial_log)):
            if wanted and path is not None:
                try:
                    Path(path).unlink()
                    self.emitter.log(f"removed {path}", "info")
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise DestroyError(f"domain {name!r} is gone but {path} could not be removed: "
                                       f"{e.strerror}") from e
        return True

    def info(self, name: str) -> DomainInfo:
        dom = self._lookup(name)
        if dom is None:
            raise DomainNotFoundError(f"no domain named {name!r} on {self.uri}")
        return self._info(dom)

    def is_active(self, name: str) -> bool:
        dom = self._lookup(name)
        return bool(dom is not None and dom.isActive())

    def list_clones(self, rehearsal_id: str | None = None) -> list[DomainInfo]:
        """All domains (running or not) carrying understudy metadata."""
        out = []
        for dom in self.conn.listAllDomains():
            try:
                info = self._info(dom)
            except (libvirt.libvirtError, HypervisorError):
                # Another worker may undefine a domain while we iterate.
                if self._lookup(dom.name()) is None:
                    continue
                raise
            if not info.understudy:
                continue
            if rehearsal_id is not None and info.rehearsal_id != rehearsal_id:
                continue
            out.append(info)
        return sorted(out, key=lambda i: i.name)

    def cleanup_leftovers(self, rehearsal_id: str | None = None, *, remove_disks: bool = True) -> list[str]:
        """Destroy every understudy clone (optionally of one rehearsal)."""
        removed = []
        for info in self.list_clones(rehearsal_id):
            if self.destroy(info.name, remove_disk=remove_disks, remove_serial_log=remove_disks):
                removed.append(info.name)
        return removed

    def wait_until_ssh(self, info: DomainInfo, timeout: float = 120.0) -> tuple[str, float]:
        """Wait for the clone's sshd banner through the forward; fail fast if the
        domain stops (e.g. the initramfs could not mount root)."""
        if info.ssh_port is None:
            raise SpecError(f"domain {info.name!r} has no ssh port in its metadata")
        host = info.ssh_host or "127.0.0.1"
        try:
            banner, secs = wait_for_ssh_banner(host, info.ssh_port, timeout,
                                               alive=lambda: self.is_active(info.name))
        except (ReadinessTimeout, DomainStartError) as e:
            tail = tail_file(info.serial_log) if info.serial_log else ""
            raise type(e)(f"{e}; serial console tail:\n{tail}") from e
        self.emitter.log(f"{info.name}: SSH answered after {secs:.1f}s: {banner}", "info")
        return banner, secs

    # ---- internals

    def _info(self, dom: libvirt.virDomain) -> DomainInfo:
        try:
            state_code = dom.state()[0]
        except libvirt.libvirtError:
            state_code = libvirt.VIR_DOMAIN_NOSTATE
        meta = _read_metadata(dom)
        ssh = meta.get("ssh") or {}
        port = ssh.get("port")
        return DomainInfo(
            name=dom.name(),
            uuid=dom.UUIDString(),
            active=bool(dom.isActive()),
            state=_STATE_NAMES.get(state_code, str(state_code)),
            rehearsal_id=meta.get("rehearsal", ""),
            clone_id=meta.get("clone-id", ""),
            disk_path=Path(meta["disk"]) if meta.get("disk") else None,
            serial_log=Path(meta["serial-log"]) if meta.get("serial-log") else None,
            ssh_host=ssh.get("host"),
            ssh_port=int(port) if port else None,
            created=float(meta["created"]) if meta.get("created") else None,
            understudy=bool(meta),
        )


def _read_metadata(dom: libvirt.virDomain) -> dict:
    try:
        raw = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return {}
        raise HypervisorError(f"reading metadata of {dom.name()!r} failed: {e}") from e
    # libvirt returns the element with the namespace stripped or re-prefixed
    # depending on version; match local names.
    root = ET.fromstring(raw)
    meta: dict = {}
    for child in root:
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "ssh":
            meta["ssh"] = dict(child.attrib)
        else:
            meta[tag] = (child.text or "").strip()
    return meta


def _h(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
