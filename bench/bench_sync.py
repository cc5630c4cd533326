#!/usr/bin/env python3
"""Benchmark: sync_back vs rsync, and kill-and-resume.

Setup (same run, warm page cache, this machine):
  * "clone": an sshd test host holding 1 GiB in 200 files of random data under /srv/bench;
  * "production": an sshd test host (own rootfs, network namespace, rsync installed) with a copy
    of the tree where 10 files have 3 corrupted 4 KiB blocks each (122,880 bytes; size and mtime
    kept, so plain ``rsync -a`` misses them).

Measured, interleaved rounds (median of --repeat), production reset to the damaged state before
each contender:
  1. ``sync_back`` (plan from the diff's manifests; clone -> worker -> production over two SSH
     connections) with the OpenSSH client and with paramiko: wall time, bytes written to
     production's SSH stdin (agent + plan + frames), file data bytes;
  2. ``rsync -a --checksum`` and plain ``rsync -a`` over SSH from the clone's tree (read locally
     from the clone host's rootfs: rsync gets one SSH hop, sync_back two) to production:
     wall time, "Total bytes sent" from ``--stats``;
  3. raw stream throughput, OpenSSH client vs paramiko (256 MiB from production);
  4. kill-and-resume: the worker (``python -m testbed.synccli``) SIGKILLed with its SSH
     clients at a random point, then ``sync_back`` again with the same run id; counted when all
     10 files equal the clone's and all 10 originals are in the run's backup dir.

Usage:  .venv/bin/python bench/bench_sync.py [--repeat 5] [--kills 20] [--keep DIR]
Prints a markdown table (copied into docs/sync.md).
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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workers.engines.endpoint import Endpoint  # noqa: E402
from workers.engines.manifest import build_pair, diff_manifests  # noqa: E402
from workers.engines.remote import RemoteProcess, pick_transport  # noqa: E402
from workers.engines.sync import plan_sync, rollback, start_agent, sync_back  # noqa: E402
from testbed.host import TestHost  # noqa: E402

GIB = 1 << 30
N_FILES = 200
N_CORRUPT = 10
TREE = "/srv/bench"
BACKUP = "/var/lib/understudy-sync"


def endpoint(h: TestHost, label: str) -> Endpoint:
    return Endpoint(h.address, h.port, h.user, str(h.client_key_path), h.host_public_key, label=label)


def make_tree(root: Path) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    size = GIB // N_FILES
    block = os.urandom(size + 4096)
    rng = random.Random(7)
    files = []
    for i in range(N_FILES):
        p = root / f"datafile{i:03d}.dbf"
        off = rng.randrange(4096)  # distinct content per file without 1 GiB of urandom
        p.write_bytes(block[off:off + size - 8] + i.to_bytes(8, "big"))
        files.append(p)
    return files


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


class Production:
    """The damaged production tree and how to put it back before each contender."""

    def __init__(self, host: TestHost, clone_files: list[Path]) -> None:
        self.host = host
        self.dir = host.rootfs / TREE.lstrip("/")
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(clone_files[0].parent), str(self.dir)], check=True)
        rng = random.Random(11)
        self.damaged: dict[str, bytes] = {}
        self.mtimes: dict[str, int] = {}
        for src in rng.sample(clone_files, N_CORRUPT):
            data = bytearray(src.read_bytes())
            for pg in sorted(rng.sample(range(len(data) // 4096), 3)):
                data[pg * 4096:(pg + 1) * 4096] = os.urandom(4096)
            self.damaged[src.name] = bytes(data)
            self.mtimes[src.name] = src.stat().st_mtime_ns
        self.originals = {n: hashlib.sha256(d).hexdigest() for n, d in self.damaged.items()}
        self.reset()

    def reset(self) -> None:
        for name, data in self.damaged.items():
            p = self.dir / name
            tmp = p.with_name(p.name + ".reset")
            tmp.write_bytes(data)
            os.utime(tmp, ns=(self.mtimes[name], self.mtimes[name]))  # in-place damage keeps mtime
            os.replace(tmp, p)
        backups = self.host.rootfs / BACKUP.lstrip("/")
        if backups.exists():
            shutil.rmtree(backups)

    def repaired(self, clone_dir: Path) -> int:
        return sum(sha(self.dir / n) == sha(clone_dir / n) for n in self.damaged)

    def backups_ok(self, run_id: str) -> int:
        b = self.host.rootfs / BACKUP.lstrip("/") / run_id / TREE.lstrip("/")
        return sum((b / n).exists() and sha(b / n) == h for n, h in self.originals.items())


def stream_rate(ep: Endpoint, transport: str, size: int = 256 << 20) -> float:
    t = time.perf_counter()
    proc = RemoteProcess.start(ep, f"head -c {size} /dev/zero", transport=transport)
    proc.close_stdin()
    got = 0
    while True:
        data = proc.read(1 << 20)
        if not data:
            break
        got += len(data)
    proc.wait()
    assert got == size, (got, size)
    return size / (time.perf_counter() - t) / (1 << 20)


def agent_start(ep: Endpoint, transport: str) -> float:
    """Connect, start the sync agent (python3 + the shipped scripts) and let it exit: the fixed cost."""
    t = time.perf_counter()
    proc = start_agent(ep, "read", transport)
    proc.write(json.dumps({"algo": "xxh3_128", "mode": "chunked", "chunk": 1 << 20, "block": 4096, "files": [],
                           "source_roots": []}).encode() + b"\n")
    proc.close_stdin()
    while proc.read(65536):
        pass
    assert proc.wait() == 0, proc.stderr_tail
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--keep", help="work directory to use (kept afterwards)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="understudy-bench-sync-"))
    work.mkdir(parents=True, exist_ok=True)
    hosts: list[TestHost] = []
    try:
        print("starting hosts, building trees ...", file=sys.stderr)
        # rsync on both hosts: the baseline needs it on production, and it brings libxxhash (xxh3 digests)
        clone = TestHost(work / "clone", hostname="bench-clone", extra_binaries=["/usr/bin/rsync"])
        prod = TestHost(work / "prod", hostname="bench-production", extra_binaries=["/usr/bin/rsync"])
        for h in (clone, prod):
            hosts.append(h)
            h.start()
        clone_dir = clone.rootfs / TREE.lstrip("/")
        files = make_tree(clone_dir)
        production = Production(prod, files)
        ce, pe = endpoint(clone, "clone"), endpoint(prod, "production")
        subprocess.run(["cat", *map(str, files), *map(str, sorted(production.dir.iterdir()))],
                       stdout=subprocess.DEVNULL, check=True)  # warm the page cache

        t = time.perf_counter()
        mc, mp = build_pair(ce, pe, [TREE])
        t_diff = time.perf_counter() - t
        diff = diff_manifests(mc, mp)
        assert sorted(e.rel.decode() for e in diff.changed) == sorted(production.damaged)
        plan = plan_sync(diff.changed, mc, mp, backup_dir=BACKUP, current_prod_manifest=mp)
        print(f"diff {t_diff:.2f}s ({mc.algo}), plan: {len(plan.files)} files, {plan.send_bytes} bytes of "
              f"changed 1 MiB chunks", file=sys.stderr)

        ssh_e = shlex.join(pe.openssh_argv("true", prod.known_hosts_path)[:-5])

        def rsync(extra: list[str]) -> tuple[float, int]:
            argv = ["rsync", "-a", *extra, "--stats", "-e", ssh_e, f"{clone_dir}/", f"root@{pe.host}:{TREE}/"]
            t0 = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True)
            dt = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"rsync failed: {proc.stderr}")
            sent = int(re.search(r"Total bytes sent: ([\d,]+)", proc.stdout).group(1).replace(",", ""))
            return dt, sent

        samples: dict[str, list[tuple[float, int, int, int, int]]] = {k: [] for k in (
            "sync_back (OpenSSH)", "sync_back (paramiko)", "rsync -a --checksum", "rsync -a")}
        n = 0
        for _ in range(args.repeat):
            for transport in ("openssh", "paramiko"):
                production.reset()
                n += 1
                t0 = time.perf_counter()
                r = sync_back(plan, ce, pe, run_id=f"bench{n}", transport=transport)
                dt = time.perf_counter() - t0
                label = "sync_back (OpenSSH)" if transport == "openssh" else "sync_back (paramiko)"
                samples[label].append((dt, r.bytes_to_production, r.data_bytes, production.repaired(clone_dir),
                                       r.bytes_to_clone))
            for extra, label in (([ "--checksum"], "rsync -a --checksum"), ([], "rsync -a")):
                production.reset()
                dt, sent = rsync(extra)
                samples[label].append((dt, sent, -1, production.repaired(clone_dir), 0))
        base = statistics.median(s[0] for s in samples["rsync -a --checksum"])
        base_bytes = max(s[1] for s in samples["rsync -a --checksum"])
        rows = []
        for label, ss in samples.items():
            t_med = statistics.median(s[0] for s in ss)
            rows.append((label, f"{t_med:.3f} s", f"{t_med / base:.2f}x", f"{max(s[1] for s in ss):,}",
                         f"{max(s[4] for s in ss):,}" if ss[-1][2] >= 0 else "— (one side is local)",
                         f"{ss[-1][2]:,}" if ss[-1][2] >= 0 else "—", f"{min(s[3] for s in ss)}/{N_CORRUPT}"))

        rates = {t: statistics.median(stream_rate(pe, t) for _ in range(3)) for t in ("openssh", "paramiko")}
        starts: dict[str, list[float]] = {"openssh": [], "paramiko": []}
        for _ in range(10):
            for tr in starts:
                starts[tr].append(agent_start(pe, tr))
        lat = {tr: statistics.median(v) for tr, v in starts.items()}

        # kill-and-resume
        rng = random.Random(args.seed)
        spec = work / "spec.json"

        def write_spec(run_id: str) -> None:
            spec.write_text(json.dumps({"plan": plan.to_dict(), "clone": dataclasses.asdict(ce),
                                        "prod": dataclasses.asdict(pe), "run_id": run_id, "on_error": "stop"}))

        def worker(timeout: float | None) -> int | None:
            p = subprocess.Popen([sys.executable, "-m", "testbed.synccli", "sync-back", str(spec)], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                return p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                return None

        production.reset()
        write_spec("full")
        t0 = time.perf_counter()
        assert worker(300) == 0
        t_worker = time.perf_counter() - t0
        ok = killed = 0
        where = {"before the first file": 0, "mid-file": 0, "between files": 0, "after the last file": 0}

        def kill_point(run_id: str) -> str:
            """Where the killed run was, from production's journal (progress records are not fsync'd,
            but the page cache holds them: the host did not crash, only the worker)."""
            j = prod.rootfs / BACKUP.lstrip("/") / run_id / "journal.jsonl"
            recs = [json.loads(x) for x in j.read_text().splitlines() if x.endswith("}")] if j.exists() else []
            files = [r for r in recs if "i" in r]
            if not files:
                return "before the first file"
            if files[-1]["state"] in ("done", "skipped", "failed"):
                finished = {r["i"] for r in files if r["state"] in ("done", "skipped", "failed")}
                return "after the last file" if len(finished) == N_CORRUPT else "between files"
            return "mid-file"

        for k in range(args.kills):
            production.reset()
            run_id = f"kill{k}"
            write_spec(run_id)
            if worker(rng.uniform(0.05, t_worker)) is None:
                killed += 1
                where[kill_point(run_id)] += 1
            try:
                sync_back(plan, ce, pe, run_id=run_id)
            except Exception as exc:  # noqa: BLE001 — counted as a failed round, reported below
                print(f"round {k}: resume failed: {exc}", file=sys.stderr)
                continue
            temps = list(production.dir.glob(".*.understudy-*.tmp"))
            if production.repaired(clone_dir) == N_CORRUPT and production.backups_ok(run_id) == N_CORRUPT \
                    and not temps:
                ok += 1
            else:
                print(f"round {k}: repaired {production.repaired(clone_dir)}, backups "
                      f"{production.backups_ok(run_id)}, temps {temps}", file=sys.stderr)
        rb_t0 = time.perf_counter()
        rb = rollback(f"kill{args.kills - 1}", pe, backup_dir=BACKUP)
        t_rb = time.perf_counter() - rb_t0
        rolled = sum(sha(production.dir / n) == h for n, h in production.originals.items())

        print(f"\n1 GiB in {N_FILES} files, {N_CORRUPT} files x 3 corrupted 4 KiB blocks "
              f"({N_CORRUPT * 3 * 4096:,} bytes changed); median of {args.repeat}; diff (build_pair, both "
              f"sides over SSH, {mc.algo}) {t_diff:.3f} s, not included in the sync_back times\n")
        print("| method | wall time | vs rsync --checksum | bytes sent to production | bytes sent to clone | "
              "file data sent | files repaired |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        print(f"\nbyte budget: sync_back (OpenSSH) sent {max(s[1] for s in samples['sync_back (OpenSSH)']):,} "
              f"bytes vs rsync --checksum {base_bytes:,}")
        print(f"\nraw stream from production, 256 MiB: OpenSSH client {rates['openssh']:.0f} MiB/s, "
              f"paramiko {rates['paramiko']:.0f} MiB/s; agent start (connect + python3 + exit, median of 10): "
              f"OpenSSH {lat['openssh']:.3f} s, paramiko {lat['paramiko']:.3f} s; transport=auto picks "
              f"{pick_transport('auto', plan.send_bytes)} for this plan ({plan.send_bytes:,} bytes upper bound)")
        print(f"\nkill-and-resume: {ok}/{args.kills} rounds ended byte-identical with every original in the "
              f"backup dir ({killed} killed before finishing: "
              + ", ".join(f"{v} {k}" for k, v in where.items())
              + f"; uninterrupted worker incl. Python start {t_worker:.2f} s; kill delay uniform in "
              f"[0.05 s, that])")
        print(f"rollback of the last round: {rb.restored} restored in {t_rb:.3f} s, {rolled}/{N_CORRUPT} "
              f"originals back")
        return 0 if ok == args.kills else 1
    finally:
        for h in hosts:
            h.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
