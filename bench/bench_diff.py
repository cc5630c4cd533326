#!/usr/bin/env python3
"""Benchmark: understudy's clone-vs-production diff against rsync, and its hashing against b3sum.

Setup (same run, warm page cache, 2-core machine):
  * "clone" tree on this machine: 1 GiB in 200 files of random data;
  * "production" tree: a copy inside a real sshd test host (own rootfs, network namespace),
    with 10 files corrupted in place (3 x 4 KiB each, size and mtime kept: rsync -a alone misses these).

Measured (median of --repeat runs):
  1. diff wall time: negotiate + hash both sides concurrently (local agent + agent over SSH) +
     compare, vs ``rsync -a --checksum --dry-run --itemize-changes`` over SSH on the same trees;
  2. hashing throughput of the agent on the local tree vs ``b3sum --num-threads 1`` and
     ``sha256sum`` over the same files.

Usage:  .venv/bin/python bench/bench_diff.py [--repeat 5] [--keep DIR]
Prints a markdown table (copied into docs/diff.md).
"""
from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.engines.endpoint import Endpoint  # noqa: E402
from workers.engines.manifest import (  # noqa: E402
    Algorithm, build_local_manifest, build_pair, diff_manifests, negotiate_algorithm, probe_host,
)
from testbed.host import TestHost  # noqa: E402

GIB = 1 << 30
N_FILES = 200
N_CORRUPT = 10
BARE_PYTHON = "/usr/bin/python3"


def make_tree(root: Path, seed: int = 7) -> list[Path]:
    root.mkdir(parents=True)
    size = GIB // N_FILES
    rng = random.Random(seed)
    files = []
    block = os.urandom(size + 4096)
    for i in range(N_FILES):
        p = root / f"datafile{i:03d}.dbf"
        # distinct content per file without paying for 1 GiB of urandom: rotate a random block
        off = rng.randrange(4096)
        p.write_bytes(block[off:off + size - 8] + i.to_bytes(8, "big"))
        files.append(p)
    return files


def corrupt(files: list[Path], seed: int = 11) -> list[tuple[str, list[int]]]:
    rng = random.Random(seed)
    done = []
    for p in rng.sample(files, N_CORRUPT):
        st = p.stat()
        pages = sorted(rng.sample(range(st.st_size // 4096), 3))
        with open(p, "r+b") as fh:
            for pg in pages:
                fh.seek(pg * 4096)
                fh.write(os.urandom(4096))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # in-place damage keeps mtime and size
        done.append((p.name, pages))
    return done


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", help="work directory to use (kept afterwards)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="understudy-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    host = None
    try:
        print("building trees ...", file=sys.stderr)
        local = work / "clone"
        if local.exists():
            shutil.rmtree(local)
        files = make_tree(local)
        # rsync on the host: the baseline needs it, and it brings libxxhash (the agent then gets xxh3)
        host = TestHost(work / "host", hostname="bench-production", extra_binaries=["/usr/bin/rsync"])
        host.start()
        remote_dir = "/srv/bench"
        remote = host.rootfs / remote_dir.lstrip("/")
        if remote.exists():
            shutil.rmtree(remote)
        remote.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(local), str(remote)], check=True)
        damaged = corrupt([remote / f.name for f in files])
        ep = Endpoint(host.address, host.port, host.user, str(host.client_key_path), host.host_public_key,
                      label="bench-production")
        subprocess.run(["cat", *map(str, files), *map(str, sorted(remote.iterdir()))],
                       stdout=subprocess.DEVNULL, check=True)  # warm the page cache

        rows: list[tuple[str, str, str]] = []
        probe = probe_host(ep)
        t_neg, algo = timed(lambda: negotiate_algorithm([None, ep]), 3)
        print(f"negotiated {algo} (host: {probe.detail.get('sources')}) in {t_neg:.3f}s", file=sys.stderr)

        def our_diff(a: Algorithm | None = None):
            # a=None: what the diff step does — connect, negotiate over the same session, hash, compare
            mc, mp = build_pair(None, ep, [local], [remote_dir], algo=a)
            assert (mc.algo, mp.algo) == (algo.name, algo.name)
            return diff_manifests(mc, mp)

        kh = host.known_hosts_path
        ssh_e = shlex.join(ep.openssh_argv("true", kh)[:-5])  # without "-l user -- host cmd"
        rsync_argv = ["rsync", "-a", "--checksum", "--dry-run", "--itemize-changes", "-e", ssh_e,
                      f"{local}/", f"{ep.user}@{ep.host}:{remote_dir}/"]

        def rsync_diff() -> list[str]:
            proc = subprocess.run(rsync_argv, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"rsync failed ({proc.returncode}): {proc.stderr.strip()}")
            out = proc.stdout
            return sorted(line.split(" ", 1)[1] for line in out.splitlines() if line[:2] in ("<f", ">f"))

        # interleaved (ours, rsync, ours-known) rounds: others share this 2-core machine, load drifts
        t_neg_l, t_known_l, t_rsync_l = [], [], []
        diff = rs = None
        for _ in range(args.repeat):
            t, diff = timed(our_diff, 1)
            t_neg_l.append(t)
            t, rs = timed(rsync_diff, 1)
            t_rsync_l.append(t)
            t, _ = timed(lambda: our_diff(algo), 1)
            t_known_l.append(t)
        t_ours_neg, t_ours, t_rsync = (statistics.median(x) for x in (t_neg_l, t_known_l, t_rsync_l))
        ratio_neg = statistics.median(a / b for a, b in zip(t_neg_l, t_rsync_l))
        ratio_known = statistics.median(a / b for a, b in zip(t_known_l, t_rsync_l))
        found = sorted(e.rel.decode() for e in diff.changed)
        expect = sorted(n for n, _ in damaged)
        assert found == expect, f"diff found {found}, expected {expect}"
        assert rs == expect, f"rsync found {rs}, expected {expect}"
        chunks = sum(len(e.chunks) for e in diff.changed)

        # sha256 on both sides (what a host without libxxhash gets), for the record
        sha = Algorithm("sha256", "chunked")

        def sha_diff():
            mc, mp = build_pair(None, ep, [local], [remote_dir], algo=sha)
            return diff_manifests(mc, mp)

        t_sha, _ = timed(sha_diff, max(1, args.repeat // 2))
        rows.append(("diff, understudy (negotiated " + algo.name + ", incl. negotiation)",
                     f"{t_ours_neg:.3f} s", f"{ratio_neg:.2f}x rsync"))
        rows.append((f"diff, understudy ({algo.name}, algorithm known)", f"{t_ours:.3f} s",
                     f"{ratio_known:.2f}x rsync"))
        rows.append(("diff, understudy (sha256 both sides)", f"{t_sha:.3f} s", f"{t_sha / t_rsync:.2f}x rsync"))
        rows.append(("diff, `rsync -a --checksum --dry-run --itemize-changes` over SSH", f"{t_rsync:.3f} s",
                     "1.00x"))

        # hashing throughput, local tree, warm cache
        total = sum(f.stat().st_size for f in files)
        names = [str(f) for f in files]

        def tool(argv: list[str]):
            return lambda: subprocess.run(argv + names, stdout=subprocess.DEVNULL, check=True)

        def agent(algo_name: str, python: str | None = None, threads: int = 0):
            return lambda: build_local_manifest([local], algo=algo_name, python=python, threads=threads)

        contenders = [
            ("agent xxh3_128 (xxhash module, 2 threads)", agent("xxh3_128")),
            ("agent xxh3_128 (bare python3 + libxxhash/ctypes, 2 threads)", agent("xxh3_128", BARE_PYTHON)),
            ("agent xxh3_128 (xxhash module, 1 thread)", agent("xxh3_128", threads=1)),
            ("agent blake3 (blake3 module, 2 threads)", agent("blake3")),
            ("agent sha256 (hashlib, 2 threads)", agent("sha256")),
            ("agent sha256 (hashlib, 1 thread)", agent("sha256", threads=1)),
            ("`b3sum --num-threads 1`", tool(["b3sum", "--num-threads", "1"])),
            ("`xxhsum -H2`", tool(["xxhsum", "-H2"])),
            ("`sha256sum` (coreutils)", tool(["sha256sum"])),
        ]
        # round-robin so every contender sees the same mix of machine load
        samples: dict[str, list[float]] = {name: [] for name, _ in contenders}
        for _ in range(args.repeat):
            for name, fn in contenders:
                t, _ = timed(fn, 1)
                samples[name].append(total / t / GIB)
        base = samples["`b3sum --num-threads 1`"]
        hashing = [(name, statistics.median(v), statistics.median(a / b for a, b in zip(v, base)))
                   for name, v in samples.items()]
        print()
        print(f"load average at the end: {os.getloadavg()[0]:.2f}; ratios are medians of per-round ratios.")
        print(f"1 GiB in {N_FILES} files, {N_CORRUPT} files with 3 corrupted 4 KiB pages each; "
              f"production side on an sshd test host ({host.address}); median of {args.repeat}; "
              f"{os.cpu_count()} cores.")
        print()
        print("| measurement | time | vs baseline |")
        print("|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} |")
        print()
        print(f"Both found the same {len(expect)} files; understudy also names the {chunks} differing "
              f"1 MiB chunks (of {diff.totals['changed_bytes'] // (1 << 20)} MiB in changed files, "
              f"{diff.totals['percent_of_data']}% of data).")
        print()
        print("| hashing (local tree, warm cache) | GiB/s (median) | vs `b3sum --num-threads 1` (median ratio) |")
        print("|---|---|---|")
        for name, rate, ratio in hashing:
            print(f"| {name} | {rate:.2f} | {ratio:.0%} |")
        return 0
    finally:
        if host is not None:
            host.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
