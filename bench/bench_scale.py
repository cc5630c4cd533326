#!/usr/bin/env python3
"""Benchmark: how clone, diff, sync-back and live catch-up grow with the host's size.

For each size (``--sizes 1,4,16`` GiB of host data), on real sshd test hosts (own rootfs, network
namespace) on this machine, in one run:

* the host: datafiles from 256 MiB up to 4 GiB (largest first, halving) plus a tree of
  ``--small-files`` small files (0..4 KiB), a kernel + initramfs in /boot;
* "production" has ~15 % of the datafile bytes corrupted in 1 MiB runs (size and mtime kept:
  in-place damage), and its largest datafile also lost its last 1/8 (size changed);
* "clone" holds the healthy datafiles.

Measured, each against a baseline and against the physical limit of its bottleneck, both measured
in the same run:

* **clone** of production to a ready disk image (``clone_host`` on ``test:///default``: estimate,
  stream, delta, fix-ups, image) vs ``ssh tar | tar -x`` + ``mke2fs -d`` + ``qemu-img convert``;
  peak disk on the hypervisor (allocated bytes in the clone's directory, sampled; the baseline's
  at the end of each stage, when it peaks) vs the host's used bytes;
* **diff** (``build_pair`` + ``diff_manifests`` over the datafiles) vs ``rsync -a --checksum
  --dry-run``;
* **sync-back** of the diff's changed files vs ``rsync -a --checksum`` (production reset to the
  same damaged bytes before each);
* **live catch-up** (``live_sync_files``, production -> clone) while a writer on production keeps
  rewriting 4 KiB blocks of two datafiles for ``--writer-seconds``;
* **limits**: sequential read of the same files (page cache as the engines see it, and cold:
  ``posix_fadvise(DONTNEED)`` first), OpenSSH throughput on the same path in both directions,
  hash throughput of the negotiated algorithm's fastest single-thread tool;
* time, throughput, bytes on the wire (the test hosts' veth counters: everything that crossed,
  SSH framing included), peak RSS of the worker process and of the agents on each host
  (VmHWM from /proc, sampled every 50 ms), peak disk on the hypervisor.

``--kill-resume N``: at the largest size run, N rounds of a sync-back run as its own process,
SIGKILLed at a random moment, then resumed with the same run id; counted when production's
datafiles are byte-identical to the clone's.

Free space is checked first (``df``): a size whose peak (~3x its size: production's tree and
two of the baseline's three copies — its staging tree is measured, then dropped before the
convert) does not fit is skipped and said so. Everything is removed
afterwards (``--keep DIR`` keeps the work dir).

Usage:  UNDERSTUDY_FORCE_TCG=1 .venv/bin/python bench/bench_scale.py --sizes 1,4 [--kill-resume 5]
Prints markdown tables (copied into docs/scale.md) and writes ``--json`` if given.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402

from testbed.host import TestHost  # noqa: E402
from workers.engines.agent import BOOT  # noqa: E402
from workers.engines.clone import CloneOptions, clone_host, destroy_clone  # noqa: E402
from workers.engines.endpoint import Endpoint  # noqa: E402
from workers.engines.events import RecordingEmitter  # noqa: E402
from workers.engines.manifest import build_pair, diff_manifests  # noqa: E402
from workers.engines.sync import SyncError, live_sync_files, plan_sync, sync_back  # noqa: E402

MiB, GiB = 1 << 20, 1 << 30
DATA = "/srv/data"
TREE = "/srv/tree"
BACKUP = "/var/lib/understudy-sync"
CORRUPT_FRACTION = 0.15
SHRINK_FRACTION = 1 / 8
URI = "test:///default"


# --------------------------------------------------------------------------- data

def datafile_sizes(total: int) -> list[int]:
    """Powers of two from the largest (at most 4 GiB, at most 55 % of the total) down to 256 MiB,
    repeated while they fit: one big file dominates, as a database's largest datafile does."""
    largest = 256 * MiB
    while largest * 2 <= min(4 * GiB, total * 0.55):
        largest *= 2
    sizes, left = [], total
    while left >= 256 * MiB:
        size = largest
        while size >= 256 * MiB and left >= 256 * MiB:
            if size <= left:
                sizes.append(size)
                left -= size
            size //= 2
    return sizes


class Pool:
    """Incompressible, reproducible content that never repeats (rsync's rolling match would find a
    repeated block anywhere in the file): AES-CTR keystream keyed by the size, one nonce per
    (file, MiB, variant) — ~1.7 GiB/s here, where os.urandom gives ~170 MiB/s."""

    def __init__(self, seed: int) -> None:
        self.key = seed.to_bytes(16, "big")
        self.zero = bytes(MiB)

    def mib(self, file_no: int, index: int, salt: int = 0) -> bytes:
        # the low 32 bits are the block counter inside this MiB (65,536 blocks): no two MiB share a block
        nonce = file_no.to_bytes(4, "big") + index.to_bytes(6, "big") + salt.to_bytes(2, "big") + bytes(4)
        return Cipher(algorithms.AES(self.key), modes.CTR(nonce)).encryptor().update(self.zero)


def write_datafiles(root: Path, sizes: list[int], pool: Pool) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for n, size in enumerate(sizes):
        p = root / f"datafile{n:02d}.dbf"
        with open(p, "wb") as fh:
            for i in range(size // MiB):
                fh.write(pool.mib(n, i))
        files.append(p)
    return files


def write_small_tree(root: Path, count: int, seed: int = 5) -> int:
    rng = random.Random(seed)
    total = 0
    for i in range(count):
        d = root / f"d{i // 500:03d}"
        if i % 500 == 0:
            d.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(rng.randrange(0, 4097))
        (d / f"f{i:05d}.conf").write_bytes(data)
        total += len(data)
    return total


class Damage:
    """Production's damage, reproducible byte for byte (so every contender starts from the same
    bytes and the plan's drift guard still holds): in each datafile, 1 MiB runs covering ~15 % of
    it are overwritten; the largest file also loses its last 1/8. mtimes are put back."""

    def __init__(self, files: list[Path], pool: Pool, seed: int = 11) -> None:
        self.files, self.pool = files, pool
        rng = random.Random(seed)
        self.runs: dict[Path, list[int]] = {}
        for p in files:
            n = p.stat().st_size // MiB
            self.runs[p] = sorted(rng.sample(range(n), max(1, int(n * CORRUPT_FRACTION))))
        self.shrunk = files[0]
        self.full_size = {p: p.stat().st_size for p in files}
        self.mtime = {p: p.stat().st_mtime_ns for p in files}

    def corrupted_bytes(self) -> int:
        return sum(len(r) for r in self.runs.values()) * MiB

    def apply(self) -> None:
        """Bring production's files to the damaged state (from healthy or synced-back files)."""
        for k, p in enumerate(self.files):
            size = self.full_size[p]
            keep = int(size * (1 - SHRINK_FRACTION)) // MiB * MiB if p == self.shrunk else size
            with open(p, "r+b") as fh:
                for i in self.runs[p]:
                    if i * MiB < keep:
                        fh.seek(i * MiB)
                        fh.write(self.pool.mib(k, i, salt=1))
                fh.truncate(keep)
            os.utime(p, ns=(self.mtime[p], self.mtime[p]))


# --------------------------------------------------------------------------- measuring

def allocated(path: Path) -> int:
    """Bytes allocated under ``path`` on its own file system (mounts below it are not entered)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    dev, total, stack = st.st_dev, st.st_blocks * 512, [str(path)] if os.path.isdir(path) else []
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    s = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if s.st_dev != dev:
                    continue
                total += s.st_blocks * 512
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return total


def _status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _netns_inode(name: str | None) -> int | None:
    try:
        return os.stat(f"/run/netns/{name}").st_ino if name else None
    except OSError:
        return None


class Sampler(threading.Thread):
    """Every 50 ms: the worker's RSS, each agent's VmHWM per host (by network namespace), and
    (every ``disk_every`` s) the bytes allocated under ``disk_path``."""

    def __init__(self, hosts: dict[str, TestHost], disk_path: Path | None = None, disk_every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.ns = {_netns_inode(h.netns_name): label for label, h in hosts.items()}
        self.stop_event = threading.Event()
        self.worker_kib = 0
        self.agent_kib: dict[str, int] = {label: 0 for label in hosts}
        self.disk_path, self.disk_every, self.disk_peak = disk_path, disk_every, 0
        self.boot = BOOT.encode()

    def _agents(self) -> list[tuple[int, str]]:
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if len(argv) > 3 and argv[2] == self.boot:
                    ino = os.stat(f"/proc/{entry}/ns/net").st_ino
                    out.append((int(entry), self.ns.get(ino, "other")))
            except OSError:
                continue
        return out

    def run(self) -> None:
        last_disk = 0.0
        while not self.stop_event.is_set():
            rss = _status_kib(os.getpid(), "VmRSS") or 0
            self.worker_kib = max(self.worker_kib, rss)
            for pid, label in self._agents():
                hwm = _status_kib(pid, "VmHWM")
                if hwm:
                    self.agent_kib[label] = max(self.agent_kib.get(label, 0), hwm)
            if self.disk_path is not None and time.monotonic() - last_disk >= self.disk_every:
                last_disk = time.monotonic()
                self.disk_peak = max(self.disk_peak, allocated(self.disk_path))
            time.sleep(0.05)

    def __enter__(self) -> "Sampler":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.join()
        if self.disk_path is not None:
            self.disk_peak = max(self.disk_peak, allocated(self.disk_path))


def wire_bytes(hosts: list[TestHost]) -> int:
    """rx + tx of every non-loopback interface in the hosts' network namespaces."""
    total = 0
    for h in hosts:
        if not h.netns_name:
            raise RuntimeError(f"{h.hostname} has no network namespace ({h.netns_fallback_reason}): "
                               f"bytes on the wire cannot be counted")
        out = subprocess.run(["ip", "netns", "exec", h.netns_name, "cat", "/proc/net/dev"], capture_output=True,
                             text=True, check=True).stdout
        for line in out.splitlines()[2:]:
            name, _, rest = line.partition(":")
            if name.strip() != "lo":
                f = rest.split()
                total += int(f[0]) + int(f[8])
    return total


@dataclasses.dataclass
class Measure:
    seconds: float
    wire: int
    worker_kib: int
    agent_kib: dict[str, int]
    disk_peak: int = 0
    extra: dict = dataclasses.field(default_factory=dict)


def measured(fn: Callable[[], Any], hosts: dict[str, TestHost], disk_path: Path | None = None
             ) -> tuple[Measure, Any]:
    w0 = wire_bytes(list(hosts.values()))
    with Sampler(hosts, disk_path) as s:
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
    w1 = wire_bytes(list(hosts.values()))
    return Measure(dt, w1 - w0, s.worker_kib, dict(s.agent_kib), s.disk_peak), result


def drop_cache(paths: list[Path]) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_rate(paths: list[Path], cold: bool) -> float:
    if cold:
        drop_cache(paths)
    total = sum(p.stat().st_size for p in paths)
    t0 = time.perf_counter()
    subprocess.run(["cat", *map(str, paths)], stdout=subprocess.DEVNULL, check=True)
    return total / (time.perf_counter() - t0)


def write_rate(directory: Path, size: int, pool: Pool) -> float:
    """Sequential write + fsync of ``size`` bytes (what replacing a file costs: the sync agent
    writes a whole temp copy and fsyncs it)."""
    p = directory / ".write-probe"
    chunks = [pool.mib(999, i) for i in range(64)]
    t0 = time.perf_counter()
    with open(p, "wb") as fh:
        for i in range(size // MiB):
            fh.write(chunks[i % 64])
        fh.flush()
        os.fsync(fh.fileno())
    dt = time.perf_counter() - t0
    p.unlink()
    return size / dt


def hash_tool(algo: str) -> list[str]:
    if algo.startswith("xxh3") or algo.startswith("xxh128"):
        return ["xxhsum", "-H2" if "128" in algo else "-H3", "-q"]
    if algo.startswith("blake3"):
        return ["b3sum", "--num-threads", "1"]
    if algo == "sha256":
        return ["sha256sum"]
    return ["sha256sum"]


def hash_rate(paths: list[Path], algo: str) -> tuple[float, str]:
    argv = hash_tool(algo)
    total = sum(p.stat().st_size for p in paths)
    t0 = time.perf_counter()
    subprocess.run(argv + [str(p) for p in paths], stdout=subprocess.DEVNULL, check=True)
    return total / (time.perf_counter() - t0), " ".join(argv)


def ssh_rates(host: TestHost, size: int) -> tuple[float, float]:
    """OpenSSH (same options and pinned key as the engines' OpenSSH transport) down and up, to /dev/null."""
    down = host.target.ssh_argv(f"head -c {size} /dev/zero")
    t0 = time.perf_counter()
    subprocess.run(down, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    d = size / (time.perf_counter() - t0)
    up = host.target.ssh_argv("cat > /dev/null")
    t0 = time.perf_counter()
    p = subprocess.Popen(up, stdin=subprocess.PIPE)
    chunk = bytes(MiB)
    assert p.stdin is not None
    for _ in range(size // MiB):
        p.stdin.write(chunk)
    p.stdin.close()
    p.wait()
    u = size / (time.perf_counter() - t0)
    return d, u


def endpoint(h: TestHost, label: str) -> Endpoint:
    return Endpoint(h.address, h.port, h.user, str(h.client_key_path), h.host_public_key, label=label)


def sha_files(paths: list[Path]) -> dict[str, str]:
    out = {}
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            while chunk := fh.read(4 * MiB):
                h.update(chunk)
        out[p.name] = h.hexdigest()
    return out


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- one size

def run_size(size_gib: int, args: argparse.Namespace, work: Path, key: Path, worker_pub: str) -> dict:
    total = size_gib * GiB
    sizes = datafile_sizes(total - args.small_files * 4096)
    res: dict[str, Any] = {"size_gib": size_gib, "datafiles": [s // MiB for s in sizes],
                           "writer_seconds": args.writer_seconds, "small_files": args.small_files}
    hosts: list[TestHost] = []
    pool = Pool(size_gib)
    try:
        log(f"{size_gib} GiB: datafiles {[s // MiB for s in sizes]} MiB + {args.small_files} small files")
        prod = TestHost(work / "prod", hostname="scale-production", with_boot=True,
                        extra_binaries=["/usr/bin/rsync"])
        hosts.append(prod)
        prod.start()
        pdir = prod.rootfs / DATA.lstrip("/")
        t0 = time.perf_counter()
        pfiles = write_datafiles(pdir, sizes, pool)
        write_small_tree(prod.rootfs / TREE.lstrip("/"), args.small_files)
        res["generate_seconds"] = round(time.perf_counter() - t0, 1)
        used = int(subprocess.run(["du", "-sxB1", str(prod.rootfs)], capture_output=True, text=True,
                                  check=True).stdout.split()[0])
        res["host_used_bytes"] = used
        log(f"production: {used / GiB:.2f} GiB used")
        pe = endpoint(prod, "production")
        P = {"production": prod}

        # ---- limits (same files, same path)
        res["read_warm"] = read_rate(pfiles, cold=False)
        res["read_cold"] = read_rate(pfiles, cold=True)
        subprocess.run(["cat", *map(str, pfiles)], stdout=subprocess.DEVNULL, check=True)  # warm again
        res["ssh_down"], res["ssh_up"] = ssh_rates(prod, min(total, 1 * GiB))
        res["write_fsync"] = write_rate(pdir, min(total, 1 * GiB), pool)
        log(f"limits: read warm {res['read_warm'] / MiB:.0f} MiB/s, cold {res['read_cold'] / MiB:.0f} MiB/s; "
            f"ssh down {res['ssh_down'] / MiB:.0f} MiB/s, up {res['ssh_up'] / MiB:.0f} MiB/s; "
            f"write+fsync {res['write_fsync'] / MiB:.0f} MiB/s")

        # ---- clone (product) to a ready image
        storage = work / "hv"
        em = RecordingEmitter()
        opts = CloneOptions(name=f"us-scale-{size_gib}", hostname="scale-clone", rehearsal_id="scale",
                            worker_public_key=worker_pub, memory_mib=512)
        m, result = measured(lambda: clone_host(pe, hypervisor_uri=URI, storage_dir=storage, options=opts,
                                                emitter=em), P, disk_path=storage)
        ran = [line for line in em.lines("info") if line.startswith("image build: ")]
        ready = sum(v for k, v in result.timings.items() if k not in ("define", "boot", "total"))
        res["clone"] = dict(dataclasses.asdict(m), ready_seconds=ready, stream_bytes=result.bytes,
                            timings=result.timings, path=ran[0][:80] if ran else "?")
        destroy_clone(URI, result)
        log(f"clone: {ready:.1f}s to a ready image, peak disk {m.disk_peak / GiB:.2f} GiB "
            f"({m.disk_peak / used:.2f}x used), {ran[0][:60] if ran else ''}")

        # ---- clone baseline: tar | tar + mke2fs -d + qemu-img convert (peaks when all three exist)
        base = work / "baseline"
        base.mkdir()
        staging, raw, qcow2 = base / "staging", base / "disk.raw", base / "disk.qcow2"
        staging.mkdir()
        ssh = shlex.join(prod.target.ssh_argv("tar -C / -cf - --one-file-system ."))
        bt: dict[str, float] = {}
        w0 = wire_bytes([prod])
        t0 = time.perf_counter()
        subprocess.run(f"{ssh} | tar -x -f - -C {shlex.quote(str(staging))}", shell=True, check=False)
        bt["tar over ssh"] = time.perf_counter() - t0
        wire = wire_bytes([prod]) - w0
        t0 = time.perf_counter()
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(staging), str(raw),
                        f"{result.to_dict().get('bytes', used) * 13 // 10 // 1024 + 262144}k"], check=True)
        bt["mke2fs -d"] = time.perf_counter() - t0
        # The recipe keeps its staging tree until the end: its peak is staging + raw + qcow2. The
        # staging tree is measured, then removed before the convert, so that this machine (shared)
        # only ever holds two of the three copies; the convert's time does not depend on it.
        staged = allocated(staging)
        shutil.rmtree(staging)
        t0 = time.perf_counter()
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)], check=True)
        bt["qemu-img convert"] = time.perf_counter() - t0
        peak = staged + allocated(base)
        shutil.rmtree(base)
        res["clone_baseline"] = {"seconds": sum(bt.values()), "stages": bt, "disk_peak": peak, "wire": wire}
        log(f"clone baseline: {sum(bt.values()):.1f}s, peak disk {peak / GiB:.2f} GiB")

        # ---- the clone host, healthy datafiles; production damaged
        clone = TestHost(work / "clone", hostname="scale-clone", extra_binaries=["/usr/bin/rsync"])
        hosts.append(clone)
        clone.start()
        cdir = clone.rootfs / DATA.lstrip("/")
        cfiles = write_datafiles(cdir, sizes, pool)
        for c, p in zip(cfiles, pfiles):
            os.utime(p, ns=(c.stat().st_mtime_ns, c.stat().st_mtime_ns))
        damage = Damage(pfiles, pool)
        damage.apply()
        res["corrupted_bytes"] = damage.corrupted_bytes()
        res["datafile_bytes"] = sum(sizes)
        good = sha_files(cfiles)
        ce = endpoint(clone, "clone")
        both = {"production": prod, "clone": clone}
        subprocess.run(["cat", *map(str, cfiles + pfiles)], stdout=subprocess.DEVNULL, check=True)  # warm

        # ---- diff
        def diff() -> Any:
            mc, mp = build_pair(ce, pe, [DATA])
            return mc, mp, diff_manifests(mc, mp)
        m, (mc, mp, d) = measured(diff, both)
        changed = sorted(e.rel.decode() for e in d.changed)
        assert changed == sorted(p.name for p in pfiles), changed
        res["diff"] = dict(dataclasses.asdict(m), algo=mc.algo, changed=len(changed))
        hr, tool = hash_rate(cfiles, mc.algo)
        res["hash_rate"], res["hash_tool"] = hr, tool
        log(f"diff: {m.seconds:.1f}s ({mc.algo}); hash limit {hr / MiB:.0f} MiB/s ({tool})")

        ssh_e = shlex.join(pe.openssh_argv("true", prod.known_hosts_path)[:-5])

        def rsync(extra: list[str]) -> tuple[float, int]:
            argv = ["rsync", "-a", "--checksum", *extra, "--stats", "-e", ssh_e, f"{cdir}/", f"root@{pe.host}:{DATA}/"]
            t0 = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"rsync failed: {proc.stderr}")
            sent = int(re.search(r"Total bytes sent: ([\d,]+)", proc.stdout).group(1).replace(",", ""))
            return time.perf_counter() - t0, sent

        m, (dt, sent) = measured(lambda: rsync(["--dry-run"]), P)
        res["diff_baseline"] = dict(dataclasses.asdict(m), rsync_sent=sent)
        log(f"diff baseline rsync --dry-run: {m.seconds:.1f}s")

        # ---- sync-back
        plan = plan_sync(d.changed, mc, mp, backup_dir=BACKUP, current_prod_manifest=mp)
        res["plan_send_bytes"] = plan.send_bytes
        backups = prod.rootfs / BACKUP.lstrip("/")
        m, rep = measured(lambda: sync_back(plan, ce, pe, run_id="scale1"), both)
        ok = sha_files(pfiles) == good
        res["sync"] = dict(dataclasses.asdict(m), data_bytes=rep.data_bytes, identical=ok)
        log(f"sync-back: {m.seconds:.1f}s, {rep.data_bytes / MiB:.0f} MiB data, identical={ok}")
        shutil.rmtree(backups, ignore_errors=True)
        damage.apply()
        m, (dt, sent) = measured(lambda: rsync([]), P)
        res["sync_baseline"] = dict(dataclasses.asdict(m), rsync_sent=sent, identical=sha_files(pfiles) == good)
        log(f"sync baseline rsync --checksum: {m.seconds:.1f}s")

        # ---- live catch-up, production -> clone, while production keeps writing
        stop = threading.Event()
        hot = [pfiles[0], pfiles[-1]]
        rng = random.Random(3)

        writer_end: list[float] = []

        def writer() -> int:
            n = 0
            end = time.monotonic() + args.writer_seconds
            while time.monotonic() < end and not stop.is_set():
                p = rng.choice(hot)
                with open(p, "r+b") as fh:
                    fh.seek(rng.randrange(p.stat().st_size // 4096) * 4096)
                    fh.write(os.urandom(4096))
                n += 1
                time.sleep(0.02)
            writer_end.append(time.perf_counter())
            return n
        # initial lag: the clone is behind by a few hundred blocks in the two hot files
        for p in hot:
            with open(p, "r+b") as fh:
                for _ in range(200):
                    fh.seek(rng.randrange(p.stat().st_size // 4096) * 4096)
                    fh.write(os.urandom(4096))
        writes: list[int] = []
        wt = threading.Thread(target=lambda: writes.append(writer()), daemon=True)

        def catch_up() -> Any:
            wt.start()
            rep = live_sync_files(pe, ce, [DATA], time_limit=args.writer_seconds * 20 + 600, settle=0.5,
                                  run_id="scalelive")
            wt.join()
            # the writer may have finished after the last pass began: one more pass to be exact
            last = live_sync_files(pe, ce, [DATA], time_limit=600, run_id="scalelive")
            return rep, last, time.perf_counter()
        m, (live, last, t_end) = measured(catch_up, both)
        same = sha_files([pdir / p.name for p in hot]) == sha_files([cdir / p.name for p in hot])
        res["live"] = dict(dataclasses.asdict(m), passes=len(live.passes) + len(last.passes),
                           data_bytes=sum(p.data_bytes for p in live.passes + last.passes),
                           moved_file_bytes=sum(p.moved_bytes for p in live.passes + last.passes),
                           writes=writes[0] if writes else 0, identical=same,
                           first_pass_seconds=live.passes[0].seconds,
                           first_pass_file_bytes=live.passes[0].moved_bytes,
                           first_pass_data_bytes=live.passes[0].data_bytes,
                           tail_seconds=t_end - writer_end[0] if writer_end else None)
        log(f"live: {m.seconds:.1f}s, {res['live']['passes']} passes, identical={same}")
        # ---- kill-and-resume (largest size only)
        if args.kill_resume and size_gib == max(args.size_list):
            if args.json:   # what is measured so far, should the rounds not finish
                Path(args.json + ".partial").write_text(json.dumps(res, indent=1))
            plan = plan_for_kills(ce, pe, cfiles, pfiles, damage, sizes, pool)
            res["kill_resume"] = kill_resume(args, work, plan, ce, pe, prod, pfiles, cfiles, damage)
        return res
    finally:
        for h in hosts:
            h.stop()
        for name in ("prod", "clone"):
            shutil.rmtree(work / name, ignore_errors=True)


def plan_for_kills(ce: Endpoint, pe: Endpoint, cfiles: list[Path], pfiles: list[Path], damage: Damage,
                   sizes: list[int], pool: Pool) -> Any:
    """Both hosts' datafiles back to the generated (healthy) bytes (the live catch-up changed some),
    production damaged again, a fresh plan: every round starts from exactly these bytes."""
    for files in (cfiles, pfiles):
        for n, (c, size) in enumerate(zip(files, sizes)):
            mt = damage.mtime[pfiles[n]]
            with open(c, "wb") as fh:
                for i in range(size // MiB):
                    fh.write(pool.mib(n, i))
            os.utime(c, ns=(mt, mt))
    damage.apply()
    mc, mp = build_pair(ce, pe, [DATA])
    d = diff_manifests(mc, mp)
    return plan_sync(d.changed, mc, mp, backup_dir=BACKUP, current_prod_manifest=mp)


def kill_resume(args: argparse.Namespace, work: Path, plan: Any, ce: Endpoint, pe: Endpoint, prod: TestHost,
                pfiles: list[Path], cfiles: list[Path], damage: Damage) -> dict:
    good = sha_files(cfiles)
    spec = work / "spec.json"
    backups = prod.rootfs / BACKUP.lstrip("/")
    rng = random.Random(args.seed)

    def worker(run_id: str, timeout: float | None) -> int | None:
        spec.write_text(json.dumps({"plan": plan.to_dict(), "clone": dataclasses.asdict(ce),
                                    "prod": dataclasses.asdict(pe), "run_id": run_id, "on_error": "stop"}))
        p = subprocess.Popen([sys.executable, "-m", "testbed.synccli", "sync-back", str(spec)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return None

    shutil.rmtree(backups, ignore_errors=True)
    t0 = time.perf_counter()
    assert worker("full", None) == 0
    t_full = time.perf_counter() - t0
    rounds = []
    for k in range(args.kill_resume):
        shutil.rmtree(backups, ignore_errors=True)
        damage.apply()
        delay = rng.uniform(0.5, t_full)
        killed = worker(f"kill{k}", delay) is None
        waited, identical = 0.0, False
        while True:
            try:
                sync_back(plan, ce, pe, run_id=f"kill{k}", on_error="stop")
                identical = sha_files(pfiles) == good
            except SyncError as exc:
                # the killed worker's agent on production finishes the file it is copying before it
                # sees its stream gone, and holds production's writer lock until then
                if "holds production's lock" in str(exc) and waited < 300:
                    time.sleep(1)
                    waited += 1
                    continue
                log(f"kill-resume round {k}: resume failed: {exc}")
            break
        rounds.append({"delay": round(delay, 1), "killed": killed, "lock_wait": waited, "identical": identical})
        log(f"kill-resume round {k}: killed after {delay:.1f}s={killed}, waited {waited:.0f}s for the lock, "
            f"identical={identical}")
    shutil.rmtree(backups, ignore_errors=True)
    return {"uninterrupted_seconds": t_full, "rounds": rounds,
            "ok": sum(r["identical"] for r in rounds), "n": len(rounds)}


# --------------------------------------------------------------------------- report

def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "—"


def mib(n: float) -> str:
    return f"{n / MiB:,.0f}" if n >= 10 * MiB else f"{n / MiB:,.2f}"


def args_writer(r: dict) -> str:
    return f"{r.get('writer_seconds', 0):.0f}"


def report(results: list[dict], skipped: list[str]) -> str:
    out = []
    for r in results:
        used = r["host_used_bytes"]
        data = r["datafile_bytes"]
        c, cb = r["clone"], r["clone_baseline"]
        d, db = r["diff"], r["diff_baseline"]
        s, sb = r["sync"], r["sync_baseline"]
        lv = r["live"]
        hr, ssh_down, ssh_up, rw = r["hash_rate"], r["ssh_down"], r["ssh_up"], r["read_warm"]
        # limits: the bottleneck's time for the bytes that engine must move or hash
        clone_limit = max(c["stream_bytes"] / min(ssh_down, rw), c["stream_bytes"] / r["write_fsync"])
        diff_limit = data / hr            # both sides hash at once, one core each
        # sync-back: production's agent copies each planned file to a temp beside it (hashing it) and
        # fsyncs it; the clone's reads and hashes it; the changed blocks cross two SSH hops
        wf = r["write_fsync"]
        sync_limit = max(data / hr, data / wf, s["data_bytes"] / min(ssh_down, ssh_up))
        # live catch-up cannot end before the writer stops: its first pass (the initial lag) is what
        # compares with a limit, and the tail (writer stopped -> converged) is reported beside it
        live_limit = max(lv["first_pass_file_bytes"] / hr, lv["first_pass_file_bytes"] / wf,
                         lv["first_pass_data_bytes"] / min(ssh_down, ssh_up))
        out.append(f"\n### {r['size_gib']} GiB host ({used / GiB:.2f} GiB used; datafiles {r['datafiles']} MiB, "
                   f"{r['corrupted_bytes'] / data:.0%} of their bytes corrupted, largest shrunk by 1/8)\n")
        out.append(f"Limits measured in the same run: sequential read {mib(rw)} MiB/s (page cache), "
                   f"{mib(r['read_cold'])} MiB/s (cold); sequential write + fsync {mib(r['write_fsync'])} MiB/s; "
                   f"OpenSSH {mib(ssh_down)} MiB/s down, {mib(ssh_up)} MiB/s up; "
                   f"hash {mib(hr)} MiB/s ({r['hash_tool']}, one core; the engines use {d['algo']}).\n")
        out.append("| engine | time (s) | s/GiB | throughput MiB/s | baseline (s) | vs baseline | limit (s) | "
                   "vs limit | wire MiB | worker RSS MiB | agent RSS MiB (prod / clone) | peak disk |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")

        def row(name: str, m: dict, base_s: float | None, limit_s: float, per: float, moved: float,
                disk: str = "") -> None:
            ag = m["agent_kib"]
            out.append(f"| {name} | {m['seconds']:.1f} | {m['seconds'] / (per / GiB):.1f} | "
                       f"{mib(moved / m['seconds'])} | {base_s:.1f} | {ratio(m['seconds'], base_s)} | "
                       f"{limit_s:.1f} | {ratio(m['seconds'], limit_s)} | {mib(m['wire'])} | "
                       f"{m['worker_kib'] / 1024:.0f} | {ag.get('production', 0) / 1024:.0f} / "
                       f"{ag.get('clone', 0) / 1024:.0f} | {disk} |" if base_s is not None else
                       f"| {name} | {m['seconds']:.1f} | {m['seconds'] / (per / GiB):.1f} | "
                       f"{mib(moved / m['seconds'])} | — | — | {limit_s:.1f} | {ratio(m['seconds'], limit_s)} | "
                       f"{mib(m['wire'])} | {m['worker_kib'] / 1024:.0f} | {ag.get('production', 0) / 1024:.0f} / "
                       f"{ag.get('clone', 0) / 1024:.0f} | {disk} |")
        cm = dict(c, seconds=c["ready_seconds"])
        row("clone to a ready image", cm, cb["seconds"], clone_limit, used, c["stream_bytes"],
            f"{c['disk_peak'] / GiB:.2f} GiB = {c['disk_peak'] / used:.2f}x used (baseline "
            f"{cb['disk_peak'] / GiB:.2f} GiB = {cb['disk_peak'] / used:.2f}x)")
        row("diff", d, db["seconds"], diff_limit, data, 2 * data)
        row("sync-back", s, sb["seconds"], sync_limit, data, s["data_bytes"])
        row(f"live catch-up, first pass (initial lag: {mib(lv['first_pass_file_bytes'])} MiB of files)",
            dict(lv, seconds=lv["first_pass_seconds"]), None, live_limit, data, lv["first_pass_data_bytes"])
        out.append(f"| live catch-up, whole ({lv['passes']} passes while {lv['writes']} writes landed over "
                   f"{args_writer(r)} s; converged {lv['tail_seconds']:.1f} s after the writer stopped) | "
                   f"{lv['seconds']:.1f} | | | | | | | {mib(lv['wire'])} | {lv['worker_kib'] / 1024:.0f} | "
                   f"{lv['agent_kib'].get('production', 0) / 1024:.0f} / {lv['agent_kib'].get('clone', 0) / 1024:.0f}"
                   f" | |")
        out.append(f"\nclone: {c['path']}; phases {c['timings']}; baseline stages "
                   + ", ".join(f"{k} {v:.1f}s" for k, v in cb["stages"].items())
                   + f"; baseline wire {mib(cb['wire'])} MiB. rsync sent {mib(db['rsync_sent'])} MiB (dry run), "
                   f"{mib(sb['rsync_sent'])} MiB (sync). sync-back moved {mib(s['data_bytes'])} MiB of file data "
                   f"(plan upper bound {mib(r['plan_send_bytes'])} MiB); byte-identical: sync-back "
                   f"{s['identical']}, rsync {sb['identical']}, live {lv['identical']}.")
        if "kill_resume" in r:
            kr = r["kill_resume"]
            out.append(f"\nkill-and-resume: {kr['ok']}/{kr['n']} byte-identical (uninterrupted "
                       f"{kr['uninterrupted_seconds']:.1f}s; rounds {kr['rounds']})")
    if len(results) > 1:
        a, b = results[0], results[-1]
        out.append(f"\n### Growth: seconds per GiB at each size, and the largest over the smallest\n")
        out.append("| engine (per GiB of) | " + " | ".join(f"{r['size_gib']} GiB" for r in results)
                   + f" | {b['size_gib']} GiB / {a['size_gib']} GiB |")
        out.append("|---|" + "---:|" * (len(results) + 1))

        def per_gib(r: dict, key: str) -> float:
            if key == "clone":
                return r["clone"]["ready_seconds"] / (r["host_used_bytes"] / GiB)
            if key == "live":
                return r["live"]["first_pass_seconds"] / (r["live"]["first_pass_file_bytes"] / GiB)
            return r[key]["seconds"] / (r["datafile_bytes"] / GiB)
        for key, name in (("clone", "clone to a ready image (host used bytes)"), ("clone_baseline", None),
                          ("diff", "diff (datafile bytes)"), ("diff_baseline", "rsync --checksum --dry-run"),
                          ("sync", "sync-back (datafile bytes)"), ("sync_baseline", "rsync --checksum"),
                          ("live", "live catch-up first pass (bytes of the files it moved)")):
            if key == "clone_baseline":
                vals = [r["clone_baseline"]["seconds"] / (r["host_used_bytes"] / GiB) for r in results]
                name = "tar \\| tar + mke2fs -d + qemu-img (host used bytes)"
            else:
                vals = [per_gib(r, key) for r in results]
            out.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {vals[-1] / vals[0]:.2f}x |")
    for s in skipped:
        out.append(f"\nskipped: {s}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,4,16", help="host sizes in GiB, comma-separated")
    ap.add_argument("--small-files", type=int, default=50_000)
    ap.add_argument("--writer-seconds", type=float, default=20)
    ap.add_argument("--kill-resume", type=int, default=0, metavar="N")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--keep", help="work directory to use (kept afterwards)")
    ap.add_argument("--json", help="also write the raw results here")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # run the finally blocks: hosts, work dir
    try:
        args.size_list = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    except ValueError:
        ap.error(f"--sizes must be whole GiB numbers separated by commas, not {args.sizes!r}")
    if not args.size_list or min(args.size_list) < 1:
        ap.error("--sizes: at least one size of 1 GiB or more")
    work = Path(args.keep or tempfile.mkdtemp(prefix="understudy-bench-scale-", dir=os.environ.get("TMPDIR")))
    work.mkdir(parents=True, exist_ok=True)
    key = work / "worker_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    worker_pub = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    results, skipped = [], []
    try:
        for size in args.size_list:
            # peak: production's tree + two of the baseline's three copies (it drops its staging tree
            # before the convert), or production's tree + its backups + the clone host's tree during
            # the sync-back; + 2 GiB for rootfs, kernel, margins
            need = 3 * size * GiB + 2 * GiB
            free = shutil.disk_usage(work).free
            if need > free:
                msg = (f"{size} GiB: needs ~{need / GiB:.0f} GiB free in {work}, {free / GiB:.0f} GiB there")
                log("skipping " + msg)
                skipped.append(msg)
                continue
            results.append(run_size(size, args, work, key, worker_pub))
            if args.json:
                Path(args.json).write_text(json.dumps({"results": results, "skipped": skipped}, indent=1))
        print(report(results, skipped))
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
