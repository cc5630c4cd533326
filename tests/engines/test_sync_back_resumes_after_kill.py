"""SIGKILL the worker (its whole process group, SSH clients included) at random points of a
sync-back, then run again with the same run id: every file ends byte-identical to the clone, every
original is in the run's backup dir, no temp file is left. Each round is rolled back afterwards
(which must also restore the originals exactly) so the next round starts from the damaged state."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.sync import (BACKUP_DIR, endpoint, generic_plan, host_sha, leftover_temps,
                                spec_file, twin_files)
from workers.engines.sync import rollback, sync_back

ROOT = Path(__file__).resolve().parents[2]


def kill_at(spec: Path, delay: float) -> int | None:
    """Start the worker, SIGKILL its process group after ``delay`` s; the exit code if it finished first."""
    proc = subprocess.Popen([sys.executable, "-m", "testbed.synccli", "sync-back", str(spec)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def test_sync_back_resumes_after_kill(make_test_host: Any, tmp_path: Path) -> None:
    prod, clone = make_test_host("production"), make_test_host("clone")
    files = {f"/srv/k/f{i:02d}.dat": (2_000_000, [i, 100 + i, 300]) for i in range(6)}
    twin_files(clone, prod, files)
    originals = {p: host_sha(prod, p) for p in files}
    wanted = {p: host_sha(clone, p) for p in files}
    plan = generic_plan(clone, prod, ["/srv/k"])
    ce, pe = endpoint(clone, "clone"), endpoint(prod, "production")
    # how long an uninterrupted worker takes, so the kills land anywhere in a run
    t0 = time.monotonic()
    assert kill_at(spec_file(tmp_path / "s0.json", plan, clone, prod, "k0", on_error="stop"), 120) == 0
    full = time.monotonic() - t0
    rollback("k0", pe, backup_dir=BACKUP_DIR)
    rng = random.Random(int(os.environ.get("SYNC_KILL_SEED", "6")))
    killed = 0
    for n in range(1, 5):
        run_id = f"k{n}"
        if kill_at(spec_file(tmp_path / f"s{n}.json", plan, clone, prod, run_id, on_error="stop"),
                   rng.uniform(0.05, full)) is None:
            killed += 1
        report = sync_back(plan, ce, pe, run_id=run_id)
        assert report.ok, report.error
        for p in files:
            assert host_sha(prod, p) == wanted[p], f"round {n}: {p} differs from the clone"
            assert host_sha(prod, f"{BACKUP_DIR}/{run_id}{p}") == originals[p], f"round {n}: backup of {p}"
        assert leftover_temps(prod, "/srv/k") == []
        rb = rollback(run_id, pe, backup_dir=BACKUP_DIR)
        assert rb.ok and all(host_sha(prod, p) == originals[p] for p in files)
    assert killed >= 2, "most rounds must really be interrupted"
