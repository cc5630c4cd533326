"""Build a small but real Linux root filesystem from this Debian host's own binaries.

Why: the P2V clone, the diff and the sync-back must be exercised against a host whose
``/`` is *not* the CI machine's ``/`` (tar of ``/`` must stream a known tree), yet we
cannot download distribution images in CI. Copying busybox (static), GNU tar, python3,
OpenSSH and their shared libraries (resolved with ``ldd``) gives a ~40 MB tree that
runs chrooted under its own ``sshd`` and can also be booted as a VM (busybox init).

The expensive part (a "base" tree) is built once into a cache directory keyed by a hash
of the inputs; each host then gets a ``cp -a --reflink=auto`` copy.

No Django import here: ``manage.py demo`` reuses this module.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

BASE_FORMAT_VERSION = "5"
PYTHON_VERSION = "3.11"
HOST_PYTHON = Path(f"/usr/bin/python{PYTHON_VERSION}")
HOST_STDLIB = Path(f"/usr/lib/python{PYTHON_VERSION}")
# Large or useless-in-a-server parts of the stdlib.
STDLIB_SKIP = {
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "__pycache__",
    f"config-{PYTHON_VERSION}-x86_64-linux-gnu", "lib2to3", "pydoc_data",
    "site-packages", "dist-packages",
}
BUSYBOX_CANDIDATES = ("/usr/bin/busybox", "/bin/busybox")
# (host path, required?)
CORE_BINARIES: tuple[tuple[str, bool], ...] = (
    ("/usr/bin/tar", True),
    ("/usr/sbin/sshd", True),
    ("/usr/bin/ssh-keygen", True),
    ("/usr/lib/openssh/sftp-server", True),
    # Debian's busybox is built "standalone/prefer applets": its ash (and applets that exec,
    # like xargs/env/nice/timeout) would run busybox tar instead of GNU tar. dash as /bin/sh
    # plus the GNU versions of the exec-ing tools keep GNU tar reachable by name.
    ("/usr/bin/dash", True),
    ("/usr/bin/env", False),
    ("/usr/bin/nice", False),
    ("/usr/bin/timeout", False),
    ("/usr/bin/nohup", False),
    ("/usr/bin/xargs", False),
    ("/usr/bin/find", False),
    ("/usr/bin/ionice", False),
    ("/usr/bin/xxhsum", False),
    ("/usr/bin/b3sum", False),
)
HOST_FILES: tuple[tuple[str, bool], ...] = (
    ("/etc/ssh/moduli", False),
    ("/etc/protocols", False),
    ("/etc/services", False),
)
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class RootfsError(RuntimeError):
    """The host lacks something needed to build the tree (message says what)."""


@dataclass(frozen=True)
class BuildStats:
    """Numbers of the last build, for reports and benchmarks."""

    path: Path
    cached_base: bool
    base_seconds: float
    copy_seconds: float
    size_bytes: int


LAST_BUILD: BuildStats | None = None


def cache_root() -> Path:
    """``$UNDERSTUDY_CACHE`` or ``~/.cache/understudy``."""
    env = os.environ.get("UNDERSTUDY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "understudy"


def _find_busybox() -> str:
    for cand in BUSYBOX_CANDIDATES:
        if os.path.exists(cand):
            out = subprocess.run(["ldd", cand], capture_output=True, text=True)
            if "not a dynamic executable" in (out.stdout + out.stderr) or "statically linked" in (
                out.stdout + out.stderr
            ):
                return cand
    raise RootfsError("a static busybox is required: apt-get install -y busybox-static")


class _Tree:
    """Copies host paths into ``root`` reproducing symlink chains (merged-/usr aware)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done: set[str] = set()

    def dest(self, host_path: str) -> Path:
        return self.root / host_path.lstrip("/")

    def ensure_dir(self, host_dir: str) -> None:
        """Create ``host_dir`` inside the tree, replicating host symlinks like /lib -> usr/lib."""
        parts = Path(host_dir).parts[1:]
        cur = "/"
        for part in parts:
            cur = os.path.join(cur, part)
            d = self.dest(cur)
            if os.path.islink(cur):
                if not d.is_symlink() and not d.exists():
                    os.symlink(os.readlink(cur), d)
                target = os.path.normpath(os.path.join(os.path.dirname(cur), os.readlink(cur)))
                self.ensure_dir(target)
            elif not d.exists() and not d.is_symlink():
                d.mkdir(mode=0o755)

    def install(self, host_path: str) -> None:
        """Copy one file (following and reproducing symlinks) into the tree."""
        host_path = os.path.normpath(host_path)
        if host_path in self.done:
            return
        self.done.add(host_path)
        self.ensure_dir(os.path.dirname(host_path))
        # Resolve the parent through the tree's symlinks the same way the host does.
        real_parent = os.path.realpath(os.path.dirname(host_path))
        name = os.path.basename(host_path)
        d = self.dest(os.path.join(real_parent, name))
        src = os.path.join(real_parent, name)
        self.ensure_dir(real_parent)
        if os.path.islink(src):
            link = os.readlink(src)
            if not d.is_symlink() and not d.exists():
                os.symlink(link, d)
            self.install(os.path.normpath(os.path.join(real_parent, link)))
        elif os.path.isfile(src):
            if not d.exists():
                shutil.copy2(src, d)
        else:
            raise RootfsError(f"cannot install {host_path}: not a file")

    def install_with_libs(self, binary: str) -> None:
        """Install an ELF binary plus every shared library ``ldd`` resolves, and the loader."""
        self.install(binary)
        for lib in ldd(binary):
            self.install(lib)


_LDD_RE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def ldd(binary: str) -> list[str]:
    """Absolute paths of the shared objects ``binary`` needs (empty for static binaries)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    text = out.stdout + out.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if out.returncode != 0:
        raise RootfsError(f"ldd {binary} failed: {text.strip()}")
    missing = [line.split()[0] for line in text.splitlines() if "=> not found" in line]
    if missing:
        raise RootfsError(f"{binary}: missing shared libraries {missing}")
    return _LDD_RE.findall(text)


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    os.chmod(p, mode)


SSHD_CONFIG = """\
# understudy test host: works chrooted (per-namespace sshd) and booted as a VM.
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
UseDNS no
PidFile /run/sshd.pid
SetEnv PATH={path}
Subsystem sftp /usr/lib/openssh/sftp-server
""".format(path=ROOT_PATH)

INITTAB = """\
::sysinit:/etc/init.d/rcS
ttyS0::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/rcK
"""

RCS = r"""#!/bin/sh
# Boot script for busybox init when this tree runs as a VM (qemu user-net: 10.0.2.15/24 gw 10.0.2.2).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -o remount,rw / 2>/dev/null
[ -f /etc/hostname ] && hostname -F /etc/hostname
ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
  ip link set eth0 up
  if ! udhcpc -i eth0 -n -q -t 3 -T 2 -s /usr/share/udhcpc/default.script >/dev/null 2>&1; then
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
  fi
fi
mkdir -p /run/sshd /var/log /root/.ssh
chmod 700 /root/.ssh
[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
if [ -f /etc/understudy/services.enabled ]; then
  while read -r svc; do
    case "$svc" in ''|'#'*) continue;; esac
    if [ -x "/etc/init.d/$svc" ]; then "/etc/init.d/$svc" start; else "$svc-service" start; fi
  done < /etc/understudy/services.enabled
fi
# sshd last: a VM that answers SSH has started its services, so the first step after the
# boot (e.g. disabling one) does not race the service's own start
/usr/sbin/sshd -E /var/log/sshd.log
echo "understudy: boot complete" > /dev/console
"""

RCK = r"""#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
[ -f /etc/understudy/services.enabled ] && while read -r svc; do
  case "$svc" in ''|'#'*) continue;; esac
  "$svc-service" stop
done < /etc/understudy/services.enabled
killall sshd 2>/dev/null
sync
umount -a -r 2>/dev/null
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
# Minimal udhcpc hook: configure the lease on $interface.
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via ${router%% *} dev "$interface"
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done ;;
esac
exit 0
"""


def _write_etc(root: Path, hostname: str) -> None:
    _write(root, "/etc/passwd",
           "root:x:0:0:root:/root:/bin/sh\n"
           "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
           "sshd:x:100:65534:sshd privsep:/run/sshd:/bin/false\n"
           "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    _write(root, "/etc/group", "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n")
    # "*" (not "!"): with UsePAM no, sshd treats a "!"-prefixed hash as a locked account.
    _write(root, "/etc/shadow",
           "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
           "sshd:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0o640)
    _write(root, "/etc/hostname", hostname + "\n")
    _write(root, "/etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost\n")
    _write(root, "/etc/fstab",
           "# <device> <mount point> <type> <options> <dump> <pass>\n"
           "/dev/vda\t/\text4\tdefaults\t0\t1\n"
           "proc\t/proc\tproc\tdefaults\t0\t0\n")
    _write(root, "/etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n")
    _write(root, "/etc/resolv.conf", "")
    _write(root, "/etc/profile", f"export PATH={ROOT_PATH}\nexport PS1=\"$(hostname):# \"\n")
    _write(root, "/etc/shells", "/bin/sh\n/bin/ash\n")
    _write(root, "/etc/os-release",
           'PRETTY_NAME="understudy test host (Debian userland)"\nNAME="understudy-testhost"\nID=understudy\n')
    _write(root, "/etc/ssh/sshd_config", SSHD_CONFIG)
    _write(root, "/etc/inittab", INITTAB)
    _write(root, "/etc/init.d/rcS", RCS, 0o755)
    _write(root, "/etc/init.d/rcK", RCK, 0o755)
    _write(root, "/usr/share/udhcpc/default.script", UDHCPC_SCRIPT, 0o755)
    _write(root, "/etc/understudy/services.enabled", "")
    # rcS/rcK start what services.enabled lists; declaring it lets a clone disable services in it
    _write(root, "/etc/understudy/service-lists", "/etc/understudy/services.enabled\n")


def _install_busybox(tree: _Tree) -> None:
    bb = _find_busybox()
    tree.install(bb)
    target = "/" + os.path.relpath(os.path.realpath(bb), "/")
    applets = subprocess.run([bb, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    for rel in applets:
        if "/" not in rel:
            continue  # "linuxrc" at the top level: an initrd relic, not wanted in /
        link = tree.root / rel
        # rel may go through merged-usr symlinks (bin -> usr/bin): resolve inside the tree.
        parent = Path(os.path.realpath(tree.root / os.path.dirname(rel)))
        parent.mkdir(parents=True, exist_ok=True)
        link = parent / os.path.basename(rel)
        if not link.exists() and not link.is_symlink():
            os.symlink(target, link)


def _install_python(tree: _Tree) -> None:
    if not HOST_PYTHON.exists() or not HOST_STDLIB.is_dir():
        raise RootfsError(f"{HOST_PYTHON} and {HOST_STDLIB} are required: apt-get install -y python3")
    tree.install_with_libs(str(HOST_PYTHON))
    bindir = tree.dest("/usr/bin")
    for name in ("python3",):
        if not (bindir / name).exists():
            os.symlink(HOST_PYTHON.name, bindir / name)
    dest = tree.dest(str(HOST_STDLIB))
    shutil.copytree(HOST_STDLIB, dest, symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in STDLIB_SKIP],
                    dirs_exist_ok=True)
    # Shared libraries of the C extension modules (libcrypto for hashlib, libffi, libsqlite3 ...).
    dynload = HOST_STDLIB / "lib-dynload"
    for so in sorted(dynload.glob("*.so")):
        try:
            libs = ldd(str(so))
        except RootfsError:
            # An optional extension whose library is absent on this host (e.g. _tkinter): drop it.
            (dest / "lib-dynload" / so.name).unlink(missing_ok=True)
            continue
        for lib in libs:
            tree.install(lib)


def _install_minidb(root: Path) -> None:
    from . import minidb

    minidb.install_into(root)


def _base_key(extra_binaries: Sequence[str]) -> str:
    """Hash of everything that determines the base tree, so a changed input rebuilds it."""
    h = hashlib.sha256(BASE_FORMAT_VERSION.encode())
    inputs = [_find_busybox(), str(HOST_PYTHON)] + [b for b, _ in CORE_BINARIES] + list(extra_binaries)
    for path in inputs:
        try:
            st = os.stat(path)
            h.update(f"{path}:{st.st_size}:{int(st.st_mtime)}".encode())
        except FileNotFoundError:
            h.update(f"{path}:absent".encode())
    h.update(_SOURCES)
    return h.hexdigest()[:16]


def _read_sources() -> bytes:
    here = Path(__file__).parent
    return b"".join(src.read_bytes() for src in sorted([here / "rootfs.py", *(here / "minidb").glob("*.py")]))


# Read once, when this code is loaded: a process still running older code must not compute the
# key of newer sources and then build (and cache under that key) a base from its older code.
_SOURCES = _read_sources()


def _build_base_tree(root: Path, extra_binaries: Sequence[str]) -> None:
    root.mkdir(parents=True)
    os.chmod(root, 0o755)
    tree = _Tree(root)
    # merged-/usr layout like the Debian host
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/local/bin", "usr/local/sbin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        os.symlink(target, root / link)
    for path, required in CORE_BINARIES:
        if os.path.exists(path):
            tree.install_with_libs(path)
        elif required:
            raise RootfsError(f"{path} is required: apt-get install -y openssh-server tar")
    for path in extra_binaries:
        if not os.path.exists(path):
            raise RootfsError(f"extra binary {path} does not exist on this host")
        tree.install_with_libs(path)
    for path, required in HOST_FILES:
        if os.path.exists(path):
            tree.install(path)
        elif required:
            raise RootfsError(f"{path} is required")
    _install_python(tree)
    os.symlink("dash", root / "usr" / "bin" / "sh")
    _install_busybox(tree)  # last: applets only fill names the real tools (GNU tar ...) did not take
    for d, mode in (("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("run", 0o755), ("tmp", 0o1777),
                    ("boot", 0o755), ("root", 0o700), ("root/.ssh", 0o700), ("var/log", 0o755),
                    ("var/tmp", 0o1777), ("mnt", 0o755), ("srv", 0o755), ("opt", 0o755), ("home", 0o755)):
        p = root / d
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, mode)
    _write_etc(root, "testhost")
    _install_minidb(root)
    _precompile(root)


def _precompile(root: Path) -> None:
    """Byte-compile the stdlib and minidb once in the base, so each host's first imports are fast."""
    targets = [str(root / "usr" / "lib" / f"python{PYTHON_VERSION}"), str(root / "opt" / "minidb")]
    proc = subprocess.run([str(HOST_PYTHON), "-m", "compileall", "-q", "-j", "0", "-s", str(root), "-p", "/",
                           *targets], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RootfsError(f"compileall failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def base_rootfs(extra_binaries: Sequence[str] = ()) -> tuple[Path, bool, float]:
    """Return (path, was_cached, seconds) of the cached base tree, building it if needed.

    Concurrent builders (pytest-xdist, demo + tests) serialise on a lock file; the tree is
    built in a temp dir and renamed into place so a half-built base is never used.
    """
    cache = cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    key = _base_key(extra_binaries)
    final = cache / f"rootfs-{key}"
    t0 = time.monotonic()
    if final.is_dir():
        return final, True, time.monotonic() - t0
    with open(cache / f"rootfs-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_dir():
            return final, True, time.monotonic() - t0
        tmp = Path(tempfile.mkdtemp(prefix=f"rootfs-{key}.building.", dir=cache))
        try:
            _build_base_tree(tmp / "root", extra_binaries)
            os.rename(tmp / "root", final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _prune_stale_bases(cache, keep=final)
    return final, False, time.monotonic() - t0


STALE_BASE_SECONDS = 6 * 3600


def _prune_stale_bases(cache: Path, keep: Path) -> None:
    """Remove bases of other (older) inputs not touched for hours: each is ~55 MB.

    Only bases older than STALE_BASE_SECONDS go, so a session still running older code
    that is copying its base right now is not pulled out from under.
    """
    now = time.time()
    for old in cache.glob("rootfs-*"):
        if old == keep or not old.is_dir() or ".building." in old.name:
            continue
        try:
            if now - old.stat().st_mtime < STALE_BASE_SECONDS:
                continue
        except FileNotFoundError:
            continue
        shutil.rmtree(old, ignore_errors=True)
        old.with_name(old.name + ".lock").unlink(missing_ok=True)


def tree_size(path: Path) -> int:
    """Apparent size in bytes of regular files under ``path`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            total += st.st_size
    return total


def _write_filler(root: Path, filler_mb: int) -> None:
    """Incompressible files (1 MiB .. 8 MiB each) under /srv/filler for benchmark-sized hosts."""
    filler = root / "srv" / "filler"
    filler.mkdir(parents=True, exist_ok=True)
    remaining = filler_mb
    i = 0
    while remaining > 0:
        chunk = min(8, remaining)
        with open(filler / f"blob-{i:04d}.bin", "wb") as fh:
            for _ in range(chunk):
                fh.write(os.urandom(1 << 20))
        remaining -= chunk
        i += 1


def build_rootfs(
    dest: Path,
    *,
    filler_mb: int = 0,
    extra_binaries: Iterable[str] = (),
    hostname: str = "testhost",
    with_boot: bool = False,
) -> Path:
    """Create a self-contained root filesystem at ``dest`` (must not exist yet) and return it.

    The cached base is copied with ``cp -a --reflink=auto``; then the host-specific bits
    (hostname, filler data, optional kernel/initramfs via ``testbed.boot``) are added.
    """
    global LAST_BUILD
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} already exists")
    extras = tuple(sorted(extra_binaries))
    base, cached, base_seconds = base_rootfs(extras)
    t0 = time.monotonic()
    dest.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RootfsError(f"copying base rootfs failed: {proc.stderr.strip()}")
    (dest / "etc" / "hostname").write_text(hostname + "\n")
    (dest / "etc" / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost\n")
    if filler_mb:
        _write_filler(dest, filler_mb)
    if with_boot:
        try:
            boot = importlib.import_module("testbed.boot")
        except ModuleNotFoundError as exc:
            raise RootfsError("with_boot=True needs testbed/boot.py (install_boot)") from exc
        boot.install_boot(dest)
    copy_seconds = time.monotonic() - t0
    LAST_BUILD = BuildStats(dest, cached, base_seconds, copy_seconds, tree_size(dest))
    return dest
