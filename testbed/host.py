"""A running "production host" you can SSH into: a rootfs under its own sshd, in its own namespaces.

Why namespaces and not just an sshd on the CI machine: the P2V clone streams ``tar -C /
--one-file-system`` over SSH, so ``/`` on the far side must be the test host's own tree
(not the CI machine's), with /proc, /dev, /run and /tmp as separate mounts that tar skips.
We get that with ``unshare --mount --uts --pid`` + ``pivot_root`` into the rootfs, and an
address of its own with a network namespace joined to the CI machine by a veth /30 that
exists only inside the pair (falls back to 127.0.0.1:<free port> when netns is unavailable).

Everything lives in one PID namespace whose init is a tiny reaper: ``stop()`` SIGKILLs it,
the kernel kills every process inside, the mount namespace (and all its mounts) vanishes
with the last process, then the veth and netns are deleted.

No Django import: ``manage.py demo`` reuses this module.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .rootfs import ROOT_PATH, build_rootfs

NET_PREFIX = "10.213"
NETNS_PREFIX = "ush-"
LOCK_PATH = Path("/run/understudy-testhost.lock")
OWNER_DIR = Path("/run/understudy-testhost")  # <netns>.owner = PID of the Python process that made it

# PID 1 of the host's PID namespace: reaps orphans (daemons started over SSH or by run()).
REAPER = (
    "import os, signal, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: os._exit(0))\n"
    "while True:\n"
    "    try:\n"
    "        os.waitpid(-1, 0)\n"
    "    except ChildProcessError:\n"
    "        time.sleep(0.2)\n"
)

# Runs as PID 1 of the new PID/mount/UTS namespaces, with the CI machine's /bin/sh, until pivot_root.
LAUNCH_SCRIPT = r"""
set -eu
R=$1; HN=$2; LISTEN=$3; MINIDB=$4; SYSFS=$5
hostname "$HN"
mount --bind "$R" "$R"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
if [ "$SYSFS" = 1 ]; then mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"; fi
mount -t tmpfs -o mode=755,size=2m,nosuid tmpfs "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3
mknod -m 666 "$R/dev/zero" c 1 5
mknod -m 666 "$R/dev/full" c 1 7
mknod -m 666 "$R/dev/random" c 1 8
mknod -m 666 "$R/dev/urandom" c 1 9
mknod -m 666 "$R/dev/tty" c 5 0
mkdir -m 755 "$R/dev/pts"
mkdir -m 1777 "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/tmp"
cd "$R"
pivot_root . .
umount -l .
cd /
export PATH=%(path)s HOME=/root
mkdir -p /run/sshd /var/log
chmod 0755 /run/sshd
ip link set lo up 2>/dev/null || true
: > /var/log/sshd.log
/usr/sbin/sshd -f /etc/ssh/sshd_config -o "ListenAddress=$LISTEN" -E /var/log/sshd.log
if [ "$MINIDB" = 1 ]; then minidb-service start; fi
echo "testhost ready"
exec /usr/bin/python3 -c '%(reaper)s'
""" % {"path": ROOT_PATH, "reaper": REAPER}

_LIVE: "weakref.WeakSet[TestHost]" = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


class TestHostError(RuntimeError):
    """The host could not be started (message carries sshd's and the launcher's logs)."""

    __test__ = False


@dataclass(frozen=True)
class SSHTarget:
    """Everything a client needs to reach the host with strict host-key checking."""

    address: str
    port: int
    user: str
    client_key_path: Path
    host_public_key: str
    known_hosts_path: Path
    rootfs: Path
    hostname: str

    def ssh_argv(self, *remote: str) -> list[str]:
        """An OpenSSH ``ssh`` command line pinned to this host's key."""
        return ["ssh", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts_path}",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "GlobalKnownHostsFile=/dev/null",
                "-i", str(self.client_key_path), "-p", str(self.port), f"{self.user}@{self.address}", *remote]


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise TestHostError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path, comment: str) -> str:
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap_stale_netns() -> None:
    """Delete test-host netns left by a process that died without stop() (SIGKILL skips atexit).

    Called under the allocation lock; a netns is stale when the PID in its owner file is gone.
    """
    for name in _sh("ip", "netns", "list", check=False).stdout.split():
        if not name.startswith(NETNS_PREFIX):
            continue
        owner = OWNER_DIR / f"{name}.owner"
        try:
            alive = _pid_alive(int(owner.read_text().strip()))
        except (FileNotFoundError, ValueError):
            alive = False
        if alive:
            continue
        if _sh("ip", "netns", "pids", name, check=False).stdout.strip():
            continue  # something still runs in it: not ours to remove
        _sh("ip", "link", "del", f"ush{name[len(NETNS_PREFIX):]}h", check=False)
        _sh("ip", "netns", "del", name, check=False)
        owner.unlink(missing_ok=True)


class TestHost:
    """A production-like host: own rootfs, hostname, sshd, host key, address (and optional minidb).

    ``with TestHost(workdir) as h: ...`` or ``start()``/``stop()``. After ``start()`` the
    attributes ``address``, ``port``, ``user``, ``client_key_path``, ``host_public_key``,
    ``known_hosts_path``, ``rootfs`` are set; ``target`` bundles them as :class:`SSHTarget`.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, workdir: Path | None = None, *, hostname: str = "production", rootfs: Path | None = None,
                 minidb: bool = False, scenario: bool = False, scenario_kwargs: dict | None = None,
                 netns: bool | None = None, filler_mb: int = 0, extra_binaries: Sequence[str] = (),
                 die_with_parent: bool = True, start_timeout: float = 15.0, mount_sys: bool = False,
                 with_boot: bool = False) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"testhost-{hostname}-"))
        self.hostname = hostname
        self._given_rootfs = rootfs
        self.want_minidb = minidb or scenario
        self.want_scenario = scenario
        self.scenario_kwargs = scenario_kwargs or {}
        self.want_netns = netns  # None: try, fall back to loopback
        self.filler_mb = filler_mb
        # A kernel + initramfs in /boot: the host can then be cloned into a bootable VM.
        self.with_boot = with_boot
        self.extra_binaries = tuple(extra_binaries)
        self.die_with_parent = die_with_parent
        self.start_timeout = start_timeout
        # Off by default: GNU tar exits 1 ("./sys: file changed as we read it") on a sysfs mount
        # point even with --one-file-system; a real host has it, so the clone engine must cope.
        self.mount_sys = mount_sys
        self.user = "root"
        self.address = ""
        self.port = 0
        self.rootfs = Path(rootfs) if rootfs else self.workdir / "rootfs"
        self.client_key_path = self.workdir / "client_ed25519"
        self.known_hosts_path = self.workdir / "known_hosts"
        self.host_public_key = ""
        self.scenario = None
        self.netns_name: str | None = None
        self.netns_fallback_reason: str | None = None
        self._veth_host: str | None = None
        self._proc: subprocess.Popen | None = None
        self.init_pid: int | None = None
        self._pidns: str | None = None
        self._stopped = False
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "TestHost":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def target(self) -> SSHTarget:
        return SSHTarget(self.address, self.port, self.user, self.client_key_path, self.host_public_key,
                         self.known_hosts_path, self.rootfs, self.hostname)

    def start(self) -> "TestHost":
        if self._proc is not None or self._stopped:
            raise TestHostError(f"test host {self.hostname!r} was already started (TestHost objects are single-use)")
        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._given_rootfs is None and not self.rootfs.exists():
            build_rootfs(self.rootfs, hostname=self.hostname, filler_mb=self.filler_mb,
                         extra_binaries=self.extra_binaries, with_boot=self.with_boot)
        else:
            (self.rootfs / "etc" / "hostname").write_text(self.hostname + "\n")
        self.timings["rootfs"] = time.monotonic() - t0
        if self.want_scenario:
            from .minidb import build_scenario

            home = self.rootfs / "var" / "lib" / "minidb"
            self.scenario = build_scenario(home, rootfs=self.rootfs, **self.scenario_kwargs)
        if self.want_minidb and not (self.rootfs / "var/lib/minidb/control.json").exists():
            from .minidb.storage import init_database

            init_database(self.rootfs / "var" / "lib" / "minidb", ["accounts"], pages=16)
        if self.want_minidb:
            enabled = self.rootfs / "etc" / "understudy" / "services.enabled"
            if "minidb" not in enabled.read_text().split():
                with open(enabled, "a") as fh:
                    fh.write("minidb\n")
        self.timings["data"] = time.monotonic() - t0 - self.timings["rootfs"]
        self._make_keys()
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._setup_network()
            self._write_known_hosts()
            self._launch()
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        return self

    def _make_keys(self) -> None:
        ssh_dir = self.rootfs / "etc" / "ssh"
        self.host_public_key = _keygen(ssh_dir / "ssh_host_ed25519_key", f"root@{self.hostname}")
        client_pub = _keygen(self.client_key_path, f"understudy-test@{self.hostname}")
        dot_ssh = self.rootfs / "root" / ".ssh"
        dot_ssh.mkdir(parents=True, exist_ok=True)
        os.chmod(self.rootfs / "root", 0o700)
        os.chmod(dot_ssh, 0o700)
        ak = dot_ssh / "authorized_keys"
        ak.write_text(client_pub + "\n")
        os.chmod(ak, 0o600)

    def _write_known_hosts(self) -> None:
        name = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        self.known_hosts_path.write_text(f"{name} {self.host_public_key}\n")

    # ------------------------------------------------------------------ network
    def _setup_network(self) -> None:
        if self.want_netns is False:
            self._use_loopback("netns disabled by caller")
            return
        try:
            self._create_netns()
        except (TestHostError, OSError) as exc:
            if self.want_netns:
                raise
            self._use_loopback(str(exc))

    def _use_loopback(self, reason: str) -> None:
        self.netns_fallback_reason = reason
        self.address, self.port = "127.0.0.1", _free_port()

    def _create_netns(self) -> None:
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        with open(LOCK_PATH, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _reap_stale_netns()
            existing = set(_sh("ip", "netns", "list", check=False).stdout.split())
            addrs = _sh("ip", "-o", "-4", "addr", "show", check=False).stdout
            n = next((i for i in range(1, 255) if f"{NETNS_PREFIX}{i}" not in existing
                      and f" {NET_PREFIX}.{i}." not in addrs
                      and not os.path.exists(f"/sys/class/net/ush{i}h")), None)
            if n is None:
                raise TestHostError("no free 10.213.N.0/30 slot for a test host network namespace")
            ns, host_if, peer_if = f"{NETNS_PREFIX}{n}", f"ush{n}h", f"ush{n}p"
            _sh("ip", "netns", "add", ns)
            self.netns_name = ns
            OWNER_DIR.mkdir(parents=True, exist_ok=True)
            (OWNER_DIR / f"{ns}.owner").write_text(f"{os.getpid()}\n")
            try:
                _sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", ns)
                self._veth_host = host_if
                _sh("ip", "addr", "add", f"{NET_PREFIX}.{n}.1/30", "dev", host_if)
                _sh("ip", "link", "set", host_if, "up")
                _sh("ip", "-n", ns, "addr", "add", f"{NET_PREFIX}.{n}.2/30", "dev", peer_if)
                _sh("ip", "-n", ns, "link", "set", peer_if, "up")
                _sh("ip", "-n", ns, "link", "set", "lo", "up")
            except TestHostError:
                self._delete_network()
                raise
        self.address, self.port = f"{NET_PREFIX}.{n}.2", 22

    def _delete_network(self) -> None:
        if self._veth_host:
            _sh("ip", "link", "del", self._veth_host, check=False)
            self._veth_host = None
        if self.netns_name:
            _sh("ip", "netns", "del", self.netns_name, check=False)
            (OWNER_DIR / f"{self.netns_name}.owner").unlink(missing_ok=True)
            self.netns_name = None

    # ------------------------------------------------------------------ processes
    def _launch(self) -> None:
        prefix = ["nsenter", f"--net=/run/netns/{self.netns_name}"] if self.netns_name else []
        if self.die_with_parent:
            # setpriv (not preexec_fn, which is unsafe in threaded programs): if this Python
            # process dies, unshare gets SIGKILL, and --kill-child takes the host's init down.
            prefix = ["setpriv", "--pdeathsig", "KILL", "--"] + prefix
        argv = prefix + ["unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child",
                         "--propagation", "private", "/bin/sh", "-c", LAUNCH_SCRIPT, "testhost-launch",
                         str(self.rootfs), self.hostname, f"{self.address}:{self.port}",
                         "1" if self.want_minidb else "0", "1" if self.mount_sys else "0"]
        self._launch_log = self.workdir / "launcher.log"
        t0 = time.monotonic()
        with open(self._launch_log, "wb") as log:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        deadline = t0 + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise TestHostError(self._failure_text(f"launcher exited with {self._proc.returncode}"))
            if self.init_pid is None:
                self.init_pid = self._find_init()
            if self.init_pid and b"testhost ready" in self._launch_log.read_bytes() and self._ssh_banner():
                self.timings["sshd_ready"] = time.monotonic() - t0
                return
            time.sleep(0.02)
        raise TestHostError(self._failure_text(f"sshd not answering on {self.address}:{self.port} "
                                               f"after {self.start_timeout}s"))

    def _find_init(self) -> int | None:
        assert self._proc is not None
        try:
            children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children").read_text().split()
        except FileNotFoundError:
            return None
        if not children:
            return None
        pid = int(children[0])
        try:
            self._pidns = os.readlink(f"/proc/{pid}/ns/pid")
        except FileNotFoundError:
            return None
        return pid

    def _ssh_banner(self) -> bool:
        try:
            with socket.create_connection((self.address, self.port), timeout=0.5) as s:
                return s.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def _failure_text(self, what: str) -> str:
        def tail(p: Path) -> str:
            try:
                return p.read_text(errors="replace")[-3000:].strip() or "(empty)"
            except FileNotFoundError:
                return "(no file)"
        return (f"test host {self.hostname!r} failed to start: {what}\n"
                f"--- launcher log ({self._launch_log}):\n{tail(self._launch_log)}\n"
                f"--- sshd log ({self.rootfs / 'var/log/sshd.log'}):\n{tail(self.rootfs / 'var/log/sshd.log')}")

    def run(self, cmd: str, *, check: bool = True, timeout: float = 60.0,
            input: str | bytes | None = None) -> subprocess.CompletedProcess:
        """Run ``cmd`` with /bin/sh inside the host (its namespaces and root), for test setup."""
        if self.init_pid is None or self._stopped:
            raise TestHostError(f"test host {self.hostname!r} is not running")
        argv = ["nsenter", "-t", str(self.init_pid), "--mount", "--uts", "--pid", "--net", "--root", "--wd",
                "/bin/sh", "-c", f"cd / && {cmd}"]
        env = {"PATH": ROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        text = not isinstance(input, bytes)
        proc = subprocess.run(argv, capture_output=True, text=text, input=input, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise TestHostError(f"{cmd!r} on {self.hostname} exited {proc.returncode}:\n"
                                f"{proc.stdout}\n{proc.stderr}")
        return proc

    def namespace_pids(self) -> list[int]:
        """Host PIDs of all processes inside this host's PID namespace."""
        if not self._pidns:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/ns/pid") == self._pidns:
                        pids.append(int(entry))
                except (FileNotFoundError, PermissionError, ProcessLookupError):
                    continue
        return pids

    def stop(self) -> None:
        """Kill everything in the host, remove its network; idempotent, safe after a failed start."""
        if self._stopped:
            return
        self._stopped = True
        if self.init_pid:
            try:
                os.kill(self.init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._proc is not None:
            # unshare exits once its child (our init) is dead; let it reap the child itself,
            # else the zombie goes to the machine's PID 1, which may reap only slowly.
            try:
                self._proc.wait(timeout=5 if self.init_pid else 0.01)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while self.namespace_pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._delete_network()
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if self._own_workdir and os.environ.get("UNDERSTUDY_KEEP_TESTHOSTS") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    def discard_rootfs(self) -> None:
        """After stop(): keep /var/log (as workdir/logs) and delete a rootfs this host built itself.

        Test fixtures call this so a session does not leave ~60 MB per host behind;
        ``UNDERSTUDY_KEEP_TESTHOSTS=1`` keeps everything for a post-mortem.
        """
        if not self._stopped:
            raise TestHostError("discard_rootfs() needs a stopped host")
        if self._given_rootfs is not None or os.environ.get("UNDERSTUDY_KEEP_TESTHOSTS") == "1":
            return
        if self.rootfs.is_dir():
            logs = self.rootfs / "var" / "log"
            if logs.is_dir():
                shutil.copytree(logs, self.workdir / "logs", dirs_exist_ok=True, symlinks=True)
            shutil.rmtree(self.rootfs, ignore_errors=True)

    @property
    def running(self) -> bool:
        return not self._stopped and self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        return f"<TestHost {self.hostname} {self.user}@{self.address}:{self.port} rootfs={self.rootfs}>"


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        hosts = list(_LIVE)
    for h in hosts:
        h.stop()
