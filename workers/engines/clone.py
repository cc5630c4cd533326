"""P2V clone: a running server becomes a bootable, isolated VM — without downtime.

Pipeline (each stage is an Emitter ``phase``)::

    connect -> estimate -> capacity -> pre_command -> stream -> delta -> post_command
            -> fixup -> image -> define -> boot

* **stream**: one GNU tar stream over SSH (a ``remote.RemoteProcess``: the OpenSSH client by
  default, pinned host key, ~2.5x paramiko's throughput) spliced into a local ``tar -x`` in
  ``storage_dir/<name>/staging``: the clone's own ext4 image loop-mounted there (``nosuid,nodev``)
  when the worker is root with loop devices, else a plain staging directory (see **image**).
  One file system (plus /boot when it is a separate mount: the clone boots its own kernel),
  numeric owners, xattrs/ACLs when both tars support them, sparse files kept sparse.
* **delta**: a second ``tar --newer=@T0`` pass (mtime *or* ctime newer than the moment
  the first pass started, production's clock, because production stamped the mtimes)
  re-copies what changed while the first pass ran; a file listing of production
  removes from staging what vanished. Both are reported as **consistency**: the clone
  is crash-consistent, not quiesced, unless ``pre_command`` quiesced the service.
* **fixup** (in staging, before the image exists): hostname, fresh SSH host keys (the
  new ed25519 public key is the pin), the worker key authorized for root, fstab on
  /dev/vda, network on DHCP (qemu user-net), services disabled.
* **image**: a mounted image is unmounted and becomes the read-only raw base of the clone's
  qcow2 overlay (no second copy: peak disk ~ the host's used bytes); a staging directory goes
  through ``image.build_disk`` (mke2fs -d + qemu-img convert: up to three copies at once).
* **define/boot**: ``hypervisor.Hypervisor.define_and_start`` (direct kernel boot from the
  clone's own /boot, user-mode networking with ``restrict=on``, SSH forwarded on
  127.0.0.1 only), then wait until the clone answers SSH *with the pinned new key*.

Any failure (or cancellation) removes what this run created — the domain, the disk,
kernel copies, staging — and raises a ``CloneError`` subclass. The SSH errors of the
*connect* phase (``HostKeyMismatch``, ``HostUnreachable``, ``AuthenticationFailed``)
are let through unchanged: they are already typed and clear, and a host-key mismatch
must stay recognisable as the security event it is.

Plain Python: no Django, no Celery (the ``clone`` step kind calls ``clone_host``).
"""
from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from .confined import ConfinementError, Root, identical_entries, merge_tree
from .endpoint import (AuthenticationFailed, CommandFailed, Endpoint, HostKeyMismatch, SSHError, command_string,
                       fingerprint, parse_public_key)
from .events import Emitter, NullEmitter
from .hypervisor import (
    DOMAIN_NAME_RE, CapacityError, CloneDomainSpec, DomainInfo, DomainNotFoundError, Hypervisor, HypervisorError,
    ReadinessTimeout, detect_accel, free_port, tail_file,
)
from .image import (MiB, DiskFullError, DiskImage, ImageError, MountedImage, TreeSize, build_disk, estimate_tree_size,
                    find_boot_files, image_size_for, loop_mount_unavailable, release_mounts_under)
from .overlay import ImageFile, create_overlay, edit_image
from .remote import TRANSPORTS, PipeLines, RemoteProcess, pick_transport
from .ssh import Session, scan_host_key

# Never streamed: pseudo/volatile file systems. Their mount-point directories are kept
# (empty) because the clone's init mounts them again.
ALWAYS_EXCLUDED = ("/proc", "/sys", "/dev", "/run", "/tmp")
CLONE_MARKER = ".understudy-clone"          # in storage_dir/<name>: "this dir is ours to delete"
LIST_LIMIT = 1000                           # paths kept per consistency list (counts are exact)
PROGRESS_INTERVAL = 0.25                    # seconds between progress events
TAR_STDERR_LINES = 200                      # the remote tar's last stderr lines kept for error messages
MIN_IMAGE_HEADROOM = 128 * MiB              # free space inside the clone's ext4, whatever the %
# The mtime the kernel stamps comes from a coarse clock that can lag date(1) by a tick:
# start the delta window a little earlier so a write right after T0 is never missed.
DELTA_CLOCK_MARGIN = 0.05
_HOSTNAME_RE = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")
_SERVICE_RE = re.compile(r"^[A-Za-z0-9@_.:+-]+$")
# Where a host declares its plain service lists (one absolute path a line): see declared_service_lists.
SERVICE_LISTS = "/etc/understudy/service-lists"
# How the tree reaches the disk image: "auto" extracts into the loop-mounted image when the
# worker can mount (root, loop devices), else into a staging directory; "staging" forces the latter.
IMAGE_BUILDS = ("auto", "staging")
IMAGE_LABEL = "understudy-root"
# Virtual file systems that stay in a clone's fstab; block, network and swap lines go.
_VIRTUAL_FS = {"proc", "sysfs", "tmpfs", "devpts", "devtmpfs", "securityfs", "cgroup", "cgroup2", "debugfs",
               "hugetlbfs", "mqueue", "binfmt_misc", "configfs", "pstore", "tracefs", "fusectl", "ramfs"}


# --------------------------------------------------------------------------- errors

class CloneError(Exception):
    """Base class of every clone failure (besides the connect phase's SSHError subclasses)."""


class CloneSpecError(CloneError, ValueError):
    """Bad options (name, hostname, exclude paths, service names...)."""


class CloneExistsError(CloneError):
    """A domain or clone directory of that name exists already; nothing was touched."""


class SourceError(CloneError):
    """Production could not be examined (estimate failed)."""


class TarMissingError(SourceError):
    """No GNU tar on the production host."""


class HookFailed(CloneError):
    """pre_command / post_command exited non-zero (or timed out)."""


class CloneCapacityError(CloneError, CapacityError):
    """Not enough space on the hypervisor's storage dir (checked before copying, or ran out)."""


class StreamError(CloneError):
    """The tar stream failed (ssh dropped, local extraction failed, fatal tar error)."""


class UnreadableFilesError(StreamError):
    """Files on production could not be read; ``paths`` lists them."""

    def __init__(self, message: str, paths: list[str]) -> None:
        super().__init__(message)
        self.paths = paths


class FixupError(CloneError):
    pass


class BootFilesMissing(CloneError):
    """No kernel in the clone's /boot: it cannot be booted directly."""


class ImageBuildError(CloneError):
    pass


class DefineError(CloneError):
    """libvirt refused or could not start the domain."""


class BootError(CloneError):
    """The domain started but never answered SSH with the pinned key."""


class CloneCancelled(CloneError):
    pass


# --------------------------------------------------------------------------- options / result

@dataclass
class StandInOptions:
    """A second VM from the same point-in-time copy that plays production in a dress
    rehearsal: a copy-on-write overlay of the same base disk, its own name, hostname,
    fresh host keys and loopback port, on its own isolated user-mode network."""
    name: str                                  # libvirt domain name, e.g. "us-r12-db-prod-01-standin"
    hostname: str


@dataclass
class CloneOptions:
    name: str                                  # libvirt domain name, e.g. "us-r12-db-prod-01"
    hostname: str                              # the clone's new hostname
    rehearsal_id: str = ""
    pre_command: str | None = None             # run on production before copying (flush/checkpoint)
    post_command: str | None = None            # run on production after the delta pass
    # absolute paths (shell-style patterns allowed: /var/cache/*.tmp), beyond /proc /sys /dev /run /tmp, swap
    exclude: list[str] = field(default_factory=list)
    disable_services: list[str] = field(default_factory=list)
    memory_mib: int = 1024
    vcpus: int = 1
    headroom_percent: int = 30                 # capacity margin, and free space inside the clone's disk
    boot_timeout: float = 300
    domain_type: str | None = None             # None: detect_accel() ("kvm" or "qemu" = TCG)
    worker_public_key: str = ""                # "ssh-ed25519 AAAA..." authorized for root in the clone
    worker_key_path: str | None = None         # its private key: the boot check logs in and runs hostname
    allow_unreadable: bool = False             # True: unreadable files are reported, not fatal
    hook_timeout: float = 600                  # seconds for pre/post command each
    transport: str = "openssh"                 # the tar streams: OpenSSH client (bulk speed), paramiko or auto
    stand_in: StandInOptions | None = None     # also boot a stand-in of production (dress rehearsal)
    cmdline: str = "root=/dev/vda rw console=ttyS0 net.ifnames=0 biosdevname=0"
    image_build: str = "auto"                  # IMAGE_BUILDS: mounted image when possible, or staging dir


@dataclass
class CloneResult:
    domain_name: str
    disk_path: str
    staging_dir: str
    kernel_path: str
    initrd_path: str | None
    ssh_host: str
    ssh_port: int
    user: str
    host_key: str                              # the clone's NEW ed25519 public key — the pin
    point_in_time: float                       # worker clock (unix time) when the first pass started
    consistency: dict
    bytes: int
    files: int
    timings: dict[str, float]
    booted: bool                               # False on libvirt's test driver (nothing boots)
    clone_dir: str = ""
    serial_log: str = ""
    domain_type: str = ""
    source_point_in_time: float | None = None  # production's clock at the same moment (mtimes use it)
    fixups: dict = field(default_factory=dict)
    stand_in: dict | None = None               # domain_name, clone_dir, disk_path, ssh_host/port, host_key, ...

    def to_dict(self) -> dict:
        return asdict(self)

    def endpoint(self, key_path: str | None = None) -> Endpoint:
        """Where later steps reach the clone (strict host key = the pin)."""
        return Endpoint(self.ssh_host, self.ssh_port, self.user, key_path, self.host_key,
                        label=f"clone {self.domain_name}")


@dataclass(frozen=True)
class SourceFacts:
    """What the estimate learned about production."""

    tar_version: str
    xattrs: bool
    acls: bool
    selinux: bool
    bytes: int               # du -skx of / (+ /boot if separate), minus excludes
    files: int
    clock: float | None      # production's `date` at the estimate
    swap_files: list[str]
    boot_separate: bool
    other_mounts: list[str]  # real file systems that are not cloned (one file system)


# --------------------------------------------------------------------------- small helpers

def _check(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise CloneCancelled("clone cancelled")


def _validate(options: CloneOptions) -> None:
    if not DOMAIN_NAME_RE.match(options.name):
        raise CloneSpecError(f"bad clone name {options.name!r}: letters, digits, '_.-', max 64")
    if not _HOSTNAME_RE.match(options.hostname):
        raise CloneSpecError(f"bad hostname {options.hostname!r}: letters, digits, '-', max 63")
    for p in options.exclude:
        if not p.startswith("/") or p.rstrip("/") == "" or "\n" in p:
            raise CloneSpecError(f"exclude path {p!r} must be an absolute path below /")
    for s in options.disable_services:
        if not _SERVICE_RE.match(s):
            raise CloneSpecError(f"bad service name {s!r}")
    if options.worker_public_key:
        try:
            parse_public_key(options.worker_public_key)
        except ValueError as exc:
            raise CloneSpecError(f"worker_public_key must be an OpenSSH public key line "
                                 f"('ssh-ed25519 AAAA...'): {exc}") from exc
    if options.stand_in is not None:
        if not DOMAIN_NAME_RE.match(options.stand_in.name) or options.stand_in.name == options.name:
            raise CloneSpecError(f"bad stand-in domain name {options.stand_in.name!r}")
        if not _HOSTNAME_RE.match(options.stand_in.hostname):
            raise CloneSpecError(f"bad stand-in hostname {options.stand_in.hostname!r}")
    if options.transport not in TRANSPORTS:
        raise CloneSpecError(f"transport must be one of {', '.join(TRANSPORTS)}, not {options.transport!r}")
    if options.image_build not in IMAGE_BUILDS:
        raise CloneSpecError(f"image_build must be one of {', '.join(IMAGE_BUILDS)}, not {options.image_build!r}")
    if not 0 <= options.headroom_percent <= 1000:
        raise CloneSpecError(f"headroom_percent={options.headroom_percent} out of range 0..1000")


def _worker_public_key(options: CloneOptions) -> str:
    if options.worker_public_key:
        return " ".join(options.worker_public_key.split()[:3])
    if options.worker_key_path:
        proc = subprocess.run(["ssh-keygen", "-y", "-f", options.worker_key_path], capture_output=True, text=True)
        if proc.returncode != 0:
            raise CloneSpecError(f"cannot read the worker key {options.worker_key_path}: {proc.stderr.strip()}")
        return proc.stdout.strip()
    return ""


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _rel(path: str) -> str:
    """'/var/lib' -> './var/lib' (how tar and find name members under `-C / .`)."""
    return "./" + path.strip("/")


def _abs(member: str) -> str:
    """'./var/lib/x' -> '/var/lib/x'."""
    m = member[1:] if member.startswith("./") else member
    return "/" + m.lstrip("/").rstrip("/") if m not in ("", ".", "./") else "/"


# --------------------------------------------------------------------------- estimate

def _estimate_script(excludes: list[str]) -> str:
    """One round trip: tar flavour, sizes, file count, clock, swap files, mounts.

    POSIX sh + tools both coreutils and busybox have. du/find may print permission
    errors (non-root login): only their totals matter here.
    """
    dux = "".join(f"[ -e {shlex.quote(p)} ] && echo \"DUX $(du -skx {shlex.quote(p)} 2>/dev/null | tail -n1)\"\n"
                  for p in excludes)
    return f"""LC_ALL=C; export LC_ALL
if ! command -v tar >/dev/null 2>&1; then echo NOTAR; exit 0; fi
echo "TARVERSION $(tar --version 2>&1 | head -n1)"
tar --help 2>/dev/null | grep -q -- '--xattrs' && echo XATTRS
tar --help 2>/dev/null | grep -q -- '--acls' && echo ACLS
tar --help 2>/dev/null | grep -q -- '--selinux' && echo SELINUX
echo "CLOCK $(date +%s.%N)"
echo "DU $(du -skx / 2>/dev/null | tail -n1)"
BOOTM=$(awk '$2=="/boot"{{print "yes"}}' /proc/self/mounts 2>/dev/null | head -n1)
if [ "$BOOTM" = yes ]; then echo BOOTSEP; echo "DUB $(du -skx /boot 2>/dev/null | tail -n1)"; fi
{dux}echo "FILES $(find / -xdev 2>/dev/null | wc -l)"
[ "$BOOTM" = yes ] && echo "FILESB $(find /boot -xdev 2>/dev/null | wc -l)"
awk 'NR>1 && $2=="file" {{print "SWAP " $1}}' /proc/swaps 2>/dev/null
awk '$1 ~ /^\\/dev\\// && $2 != "/" && $2 != "/boot" {{print "MOUNT " $2 " " $3 " " $1}}' /proc/self/mounts 2>/dev/null
echo END
"""


def _first_int(text: str) -> int:
    m = re.match(r"\s*(\d+)", text)
    return int(m.group(1)) if m else 0


def parse_estimate(out: str, excludes: list[str]) -> SourceFacts:
    lines = out.splitlines()
    if "NOTAR" in lines:
        raise TarMissingError("tar missing on the host: GNU tar is needed to stream the root file system "
                              "(Debian: apt-get install tar)")
    if "END" not in lines:
        raise SourceError(f"the estimate script did not finish: {out[-400:]!r}")
    kv: dict[str, list[str]] = {}
    for line in lines:
        key, _, rest = line.partition(" ")
        kv.setdefault(key, []).append(rest)
    version = (kv.get("TARVERSION") or [""])[0]
    if "GNU tar" not in version:
        raise TarMissingError(f"tar on the host is not GNU tar ({version.strip() or 'unknown'}): "
                              "one-file-system, numeric owners, xattrs and the delta pass need GNU tar")
    du_k = _first_int((kv.get("DU") or ["0"])[0]) + _first_int((kv.get("DUB") or ["0"])[0])
    swaps = [s.strip() for s in kv.get("SWAP", []) if s.strip()]
    # Excluded paths and swap files are not streamed (swap files are listed as DUX too
    # because clone_host passes them in excludes on the second call).
    du_k -= sum(_first_int(x) for x in kv.get("DUX", []))
    files = _first_int((kv.get("FILES") or ["0"])[0]) + _first_int((kv.get("FILESB") or ["0"])[0])
    clock = parse_clock((kv.get("CLOCK") or [""])[0])
    return SourceFacts(tar_version=version.strip(), xattrs="XATTRS" in lines, acls="ACLS" in lines,
                       selinux="SELINUX" in lines, bytes=max(du_k, 0) * 1024, files=files, clock=clock,
                       swap_files=swaps, boot_separate="BOOTSEP" in lines,
                       other_mounts=[m.strip() for m in kv.get("MOUNT", [])])


def estimate_source(session: Session, excludes: list[str], emitter: Emitter) -> SourceFacts:
    try:
        out = session.check_output(["sh", "-c", _estimate_script(excludes)], timeout=3600).decode(errors="replace")
    except CommandFailed as exc:
        raise SourceError(f"{session.endpoint}: examining the host failed: {exc}") from exc
    facts = parse_estimate(out, excludes)
    if facts.swap_files:
        # second, cheap pass so the swap files' size is subtracted too
        extra = [s for s in facts.swap_files if s not in excludes]
        if extra:
            out = session.check_output(["sh", "-c", _estimate_script(excludes + extra)],
                                       timeout=3600).decode(errors="replace")
            facts = parse_estimate(out, excludes + extra)
    emitter.log(f"source {session.endpoint}: {facts.tar_version}; ~{_human(facts.bytes)} in ~{facts.files} "
                f"files to copy; xattrs={'yes' if facts.xattrs else 'no'} acls={'yes' if facts.acls else 'no'}"
                + (f"; swap files excluded: {', '.join(facts.swap_files)}" if facts.swap_files else "")
                + ("; /boot is a separate file system: streamed too" if facts.boot_separate else ""), "info")
    for m in facts.other_mounts:
        emitter.log(f"not cloned (separate file system, one file system is cloned): {m}", "stderr")
    return facts


# --------------------------------------------------------------------------- tar commands

def local_tar_features() -> tuple[bool, bool]:
    """(xattrs, acls) support of the worker's tar."""
    out = subprocess.run(["tar", "--help"], capture_output=True, text=True).stdout
    return "--xattrs" in out, "--acls" in out


def _exclude_patterns(options: CloneOptions, facts: SourceFacts) -> list[str]:
    """Member-name patterns for `tar -C / --anchored` (and `find -path`).

    Pseudo file systems keep their (empty) directory: the clone's init mounts onto it.
    """
    pats = [_rel(p) + "/*" for p in ALWAYS_EXCLUDED]
    pats += [_rel(p) for p in list(options.exclude) + facts.swap_files]
    return pats


def _members(facts: SourceFacts) -> list[str]:
    # A top-level member is archived even on another file system: that is how a
    # separate /boot comes along while --one-file-system keeps /home, /srv... out.
    return [".", "./boot"] if facts.boot_separate else ["."]


def remote_tar_command(options: CloneOptions, facts: SourceFacts, *, newer_than: float | None = None,
                       xattrs: bool = True, acls: bool = True) -> str:
    argv = ["tar", "-c", "-f", "-", "-C", "/", "--one-file-system", "--numeric-owner", "--sparse",
            "--warning=no-file-ignored"]
    if xattrs:
        argv += ["--xattrs", "--xattrs-include=*"]
    if acls:
        argv += ["--acls"]
    if newer_than is not None:
        # mtime OR ctime newer: catches in-place edits, renames, chmod/chown, mtime-preserving copies
        argv += [f"--newer=@{newer_than:.6f}"]
    argv += ["--anchored"] + [f"--exclude={p}" for p in _exclude_patterns(options, facts)]
    argv += ["--"] + _members(facts)
    return "LC_ALL=C exec " + command_string(argv)


def local_tar_argv(staging: Path, *, xattrs: bool, acls: bool) -> list[str]:
    argv = ["tar", "-x", "-v", "-f", "-", "-C", str(staging), "--numeric-owner", "-p", "--same-owner"]
    if xattrs:
        argv += ["--xattrs", "--xattrs-include=*"]
    if acls:
        argv += ["--acls"]
    return argv


# GNU tar's per-file diagnostics (LC_ALL=C). Names are printed with escape quoting.
_TAR_MSG = re.compile(r"^tar: (?P<name>.+?): (?P<msg>.+)$")


@dataclass
class TarDiagnostics:
    changed: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    def feed(self, line: str) -> str:
        """Classify one stderr line of the remote tar; returns its class."""
        m = _TAR_MSG.match(line.strip())
        if not m:
            if line.startswith("tar: Exiting with failure status") or not line.strip():
                return "ignored"
            self.other.append(line)
            return "other"
        name, msg = _abs(m.group("name")), m.group("msg")
        low = msg.lower()
        if "file changed as we read it" in low or "file shrank by" in low or "changed size" in low:
            self.changed.append(name)
            return "changed"
        if "file removed before we read it" in low or (
                low.startswith("cannot stat") and "no such file" in low) or (
                low.startswith("cannot open") and "no such file" in low):
            self.vanished.append(name)
            return "vanished"
        if "permission denied" in low or "operation not permitted" in low:
            self.unreadable.append(name)
            return "unreadable"
        if "socket ignored" in low or "door ignored" in low:
            return "ignored"
        self.other.append(line)
        return "other"


def _stream_errors(stderr_lines: list[str]) -> str:
    return " | ".join(stderr_lines[-6:])


# --------------------------------------------------------------------------- stream

@dataclass
class PassResult:
    bytes: int
    members: list[str]       # names extracted (directories end with '/')
    diagnostics: TarDiagnostics
    ssh_rc: int
    seconds: float


def _kill_local(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _pump(source: RemoteProcess, dst: int, on_bytes: Callable[[int], None],
          cancel: Callable[[], bool] | None) -> None:
    """Move the stream into the local tar, counting bytes: with splice(2) from the OpenSSH
    client's pipe (no copy through Python), else by reading the process."""
    src = source.stdout_fd
    use_splice = src is not None and hasattr(os, "splice")
    while True:
        _check(cancel)
        if use_splice:
            try:
                n = os.splice(src, dst, 1 << 20)
            except OSError as exc:
                if exc.errno in (22, 38):  # EINVAL/ENOSYS: no splice here, copy instead
                    use_splice = False
                    continue
                raise
        else:
            data = source.read(1 << 20)
            n = len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(dst, view):]
        if n == 0:
            return
        on_bytes(n)


def run_tar_pass(source: Endpoint, remote_cmd: str, staging: Path, *, xattrs: bool, acls: bool,
                 emitter: Emitter, stage: str, total_bytes: int | None, total_files: int | None,
                 cancel: Callable[[], bool] | None = None, transport: str = "openssh") -> PassResult:
    """Remote `tar -c` (pinned key; OpenSSH by default: bulk data) | splice | local `tar -x -v`, with progress."""
    diag = TarDiagnostics()
    tar_err: list[str] = []
    members: list[str] = []
    counts = {"bytes": 0, "files": 0}
    start = time.monotonic()

    def on_ssh_err(line: str) -> None:
        kind = diag.feed(line)
        if kind != "ignored":
            emitter.log(f"[{stage}] {line}", "stderr")

    def on_member(raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace")
        members.append(line)
        if not line.endswith("/"):
            counts["files"] += 1

    proc = RemoteProcess.start(source, remote_cmd, transport=transport, on_stderr_line=on_ssh_err,
                               stderr_lines=TAR_STDERR_LINES)
    tar = None
    try:
        proc.close_stdin()
        tar = subprocess.Popen(local_tar_argv(staging, xattrs=xattrs, acls=acls), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "LC_ALL": "C"})
        assert tar.stdin and tar.stdout and tar.stderr
        readers = [PipeLines(tar.stdout, on_member),
                   PipeLines(tar.stderr, lambda raw: tar_err.append(raw.decode("utf-8", errors="replace")))]
        for r in readers:
            r.start()
        last = [0.0]

        def on_bytes(n: int) -> None:
            counts["bytes"] += n
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                emitter.progress(counts["bytes"], total_bytes, "bytes", stage=stage, files=counts["files"],
                                 files_total=total_files)

        stream_ended = False
        try:
            _pump(proc, tar.stdin.fileno(), on_bytes, cancel)
            stream_ended = True
        except BrokenPipeError:
            pass  # local tar died: its stderr says why (checked below)
        finally:
            try:
                tar.stdin.close()
            except BrokenPipeError:
                pass
        tar_rc = tar.wait()
        if tar_rc != 0 and not stream_ended:
            proc.kill()  # still sending into a dead tar; once the stream ended, its exit code tells why
        ssh_rc = proc.wait()
        for r in readers:
            r.join(timeout=10)
        emitter.progress(counts["bytes"], total_bytes, "bytes", stage=stage, files=counts["files"],
                         files_total=total_files)
    except BaseException:
        proc.close()
        if tar is not None:
            _kill_local(tar)
        raise
    seconds = time.monotonic() - start
    ssh_err = proc.stderr_tail
    text = " | ".join(tar_err[-6:])
    if tar_rc != 0 and "no space left on device" in text.lower():
        free = shutil.disk_usage(staging).free
        raise CloneCapacityError(f"{stage}: the staging dir {staging} ran full ({_human(free)} free): {text}")
    if ssh_rc == 127:
        # the local tar then fails too (no archive came): the remote side is the cause
        raise TarMissingError(f"{stage}: tar missing on the host {source}: {_stream_errors(ssh_err)}")
    if proc.lost:
        raise StreamError(f"{stage}: ssh to {source} failed: {_stream_errors(ssh_err) or 'connection lost'}")
    if tar_rc != 0:
        raise StreamError(f"{stage}: local tar -x failed (exit {tar_rc}): {text or _stream_errors(ssh_err)}")
    if ssh_rc not in (0, 1, 2):
        raise StreamError(f"{stage}: remote tar exited {ssh_rc}: {_stream_errors(ssh_err)}")
    if ssh_rc == 2 and diag.other:
        # exit 2 is also what tar returns for unreadable/vanished files; only unexplained
        # errors mean the archive itself is not to be trusted
        raise StreamError(f"{stage}: remote tar failed: {' | '.join(diag.other[-6:])}")
    return PassResult(counts["bytes"], members, diag, ssh_rc, seconds)


# --------------------------------------------------------------------------- delta / consistency

def list_source(session: Session, options: CloneOptions, facts: SourceFacts) -> set[bytes]:
    """Every path production has now (as './x'), with the same exclusions as tar."""
    prunes: list[str] = []
    for p in _exclude_patterns(options, facts):
        prunes += (["-o"] if prunes else []) + ["-path", p]
    roots = ["."] + (["./boot"] if facts.boot_separate else [])
    argv = ["find", *roots, "-xdev", "(", *prunes, ")", "-prune", "-o", "-print0"]
    try:
        out = session.check_output(f"cd / && LC_ALL=C {command_string(argv)} 2>/dev/null; true", timeout=3600)
    except CommandFailed as exc:
        raise StreamError(f"delta: listing {session.endpoint} failed: {exc}") from exc
    return {p.rstrip(b"/") for p in out.split(b"\0") if p}


def list_staging(staging: Path) -> set[bytes]:
    root = os.fsencode(staging)
    names: set[bytes] = {b"."}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = b"." + dirpath[len(root):]
        for n in dirnames + filenames:
            names.add(rel + b"/" + n)
    return names


def remove_vanished(staging: Path, vanished: list[bytes]) -> None:
    root = os.fsencode(staging)
    for rel in sorted(vanished, key=len):
        p = root + rel[1:]
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def _capped(paths: Iterable[str]) -> list[str]:
    return sorted(set(paths))[:LIST_LIMIT]


def build_consistency(first: PassResult, delta: PassResult, vanished: list[str], unreadable: list[str],
                      point_in_time: float, quiesced_by: str | None, *, unchanged: Iterable[str] = ()) -> dict:
    """``unchanged``: delta members the first pass had already copied exactly as they are."""
    delta_files = {_abs(m) for m in delta.members if not m.endswith("/")} - set(unchanged)
    changed = set(first.diagnostics.changed) | delta_files
    vanished_all = set(vanished) | set(first.diagnostics.vanished) | set(delta.diagnostics.vanished)
    changed -= vanished_all
    still = set(delta.diagnostics.changed)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(point_in_time))
    if changed or vanished_all or still:
        summary = (f"crash-consistent copy as of ~{when} (worker clock): {len(changed)} file(s) changed and "
                   f"{len(vanished_all)} vanished while the copy ran; the delta pass re-copied the changed ones"
                   + (f", {len(still)} were still changing during it" if still else "")
                   + ". Not a quiesced snapshot: files of one service may be from different moments.")
    else:
        summary = (f"no file changed or vanished during the copy (started ~{when}, worker clock)"
                   + (f"; pre_command {quiesced_by!r} ran first" if quiesced_by else
                      "; nothing quiesced the services, so this is still only crash-consistent"))
    if unreadable:
        summary += f" {len(unreadable)} file(s) could not be read and are missing from the clone."
    return {"changed": _capped(changed), "vanished": _capped(vanished_all), "unreadable": _capped(unreadable),
            "still_changing": _capped(still), "changed_count": len(changed), "vanished_count": len(vanished_all),
            "unreadable_count": len(set(unreadable)), "still_changing_count": len(still),
            "truncated": max(len(changed), len(vanished_all), len(unreadable)) > LIST_LIMIT,
            "quiesced_by": quiesced_by, "summary": summary}


# --------------------------------------------------------------------------- fixups

def generate_host_key(kind: str, comment: str) -> tuple[bytes, bytes]:
    """A fresh host key pair (private, public), generated in a private temp dir (ssh-keygen writes
    to a path, and production's tree must not choose where)."""
    with tempfile.TemporaryDirectory(prefix="understudy-keygen-") as tmp:
        key = Path(tmp) / "key"
        argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(key)]
        if kind == "rsa":
            argv[4:4] = ["-b", "3072"]
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise FixupError(f"ssh-keygen -t {kind} failed: {proc.stderr.strip()}")
        return key.read_bytes(), key.with_name("key.pub").read_bytes()


def _keygen(tree: Root, rel: str, kind: str, comment: str) -> str:
    """A fresh host key written into the tree through it."""
    private, public = generate_host_key(kind, comment)
    tree.write_bytes(rel, private, mode=0o600, uid=0, gid=0)
    tree.write_bytes(rel + ".pub", public, mode=0o644, uid=0, gid=0)
    return " ".join(public.decode().split()[:2])


def fix_hostname(root: Path, hostname: str) -> str:
    with Root(root) as tree:
        old = (tree.read_text("etc/hostname") or "").strip()
        renamed = old if old not in ("", "localhost") else ""   # never rewrite the localhost line
        tree.mkdirs("etc")
        tree.write_text("etc/hostname", hostname + "\n")
        hosts = tree.read_text("etc/hosts")
        lines = hosts.splitlines() if hosts is not None else ["127.0.0.1\tlocalhost"]
        out, placed = [], False
        for line in lines:
            fields = line.split()
            if line.lstrip().startswith("#") or not fields:
                out.append(line)
                continue
            if renamed and any(f == renamed or f.split(".")[0] == renamed for f in fields[1:]):
                # production's own name on this line: the clone's new name goes on the loopback alias
                # (as Debian's installer writes it); production's address stops mapping to a local name
                out.append(f"127.0.1.1\t{hostname}" if not placed else f"# understudy clone: was: {line}")
                placed = True
                continue
            out.append(line)
        if not placed:
            out.append(f"127.0.1.1\t{hostname}")
        tree.write_text("etc/hosts", "\n".join(out) + "\n")
    return old


def fix_host_keys(root: Path, hostname: str) -> dict[str, str]:
    """Replace every host key; types production had (rsa, ecdsa) are regenerated, ed25519 always."""
    with Root(root) as tree:
        tree.mkdirs("etc/ssh")
        ssh_dir = tree.resolve("etc/ssh")
        names = tree.listdir(ssh_dir)
        kinds = {"ed25519"}
        for name in names:
            m = re.match(r"ssh_host_(\w+)_key$", name)
            if m and m.group(1) in ("rsa", "ecdsa", "ed25519"):
                kinds.add(m.group(1))
        for name in names:
            if name.startswith("ssh_host_"):
                tree.unlink(f"{ssh_dir}/{name}")
        return {k: _keygen(tree, f"{ssh_dir}/ssh_host_{k}_key", k, f"root@{hostname}") for k in sorted(kinds)}


def authorize_worker(root: Path, public_key: str) -> None:
    with Root(root) as tree:
        tree.mkdirs("root/.ssh", mode=0o700)
        tree.set_dir_owner_mode("root", 0, 0)
        tree.set_dir_owner_mode("root/.ssh", 0, 0, 0o700)
        ak = tree.resolve("root/.ssh") + "/authorized_keys"
        existing = tree.read_text(ak) or ""
        if public_key.split()[1] not in existing:
            existing += ("\n" if existing and not existing.endswith("\n") else "") + \
                public_key.strip() + " understudy-worker\n"
        tree.write_text(ak, existing, mode=0o600, uid=0, gid=0)
        text = tree.read_text("etc/ssh/sshd_config")
        if text is not None:
            # the worker logs in as root with a key; production may forbid that
            new = re.sub(r"(?mi)^\s*PermitRootLogin\s+(no|forced-commands-only)\s*$",
                         "PermitRootLogin prohibit-password  # understudy clone", text)
            if new != text:
                tree.write_text(tree.resolve("etc/ssh/sshd_config"), new)


def fix_fstab(root: Path) -> list[str]:
    """Root on /dev/vda ext4; other block/network/swap lines commented out (their devices
    do not exist in the clone and would stall its boot). Returns the lines disabled."""
    with Root(root) as tree:
        text = tree.read_text("etc/fstab")
        lines = text.splitlines() if text is not None else []
        out, disabled, has_root = [], [], False
        for line in lines:
            fields = line.split()
            if not fields or fields[0].startswith("#") or len(fields) < 3:
                out.append(line)
                continue
            mnt, fstype = fields[1], fields[2]
            if mnt == "/":
                out.append("/dev/vda\t/\text4\tdefaults,errors=remount-ro\t0\t1")
                has_root = True
            elif fstype in _VIRTUAL_FS:
                out.append(line)
            else:
                out.append(f"# understudy clone: disabled: {line}")
                disabled.append(line)
        if not has_root:
            out.insert(0, "/dev/vda\t/\text4\tdefaults,errors=remount-ro\t0\t1")
        tree.mkdirs("etc")
        tree.write_text(tree.resolve("etc") + "/fstab", "\n".join(out) + "\n")
    return disabled


def fix_network(root: Path) -> list[str]:
    """qemu user-net hands out 10.0.2.15 by DHCP; production's static addresses must go
    (the SSH forward reaches the guest only on the user-net address)."""
    done = []
    with Root(root) as tree:
        if tree.is_file("etc/network/interfaces"):
            net = tree.resolve("etc/network")
            production = tree.read_bytes("etc/network/interfaces") or b""
            tree.write_bytes(f"{net}/interfaces.production", production)
            tree.write_text(f"{net}/interfaces",
                            "# understudy clone: production's config is in interfaces.production\n"
                            "auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n")
            if tree.is_dir(f"{net}/interfaces.d"):
                d = tree.resolve(f"{net}/interfaces.d")
                for name in tree.listdir(d):
                    if tree.is_file(f"{d}/{name}"):
                        tree.rename(f"{d}/{name}", name + ".production-disabled")
            done.append("/etc/network/interfaces: eth0 dhcp")
        if tree.is_dir("etc/systemd/network"):
            d = tree.resolve("etc/systemd/network")
            for name in tree.listdir(d):
                if fnmatch.fnmatchcase(name, "*.network"):
                    tree.rename(f"{d}/{name}", name + ".production-disabled")
            tree.write_text(f"{d}/10-understudy-clone.network", "[Match]\nName=eth0 en*\n\n[Network]\nDHCP=yes\n")
            done.append("/etc/systemd/network: DHCP on eth0")
        if tree.is_dir("etc/netplan"):
            d = tree.resolve("etc/netplan")
            for name in tree.listdir(d):
                if fnmatch.fnmatchcase(name, "*.yaml"):
                    tree.rename(f"{d}/{name}", name + ".production-disabled")
            tree.write_text(f"{d}/10-understudy-clone.yaml",
                            "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n")
            done.append("/etc/netplan: DHCP on eth0")
    return done


def _wants_links(tree: Root, sysd: str, units: list[str]) -> list[str]:
    """Enablement symlinks of ``units`` in ``*.wants``/``*.requires`` (paths in the tree). The
    links point at /lib/systemd/... and may dangle in the staged tree: they are found by name."""
    found = []
    for name in tree.listdir(sysd):
        if name.endswith((".wants", ".requires")) and tree.is_dir(f"{sysd}/{name}"):
            d = tree.resolve(f"{sysd}/{name}")
            found += [f"{d}/{u}" for u in units if tree.is_symlink(f"{d}/{u}")]
    return found


def declared_service_lists(root: Path) -> list[tuple[str, Path]]:
    """The plain service lists the host declares in ``SERVICE_LISTS`` (path as declared, file in the tree).

    For inits that are neither systemd nor SysV rc (busybox init, runit wrappers, a vendor's
    own supervisor): the host names the files its init starts services from, one service
    per line, and the clone takes disabled services out of them. Declared paths resolve
    inside the tree, never out of it."""
    with Root(root) as tree:
        decl = tree.read_text(SERVICE_LISTS)
        if decl is None:
            return []
        found = []
        for line in decl.splitlines():
            path = line.strip()
            if not path.startswith("/"):
                continue  # comments, blank lines; a relative path has no meaning here
            try:
                target = tree.resolve(path)
            except ConfinementError:
                continue  # a symlink loop: not a list any init could read either
            if target and tree.is_file(target):
                found.append((path, Path(root) / target))
    return found


def disable_service(root: Path, svc: str) -> list[str]:
    """Disable ``svc`` for every init system present in the tree; returns what was done."""
    done: list[str] = []
    lists = declared_service_lists(root)
    with Root(root) as tree:
        for declared, listed in lists:
            rel = str(listed.relative_to(root))
            lines = (tree.read_text(rel) or "").splitlines()
            kept = [line for line in lines if line.strip() != svc]
            if kept != lines:
                tree.write_text(rel, "".join(line + "\n" for line in kept))
                done.append(f"removed from {declared}")
        # systemd: drop the enablement links and mask the unit so nothing pulls it in
        if tree.is_dir("etc/systemd/system"):
            sysd = tree.resolve("etc/systemd/system")
            unit = svc if re.search(r"\.(service|timer|socket|path|target|mount)$", svc) else f"{svc}.service"
            units = [unit] + ([unit[:-len(".service")] + ".timer"] if unit.endswith(".service") else [])
            for link in _wants_links(tree, sysd, units):
                tree.unlink(link)
                done.append(f"removed {link}")
            st = tree.lstat(f"{sysd}/{unit}")
            if st is not None and not stat.S_ISDIR(st.st_mode):
                tree.unlink(f"{sysd}/{unit}")
            tree.symlink("/dev/null", f"{sysd}/{unit}")
            done.append(f"masked {unit}")
        # sysvinit: what `update-rc.d svc disable` does — S links become K links
        start_link = re.compile(r"^S\d\d" + re.escape(svc) + "$")
        if tree.is_dir("etc"):
            etc = tree.resolve("etc")
            for rc_name in tree.listdir(etc):
                if not (re.fullmatch(r"rc[0-6S]\.d", rc_name) and tree.is_dir(f"{etc}/{rc_name}")):
                    continue
                rc = tree.resolve(f"{etc}/{rc_name}")
                for name in tree.listdir(rc):
                    if start_link.match(name):
                        tree.rename(f"{rc}/{name}", "K" + name[1:])
                        done.append(f"{rc}/{name} -> K")
    return done


@dataclass
class FixupReport:
    host_key: str
    old_hostname: str
    host_keys: dict[str, str]
    fstab_disabled: list[str]
    network: list[str]
    services: dict[str, list[str]]


def fixup_clone(root: Path, options: CloneOptions, worker_key: str, emitter: Emitter) -> FixupReport:
    try:
        old = fix_hostname(root, options.hostname)
        emitter.log(f"hostname: {old or '(none)'} -> {options.hostname}", "info")
        keys = fix_host_keys(root, options.hostname)
        emitter.log(f"new SSH host keys ({', '.join(keys)}); pin {fingerprint(keys['ed25519'])}", "info")
        if worker_key:
            authorize_worker(root, worker_key)
            emitter.log(f"worker key authorized for root ({fingerprint(worker_key)})", "info")
        disabled = fix_fstab(root)
        emitter.log("fstab: / on /dev/vda (ext4)" + (f"; disabled {len(disabled)} line(s) for devices the clone "
                                                     f"does not have" if disabled else ""), "info")
        network = fix_network(root)
        for n in network:
            emitter.log(f"network: {n}", "info")
        services: dict[str, list[str]] = {}
        for svc in options.disable_services:
            services[svc] = disable_service(root, svc)
            emitter.log(f"service {svc}: " + ("; ".join(services[svc]) or
                                              "not enabled on this host (nothing to disable)"),
                        "info" if services[svc] else "stderr")
    except OSError as exc:
        raise FixupError(f"fixing up the clone in {root} failed: {exc}") from exc
    return FixupReport(keys["ed25519"], old, keys, disabled, network, services)


# --------------------------------------------------------------------------- boot check

def _copy_sparse(root: Path, src: Path, dst: Path) -> None:
    """Copy a boot file out of the staged tree (read through the tree, never a path production
    chose), private to root: qemu runs as root here and needs no other reader."""
    try:
        with Root(root) as tree:
            tree.copy_out(str(src.relative_to(root)), dst, mode=0o600)
    except (OSError, ValueError) as exc:
        raise BootFilesMissing(f"copying {src} out of staging failed: {exc}") from exc


def _copy_private(src: Path, dst: Path) -> None:
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with open(src, "rb") as f, os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)


def verify_clone_ssh(info: DomainInfo, host_key: str, options: CloneOptions, timeout: float,
                     emitter: Emitter) -> str:
    """The clone answered: prove it is *our* clone (pinned new key) and, with the worker key,
    that the worker can log in. Returns what the check saw."""
    host, port = info.ssh_host or "127.0.0.1", int(info.ssh_port or 0)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if options.worker_key_path:
                ep = Endpoint(host, port, "root", options.worker_key_path, host_key, label=f"clone {info.name}")
                with Session.connect(ep, timeout=15) as s:
                    name = s.check_output(["hostname"], timeout=30).decode().strip()
                if name != options.hostname:
                    raise BootError(f"clone answered as {name!r}, expected {options.hostname!r}")
                return f"logged in with the worker key; hostname {name}"
            presented = scan_host_key(host, port, timeout=15)
            if presented.split()[:2] != host_key.split()[:2]:
                raise BootError(f"clone {info.name} presented {fingerprint(presented)}, "
                                f"not the pinned {fingerprint(host_key)}")
            return f"host key matches the pin {fingerprint(host_key)}"
        except (HostKeyMismatch, AuthenticationFailed) as exc:
            # sshd is up (the banner came): a wrong key or a refused worker key will not heal
            raise BootError(f"clone {info.name}: {exc}") from exc
        except SSHError as exc:
            last = exc
            time.sleep(1)
    raise BootError(f"clone {info.name} did not accept SSH with its pinned key within {timeout:.0f}s: {last}")


# --------------------------------------------------------------------------- main entry

class _Phases:
    """Emits phases and records their durations."""

    def __init__(self, emitter: Emitter) -> None:
        self.emitter = emitter
        self.timings: dict[str, float] = {}
        self._name: str | None = None
        self._t = 0.0

    def start(self, name: str, *, emit: bool = True) -> None:
        self.stop()
        self._name, self._t = name, time.monotonic()
        if emit:
            self.emitter.phase(name)

    def stop(self) -> None:
        if self._name is not None:
            self.timings[self._name] = round(time.monotonic() - self._t, 3)
            self._name = None


@dataclass
class _Copy:
    """Outcome of the stream + delta passes."""

    first: PassResult
    delta: PassResult
    consistency: dict
    point_in_time: float
    source_clock: float | None


@dataclass
class _Staged:
    """Outcome of the fix-up: the pin and the kernel/initrd copied out of staging."""

    report: FixupReport
    kernel: Path
    initrd: Path | None


@dataclass(frozen=True)
class _StandIn:
    name: str
    hostname: str
    dir: Path
    disk: Path
    kernel: Path
    initrd: Path | None
    host_key: str


class _CloneRun:
    """State of one clone_host call: paths, the libvirt connection, what was created
    (so a failure removes exactly that), phase timings. One method per phase."""

    def __init__(self, source: Endpoint, hypervisor_uri: str, storage_dir: str | Path, options: CloneOptions,
                 emitter: Emitter, cancel: Callable[[], bool] | None) -> None:
        self.source, self.uri, self.options, self.emitter, self.cancel = (
            source, hypervisor_uri, options, emitter, cancel)
        self.storage = Path(storage_dir).resolve()
        self.clone_dir = self.storage / options.name
        self.staging = self.clone_dir / "staging"
        self.phases = _Phases(emitter)
        self.created = {"storage": False, "clone_dir": False, "domain": False, "stand_in_dir": False,
                        "stand_in_domain": False}
        self.stand_in_dir = self.storage / options.stand_in.name if options.stand_in else None
        self.hv: Hypervisor | None = None
        self.mounted: MountedImage | None = None   # the clone's image, mounted at staging while it is filled

    # -- connect
    def open_hypervisor(self) -> Hypervisor:
        try:
            self.hv = Hypervisor(self.uri, self.emitter)
        except HypervisorError as exc:
            raise DefineError(str(exc)) from exc
        try:
            self.hv.info(self.options.name)
        except DomainNotFoundError:
            pass   # the name is free
        else:
            raise CloneExistsError(f"a domain named {self.options.name!r} already exists on {self.uri}; "
                                   f"destroy it first (leftover? see Hypervisor.list_clones())")
        if self.clone_dir.exists():
            raise CloneExistsError(f"{self.clone_dir} already exists (a leftover clone?); destroy_clone() it first")
        if self.options.stand_in is not None:
            try:
                self.hv.info(self.options.stand_in.name)
            except DomainNotFoundError:
                pass
            else:
                raise CloneExistsError(f"a domain named {self.options.stand_in.name!r} already exists on {self.uri}; "
                                       f"destroy it first")
            if self.stand_in_dir.exists():
                raise CloneExistsError(f"{self.stand_in_dir} already exists (a leftover stand-in?); destroy it first")
        return self.hv

    # -- capacity
    def reserve_space(self, facts: SourceFacts) -> None:
        margin = 1 + self.options.headroom_percent / 100
        why_not = "image_build=staging" if self.options.image_build == "staging" else loop_mount_unavailable()
        if why_not is None:
            # the sparse image holds the data once; ext4's metadata comes on top
            needed = int(facts.bytes * margin) + 256 * MiB
            layout = "mounted image"
        else:
            # peak use: staging + the sparse raw ext4 + the qcow2 being converted from it
            needed = int(facts.bytes * margin * 3)
            layout = "staging + image"
        if not self.storage.exists():
            self.storage.mkdir(parents=True)
            self.created["storage"] = True
        try:
            free = Hypervisor.check_capacity(self.storage, needed)
        except CapacityError as exc:
            raise CloneCapacityError(
                f"refusing to clone {self.source}: ~{_human(facts.bytes)} to copy needs {_human(needed)} on the "
                f"hypervisor ({layout}, +{self.options.headroom_percent}% headroom): {exc}") from exc
        self.emitter.log(f"capacity: {_human(free)} free in {self.storage}, ~{_human(needed)} needed", "info")
        # production's files, keys and setuid binaries: readable by root only (qemu runs as root)
        self.clone_dir.mkdir(mode=0o700)
        os.chmod(self.clone_dir, 0o700)
        self.created["clone_dir"] = True
        (self.clone_dir / CLONE_MARKER).write_text(
            f"{self.options.name}\n{self.options.rehearsal_id}\n{time.time():.3f}\n")
        self.staging.mkdir(mode=0o700)
        os.chmod(self.staging, 0o700)
        if why_not is None:
            why_not = self._mount_image(facts)
        if why_not is not None:
            self.emitter.log(f"image build: staging directory {self.staging}, then mke2fs -d + qemu-img convert "
                             f"(up to 3x the host's data on this disk at once): {why_not}", "info")
            if layout == "mounted image":   # the mount failed after the smaller check: check for this layout
                try:
                    Hypervisor.check_capacity(self.storage, int(facts.bytes * margin * 3))
                except CapacityError as exc:
                    raise CloneCapacityError(f"refusing to clone {self.source} through a staging directory: "
                                             f"{exc}") from exc

    def _mount_image(self, facts: SourceFacts) -> str | None:
        """Create and mount the clone's image at staging; returns why not when it cannot be."""
        headroom = max(int(facts.bytes * self.options.headroom_percent / 100), MIN_IMAGE_HEADROOM)
        size = image_size_for(TreeSize(bytes=facts.bytes, apparent=facts.bytes, files=facts.files), headroom)
        try:
            self.mounted = MountedImage.create(self.clone_dir / "disk.raw", self.staging, size=size,
                                               files=facts.files, label=IMAGE_LABEL)
        except ImageError as exc:
            return f"the image could not be loop-mounted ({exc})"
        self.emitter.log(f"image build: tar extracts straight into the clone's ext4 image {self.mounted.raw} "
                         f"({size // MiB} MiB, sparse) loop-mounted at {self.staging} (nosuid,nodev)", "info")
        return None

    # -- stream + delta
    def copy(self, session: Session, facts: SourceFacts) -> _Copy:
        o, em = self.options, self.emitter
        self.phases.start("stream")
        lx, la = local_tar_features()
        xattrs, acls = facts.xattrs and lx, facts.acls and la
        if not xattrs:
            em.log("xattrs not supported by both tars: copying without them", "stderr")
        src_t0 = _source_clock(session)
        point_in_time = time.time()
        em.log(f"point in time: {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(point_in_time))} UTC "
               f"(worker clock); production clock "
               f"{_utc(src_t0) if src_t0 else 'unknown'}", "info")
        transport = pick_transport(o.transport, facts.bytes)
        first = run_tar_pass(self.source, remote_tar_command(o, facts, xattrs=xattrs, acls=acls), self.staging,
                             xattrs=xattrs, acls=acls, emitter=em, stage="stream",
                             total_bytes=facts.bytes + facts.files * 1024, total_files=facts.files,
                             cancel=self.cancel, transport=transport)
        unreadable = sorted(set(first.diagnostics.unreadable))
        if unreadable and not o.allow_unreadable:
            shown = ", ".join(unreadable[:10]) + (f" (+{len(unreadable) - 10} more)" if len(unreadable) > 10 else "")
            raise UnreadableFilesError(
                f"{len(unreadable)} path(s) on {self.source} could not be read as {self.source.user}: {shown} — "
                f"clone as root, or add them to the exclude list (or allow_unreadable) to clone without them",
                unreadable)
        em.log(f"stream: {_human(first.bytes)}, {len(first.members)} entries in {first.seconds:.1f}s "
               f"({_human(first.bytes / max(first.seconds, 1e-6))}/s)", "info")
        _check(self.cancel)

        self.phases.start("delta")
        # production stamped the mtimes, so the window is on production's clock
        newer = (src_t0 if src_t0 is not None else point_in_time) - DELTA_CLOCK_MARGIN
        # The delta lands in an empty directory and is merged in without following links: extracted
        # over staging, a member "x/f" would be written through a symlink "x" that the first pass
        # put there (tar guards links within one archive, not those already on disk).
        if self.mounted is not None:
            # on the image's own file system (the merge renames), under a name production cannot
            # have chosen (made after the first pass, O_EXCL-like mkdir)
            delta_dir = Path(tempfile.mkdtemp(prefix=".understudy-delta-", dir=self.staging))
        else:
            delta_dir = self.clone_dir / "delta"
            delta_dir.mkdir(mode=0o700)
        delta = run_tar_pass(self.source, remote_tar_command(o, facts, newer_than=newer, xattrs=xattrs, acls=acls),
                             delta_dir, xattrs=xattrs, acls=acls, emitter=em, stage="delta", total_bytes=None,
                             total_files=None, cancel=self.cancel, transport=transport)
        # what the window took although the first pass already had it as it is (a clock in whole
        # seconds widens the window) did not change during the copy
        unchanged = identical_entries(delta_dir, self.staging)
        merge_tree(delta_dir, self.staging)
        delta_dir.rmdir()
        gone = sorted(list_staging(self.staging) - list_source(session, o, facts)
                      - ({b"./lost+found"} if self.mounted is not None else set()))   # e2fsck's, made by mkfs
        remove_vanished(self.staging, gone)
        unreadable = sorted(set(unreadable) | set(delta.diagnostics.unreadable))
        consistency = build_consistency(first, delta, [_abs(os.fsdecode(g)) for g in gone], unreadable,
                                        point_in_time, o.pre_command, unchanged=unchanged)
        em.log(consistency["summary"], "info")
        em.data("consistency", consistency)
        return _Copy(first, delta, consistency, point_in_time, src_t0)

    # -- fixup
    def fix_up(self, worker_key: str) -> _Staged:
        try:
            boot = find_boot_files(self.staging)
        except ImageError as exc:
            raise BootFilesMissing(f"{self.source}: {exc}") from exc
        report = fixup_clone(self.staging, self.options, worker_key, self.emitter)
        kernel = self.clone_dir / "vmlinuz"
        initrd = self.clone_dir / "initrd.img" if boot.initrd else None
        _copy_sparse(self.staging, boot.kernel, kernel)
        if boot.initrd and initrd:
            _copy_sparse(self.staging, boot.initrd, initrd)
        return _Staged(report, kernel, initrd)

    # -- image
    def build_image(self, facts: SourceFacts) -> DiskImage:
        disk = self.clone_dir / "disk.qcow2"
        if self.mounted is not None:
            return self._finish_mounted_image(disk)
        headroom = max(int(facts.bytes * self.options.headroom_percent / 100), MIN_IMAGE_HEADROOM)
        try:
            return build_disk(self.staging, disk, self.emitter, headroom=headroom, label=IMAGE_LABEL)
        except DiskFullError as exc:
            raise CloneCapacityError(f"building the clone's disk: {exc}") from exc
        except ImageError as exc:
            raise ImageBuildError(f"building the clone's disk: {exc}") from exc

    def _finish_mounted_image(self, disk: Path) -> DiskImage:
        """Unmount the filled image; it becomes the read-only raw base of the clone's qcow2 overlay."""
        assert self.mounted is not None
        em = self.emitter
        em.phase("image")
        tree = estimate_tree_size(self.staging)
        t0 = time.monotonic()
        try:
            self.mounted.unmount()
        except ImageError as exc:
            raise ImageBuildError(f"finishing the clone's disk: {exc}") from exc
        unmount_s = time.monotonic() - t0
        raw = self.mounted.raw
        os.chmod(raw, 0o400)
        t1 = time.monotonic()
        try:
            create_overlay(raw, disk, backing_format="raw")
        except ImageError as exc:
            raise ImageBuildError(f"creating the clone's overlay on {raw}: {exc}") from exc
        overlay_s = time.monotonic() - t1
        allocated = os.stat(raw).st_blocks * 512
        em.log(f"image: {raw} unmounted in {unmount_s:.2f}s ({tree.files} inodes, {allocated / MiB:.1f} MiB "
               f"allocated of {self.mounted.size // MiB} MiB); overlay {disk} on it (no copy)", "info")
        em.data("disk_image", {"path": str(disk), "base": str(raw), "virtual_size": self.mounted.size,
                               "qcow2_bytes": disk.stat().st_size, "files": tree.files, "mkfs_seconds": 0.0,
                               "convert_seconds": round(overlay_s, 3), "unmount_seconds": round(unmount_s, 3)})
        return DiskImage(path=disk, virtual_size=self.mounted.size, qcow2_bytes=disk.stat().st_size, tree=tree,
                         mkfs_seconds=0.0, convert_seconds=overlay_s)

    # -- stand-in: the same point in time on a copy-on-write overlay, its own identity
    def prepare_stand_in(self, disk: Path, staged: _Staged) -> _StandIn:
        """Turn the built disk into the read-only base of two overlays: the workbench's
        (at the same path, so nothing else changes for it) and the stand-in's, into which
        the stand-in's hostname and fresh host keys are written."""
        o, em = self.options, self.emitter
        assert o.stand_in is not None and self.stand_in_dir is not None
        base = disk.with_name("base.qcow2")
        os.rename(disk, base)
        os.chmod(base, 0o400)
        create_overlay(base, disk)
        sdir = self.stand_in_dir
        sdir.mkdir(mode=0o700)
        self.created["stand_in_dir"] = True
        (sdir / CLONE_MARKER).write_text(f"{o.stand_in.name}\n{o.rehearsal_id}\n{time.time():.3f}\n")
        overlay = create_overlay(base, sdir / "disk.qcow2")
        kernel = sdir / "vmlinuz"
        # the workbench's copies are ours (copied out of the tree already): a plain private copy
        _copy_private(staged.kernel, kernel)
        initrd = None
        if staged.initrd:
            initrd = sdir / "initrd.img"
            _copy_private(staged.initrd, initrd)
        hostname = o.stand_in.hostname
        keys, files = {}, [ImageFile("/etc/hostname", f"{hostname}\n".encode())]
        for kind in sorted(staged.report.host_keys):
            private, public = generate_host_key(kind, f"root@{hostname}")
            keys[kind] = " ".join(public.decode().split()[:2])
            files += [ImageFile(f"/etc/ssh/ssh_host_{kind}_key", private, 0o600),
                      ImageFile(f"/etc/ssh/ssh_host_{kind}_key.pub", public)]
        try:
            hosts = edit_image(overlay, [], read=["/etc/hosts"]).get("/etc/hosts", b"")
            renamed = re.sub(rb"(?<![\w.-])" + re.escape(o.hostname.encode()) + rb"(?![\w.-])",
                             hostname.encode(), hosts)
            edit_image(overlay, files + [ImageFile("/etc/hosts", renamed)])
        except ImageError as exc:
            raise ImageBuildError(f"writing the stand-in's identity into its disk: {exc}") from exc
        em.log(f"stand-in {o.stand_in.name}: overlay {overlay} on {base} (no second copy); hostname {hostname}; "
               f"new host keys, pin {fingerprint(keys['ed25519'])}", "info")
        return _StandIn(o.stand_in.name, hostname, sdir, overlay, kernel, initrd, keys["ed25519"])

    # -- define
    def define(self, staged: _Staged, disk: Path, domain_type: str) -> tuple[CloneDomainSpec, DomainInfo]:
        o = self.options
        spec = CloneDomainSpec(name=o.name, disk_path=disk, kernel_path=staged.kernel, initrd_path=staged.initrd,
                               ssh_port=free_port(), serial_log=self.clone_dir / "serial.log",
                               memory_mib=o.memory_mib, vcpus=o.vcpus, cmdline=o.cmdline, domain_type=domain_type,
                               rehearsal_id=o.rehearsal_id, clone_id=o.name)
        return spec, self._start(spec, "domain")

    def define_stand_in(self, stand: _StandIn, domain_type: str) -> tuple[CloneDomainSpec, DomainInfo]:
        o = self.options
        spec = CloneDomainSpec(name=stand.name, disk_path=stand.disk, kernel_path=stand.kernel,
                               initrd_path=stand.initrd, ssh_port=free_port(), serial_log=stand.dir / "serial.log",
                               memory_mib=o.memory_mib, vcpus=o.vcpus, cmdline=o.cmdline, domain_type=domain_type,
                               rehearsal_id=o.rehearsal_id, clone_id=stand.name)
        return spec, self._start(spec, "stand_in_domain")

    def _start(self, spec: CloneDomainSpec, created_key: str) -> DomainInfo:
        assert self.hv is not None
        self.created[created_key] = True   # before the call: a half-started domain is ours to remove
        try:
            return self.hv.define_and_start(spec, port_retries=3)
        except HypervisorError as exc:
            raise DefineError(str(exc)) from exc

    # -- boot
    def boot(self, info: DomainInfo, host_key: str, options: CloneOptions | None = None,
             serial_log: Path | None = None) -> bool:
        assert self.hv is not None
        o = options or self.options
        if self.hv.is_test_driver:
            self.emitter.log(f"{self.uri} is libvirt's test driver: the domain is defined and 'running' there but "
                             f"nothing boots; skipping the SSH wait (booted=False)", "info")
            return False
        t_boot = time.monotonic()
        try:
            self.hv.wait_until_ssh(info, timeout=o.boot_timeout)
            seen = verify_clone_ssh(info, host_key, o, max(30.0, o.boot_timeout - (time.monotonic() - t_boot)),
                                    self.emitter)
        except (HypervisorError, ReadinessTimeout, BootError) as exc:
            tail = tail_file(serial_log, 15) if serial_log else ""
            raise BootError(f"{o.name} did not come up: {exc}" + (f"\nserial log (last lines):\n{tail}" if tail else "")
                            ) from exc
        self.emitter.log(f"clone {o.name} is up on {info.ssh_host}:{info.ssh_port}: {seen}", "info")
        return True

    def fail(self, exc: BaseException) -> None:
        self.phases.stop()
        where = list(self.phases.timings)[-1] if self.phases.timings else "connect"
        self.emitter.log(f"clone failed in phase {where}: {type(exc).__name__}: {exc}; cleaning up", "stderr")
        if self.mounted is not None:
            # before the directory goes: a tree still mounted there would be walked, and its
            # mount point could not be removed
            for problem in self.mounted.discard():
                self.emitter.log(f"cleanup: {problem}", "stderr")
        if self.options.stand_in is not None:
            _cleanup(self.hv, self.options.stand_in.name, self.stand_in_dir, self.storage,
                     {"domain": self.created["stand_in_domain"], "clone_dir": self.created["stand_in_dir"],
                      "storage": False}, self.emitter)
        _cleanup(self.hv, self.options.name, self.clone_dir, self.storage, self.created, self.emitter)


def clone_host(source: Endpoint, *, hypervisor_uri: str, storage_dir: str | Path, options: CloneOptions,
               emitter: Emitter | None = None, cancel: Callable[[], bool] | None = None) -> CloneResult:
    """Clone the running host ``source`` into a libvirt domain ``options.name``.

    Layout: ``storage_dir/<name>/{disk.raw (read-only base), disk.qcow2, staging/ (empty mount point), vmlinuz,
    initrd.img, serial.log}`` with a mounted image; ``{staging/, disk.qcow2, ...}`` with a staging directory.
    ``cancel`` is polled between phases and during the streams. On any failure everything
    this call created is removed before the exception propagates.
    """
    emitter = emitter or NullEmitter()
    _validate(options)
    worker_key = _worker_public_key(options)
    run = _CloneRun(source, hypervisor_uri, storage_dir, options, emitter, cancel)
    ph = run.phases
    t_all = time.monotonic()
    try:
        ph.start("connect")
        run.open_hypervisor()
        domain_type = detect_accel(options.domain_type) if options.domain_type else detect_accel()
        with Session.connect(source) as session:   # SSHError subclasses propagate unchanged
            emitter.log(f"connected to {source} (host key {fingerprint(source.host_key)})", "info")
            ph.start("estimate")
            facts = estimate_source(session, list(options.exclude), emitter)
            emitter.data("estimate", {"bytes": facts.bytes, "files": facts.files, "tar": facts.tar_version})
            ph.start("capacity")
            run.reserve_space(facts)
            _check(cancel)
            if options.pre_command:
                ph.start("pre_command")
                _run_hook(session, options.pre_command, "pre_command", options.hook_timeout, emitter)
                _check(cancel)
            copied = run.copy(session, facts)
            _check(cancel)
            if options.post_command:
                ph.start("post_command")
                _run_hook(session, options.post_command, "post_command", options.hook_timeout, emitter)
        ph.start("fixup")
        staged = run.fix_up(worker_key)
        _check(cancel)
        ph.start("image", emit=False)   # build_disk emits "image" itself
        image = run.build_image(facts)
        _check(cancel)
        stand = None
        if options.stand_in is not None:
            ph.start("stand_in")
            stand = run.prepare_stand_in(image.path, staged)
            _check(cancel)
        ph.start("define")
        spec, info = run.define(staged, image.path, domain_type)
        stand_spec, stand_info = run.define_stand_in(stand, domain_type) if stand else (None, None)
        ph.start("boot")
        booted = run.boot(info, staged.report.host_key, serial_log=spec.serial_log)
        stand_booted = False
        if stand is not None:
            stand_booted = run.boot(stand_info, stand.host_key, replace(options, name=stand.name,
                                                                        hostname=stand.hostname),
                                    serial_log=stand_spec.serial_log)
        ph.stop()
        ph.timings["total"] = round(time.monotonic() - t_all, 3)
        r = staged.report
        result = CloneResult(
            domain_name=options.name, disk_path=str(image.path), staging_dir=str(run.staging),
            kernel_path=str(staged.kernel), initrd_path=str(staged.initrd) if staged.initrd else None,
            ssh_host=info.ssh_host or "127.0.0.1", ssh_port=int(info.ssh_port or spec.ssh_port), user="root",
            host_key=r.host_key, point_in_time=copied.point_in_time, consistency=copied.consistency,
            bytes=copied.first.bytes + copied.delta.bytes, files=image.tree.files, timings=ph.timings,
            booted=booted, clone_dir=str(run.clone_dir), serial_log=str(spec.serial_log), domain_type=domain_type,
            source_point_in_time=copied.source_clock,
            fixups={"old_hostname": r.old_hostname, "host_keys": r.host_keys, "fstab_disabled": r.fstab_disabled,
                    "network": r.network, "services": r.services})
        if stand is not None:
            result.stand_in = {
                "domain_name": stand.name, "hostname": stand.hostname, "clone_dir": str(stand.dir),
                "disk_path": str(stand.disk), "base_path": str(image.path.with_name("base.qcow2")),
                "kernel_path": str(stand.kernel), "ssh_host": stand_info.ssh_host or "127.0.0.1",
                "ssh_port": int(stand_info.ssh_port or stand_spec.ssh_port), "user": "root",
                "host_key": stand.host_key, "serial_log": str(stand_spec.serial_log), "booted": stand_booted}
        emitter.data("clone", {k: v for k, v in result.to_dict().items() if k != "consistency"})
        return result
    except BaseException as exc:
        run.fail(exc)
        raise
    finally:
        if run.hv is not None:
            run.hv.close()


def parse_clock(text: str) -> float | None:
    """`date +%s.%N` output; busybox date prints a literal '%N' (or 'N'): keep the seconds."""
    m = re.match(r"\s*(\d+)(\.\d+)?", text)
    if not m:
        return None
    return float(m.group(1) + (m.group(2) or ""))


def _source_clock(session: Session) -> float | None:
    try:
        return parse_clock(session.check_output("date +%s.%N", timeout=30).decode())
    except CommandFailed:
        return None


def _run_hook(session: Session, command: str, what: str, timeout: float, emitter: Emitter) -> None:
    emitter.log(f"{what}: {command}", "info")
    try:
        res = session.run(command, emitter=emitter, timeout=timeout, expect_exit=0)
    except CommandFailed as exc:
        raise HookFailed(f"{what} failed: {exc}") from exc
    except SSHError as exc:
        raise HookFailed(f"{what} did not complete: {exc}") from exc
    emitter.log(f"{what}: done in {res.duration:.1f}s", "info")


def _cleanup(hv: Hypervisor | None, name: str, clone_dir: Path, storage: Path, created: dict,
             emitter: Emitter) -> None:
    """Remove only what this run created; never raises (the original error matters more)."""
    if created["domain"] and hv is not None:
        try:
            hv.destroy(name, remove_disk=False)
        except HypervisorError as exc:
            emitter.log(f"cleanup: could not remove domain {name}: {exc}", "stderr")
    if created["clone_dir"]:
        shutil.rmtree(clone_dir, ignore_errors=True)
        if clone_dir.exists():
            emitter.log(f"cleanup: {clone_dir} could not be removed completely", "stderr")
    if created["storage"]:
        try:
            storage.rmdir()
        except OSError:
            pass


def destroy_clone(hypervisor_uri: str, target: CloneResult | str, *, storage_dir: str | Path | None = None,
                  emitter: Emitter | None = None) -> list[str]:
    """Remove a clone: the domain (stopped, undefined), and its directory (disk, kernel
    copies, serial log, staging). ``target`` is a CloneResult or a domain name (then
    ``storage_dir`` locates ``storage_dir/<name>``). Only a directory carrying our marker
    file is deleted. Returns what was removed; idempotent."""
    emitter = emitter or NullEmitter()
    if isinstance(target, CloneResult):
        name, clone_dir = target.domain_name, Path(target.clone_dir or Path(target.disk_path).parent)
    else:
        name = target
        if storage_dir is None:
            raise CloneSpecError("destroy_clone(name) needs storage_dir to find the clone's files")
        clone_dir = Path(storage_dir) / name
    removed: list[str] = []
    try:
        with Hypervisor(hypervisor_uri, emitter) as hv:
            if hv.destroy(name, remove_disk=False):
                removed.append(f"domain {name}")
    except HypervisorError as exc:
        raise CloneError(f"destroying domain {name} failed: {exc}") from exc
    if clone_dir.is_dir():
        if not (clone_dir / CLONE_MARKER).is_file():
            raise CloneError(f"{clone_dir} has no {CLONE_MARKER} marker: not deleting a directory "
                             f"understudy did not create")
        # a worker that died while the clone's image was mounted at staging left the mount and its loop device
        try:
            for what in release_mounts_under(clone_dir):
                removed.append(what)
                emitter.log(f"released {what} left by an interrupted clone", "info")
        except ImageError as exc:
            raise CloneError(f"cannot remove {clone_dir}: {exc}") from exc
        shutil.rmtree(clone_dir)
        removed.append(str(clone_dir))
        emitter.log(f"removed {clone_dir} (disk, kernel, staging)", "info")
    return removed


__all__ = [
    "CloneOptions", "CloneResult", "StandInOptions", "IMAGE_BUILDS", "clone_host", "destroy_clone",
    "CloneError", "CloneSpecError", "CloneExistsError", "SourceError", "TarMissingError", "HookFailed",
    "CloneCapacityError", "StreamError", "UnreadableFilesError", "FixupError", "BootFilesMissing",
    "ImageBuildError", "DefineError", "BootError", "CloneCancelled",
    "TarDiagnostics", "parse_estimate", "remote_tar_command", "fixup_clone", "disable_service", "fix_fstab",
    "declared_service_lists", "SERVICE_LISTS",
]
