#!/usr/bin/env python3
"""Benchmark: understudy's P2V clone of a ~500 MiB live test host vs the manual baseline.

Setup (same run, warm page cache): a real sshd production test host (own rootfs, network
namespace) with ``--filler-mb`` MiB of incompressible data under /srv/filler and a Debian
kernel + initramfs in /boot.

Measured per round (rounds alternate product / baseline; medians reported):
  * product: ``clone_host`` onto ``--uri`` (qemu:///system under TCG by default) up to a
    ready disk image (connect .. image: estimate, capacity check, tar stream with progress,
    delta pass + consistency listing, fix-ups, mke2fs -d + qemu-img convert), then
    define + boot until the clone answers SSH with its new pinned key (reported apart);
  * baseline: ``ssh host tar c | tar x`` (OpenSSH, same pinned key) + ``mke2fs -t ext4 -d``
    (same image size) + ``qemu-img convert -O qcow2`` — the manual recipe, no checks.

Target: product up to a ready disk image <= 1.5x the baseline.

Usage:  scripts/libvirt-up.sh && UNDERSTUDY_FORCE_TCG=1 .venv/bin/python bench/bench_clone.py \
            [--filler-mb 500] [--rounds 3] [--uri qemu:///system]
Prints a markdown table (copied into docs/clone.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.engines.clone import CloneOptions, CloneResult, clone_host, destroy_clone  # noqa: E402
from workers.engines.endpoint import Endpoint  # noqa: E402
from workers.engines.events import NullEmitter  # noqa: E402
from testbed.boot import install_boot  # noqa: E402
from testbed.host import TestHost  # noqa: E402

IMAGE_PHASES = ("connect", "estimate", "capacity", "stream", "delta", "fixup", "image")


def run_product(ep: Endpoint, uri: str, storage: Path, key: Path, i: int) -> CloneResult:
    opts = CloneOptions(name=f"us-bench-{os.getpid()}-{i}", hostname="bench-clone", rehearsal_id="bench",
                        worker_key_path=str(key), memory_mib=512, disable_services=["minidb"])
    return clone_host(ep, hypervisor_uri=uri, storage_dir=storage, options=opts, emitter=NullEmitter())


def run_baseline(host: TestHost, work: Path, size_bytes: int) -> dict[str, float]:
    staging, raw, qcow2 = work / "staging", work / "disk.raw", work / "disk.qcow2"
    staging.mkdir()
    ssh = " ".join(shlex.quote(a) for a in host.target.ssh_argv("tar -C / -cf - --one-file-system ."))
    t = {}
    t0 = time.monotonic()
    # tar exits 1 on "file changed as we read it" (sshd's log): not a failure of the recipe
    subprocess.run(f"{ssh} | tar -x -f - -C {shlex.quote(str(staging))}", shell=True, check=False)
    t["tar over ssh"] = time.monotonic() - t0
    t0 = time.monotonic()
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(staging), str(raw), f"{size_bytes // 1024}k"],
                   check=True)
    t["mke2fs -d"] = time.monotonic() - t0
    t0 = time.monotonic()
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)], check=True)
    t["qemu-img convert"] = time.monotonic() - t0
    t["total"] = sum(t.values())
    shutil.rmtree(staging)
    raw.unlink()
    qcow2.unlink()
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--filler-mb", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--uri", default="qemu:///system")
    args = ap.parse_args()
    os.environ.setdefault("UNDERSTUDY_FORCE_TCG", "1")
    work = Path(tempfile.mkdtemp(prefix="bench-clone-"))
    host = TestHost(work / "host", hostname="bench-prod", filler_mb=args.filler_mb, minidb=True)
    try:
        host.start()
        install_boot(host.rootfs)
        du = subprocess.run(["du", "-sm", "--one-file-system", str(host.rootfs)], capture_output=True,
                            text=True).stdout.split()[0]
        key = work / "worker_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        ep = Endpoint(host.address, host.port, "root", str(host.client_key_path), host.host_public_key)
        products: list[CloneResult] = []
        baselines: list[dict[str, float]] = []
        for i in range(args.rounds):
            order = ("product", "baseline") if i % 2 == 0 else ("baseline", "product")
            for which in order:
                if which == "product":
                    r = run_product(ep, args.uri, work / "hv", key, i)
                    products.append(r)
                    try:
                        # -U: the running clone holds qemu's image lock
                        vsize = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", r.disk_path],
                                                          capture_output=True, text=True, check=True).stdout
                                           )["virtual-size"]
                    finally:
                        destroy_clone(args.uri, r)   # never leave a running VM behind
                    print(f"round {i} product: {r.timings} booted={r.booted}", file=sys.stderr)
                else:
                    vs = vsize if products else (int(du) * 2 << 20)
                    bwork = work / f"baseline-{i}"
                    bwork.mkdir()
                    baselines.append(run_baseline(host, bwork, vs))
                    print(f"round {i} baseline: {baselines[-1]}", file=sys.stderr)
        med = statistics.median
        p_image = [sum(r.timings.get(k, 0.0) for k in IMAGE_PHASES) for r in products]
        p_boot = [r.timings.get("define", 0.0) + r.timings.get("boot", 0.0) for r in products]
        b_total = [b["total"] for b in baselines]
        ratio = med(p_image) / med(b_total)
        print(f"\nClone of a live test host: {du} MiB rootfs ({args.filler_mb} MiB filler + kernel/initramfs "
              f"in /boot), {args.rounds} rounds, medians, {os.cpu_count()} cores, libvirt {args.uri}, TCG.\n")
        print("| step | understudy clone (s) | manual baseline (s) |")
        print("|---|---:|---:|")
        for k in IMAGE_PHASES:
            print(f"| {k} | {med([r.timings.get(k, 0.0) for r in products]):.2f} | |")
        for k in ("tar over ssh", "mke2fs -d", "qemu-img convert"):
            print(f"| {k} | | {med([b[k] for b in baselines]):.2f} |")
        print(f"| **up to a ready disk image** | **{med(p_image):.2f}** | **{med(b_total):.2f}** |")
        print(f"| ratio (target <= 1.5x) | **{ratio:.2f}x** | 1.00x |")
        print(f"| define + boot to SSH with the pinned key (separate) | {med(p_boot):.2f} | — |")
        print(f"| end to end (booted, SSH-ready) | {med([r.timings['total'] for r in products]):.2f} | — |")
        print(f"\nper round, product up to image: {', '.join(f'{x:.2f}' for x in p_image)}; "
              f"baseline: {', '.join(f'{x:.2f}' for x in b_total)}; booted: {[r.booted for r in products]}")
        return 0 if ratio <= 1.5 else 1
    finally:
        host.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
