"""Production written to while the sync runs: that file is not swapped ("target changed during
sync"), and the drift guard blocks files that changed between the diff and the approval."""
from __future__ import annotations

from typing import Any

import pytest

from tests.support.sync import endpoint, generic_plan, host_sha, put, twin_files
from workers.engines.manifest import build_pair, diff_manifests
from workers.engines.sync import MemoryJournal, SyncError, SyncRefused, plan_sync, sync_back


class WriteDuringSync(MemoryJournal):
    """When production reports the file copied, someone writes to it (before the swap)."""

    def __init__(self, host: Any, path: str) -> None:
        super().__init__()
        self.host, self.path = host, path

    def record(self, run_id: str, path: str, state: str, detail: dict) -> None:
        super().record(run_id, path, state, detail)
        if state == "copied" and path == self.path:
            self.host.run(f"printf 'late write' | dd of='{self.path}' bs=1 seek=10 conv=notrunc 2>/dev/null")


def test_sync_back_target_changed_during_sync(make_test_host: Any) -> None:
    prod, clone = make_test_host("production"), make_test_host("clone")
    files = {"/srv/d/a.dat": (100_000, [0]), "/srv/d/b.dat": (150_000, [7])}
    twin_files(clone, prod, files)
    plan = generic_plan(clone, prod, ["/srv/d"])
    journal = WriteDuringSync(prod, "/srv/d/b.dat")
    with pytest.raises(SyncError, match="target changed during sync: /srv/d/b.dat") as info:
        sync_back(plan, endpoint(clone, "clone"), endpoint(prod, "production"), run_id="chg1", journal=journal)
    report = info.value.report
    assert [o.kind for o in report.files] == [None, "target_changed"]
    after_write = host_sha(prod, "/srv/d/b.dat")
    # the late write survives (nothing swapped over it), a.dat was rolled back to its original
    assert "late write" in prod.run("head -c 40 /srv/d/b.dat", input=b"").stdout.decode("latin-1")
    assert report.rolled_back is not None and report.rolled_back.restored == 1
    assert host_sha(prod, "/srv/d/b.dat") == after_write


def test_drift_guard_blocks_until_overridden(make_test_host: Any) -> None:
    prod, clone = make_test_host("production"), make_test_host("clone")
    files = {"/srv/e/x.dat": (50_000, [2]), "/srv/e/y.dat": (50_000, [3])}
    twin_files(clone, prod, files)
    ce, pe = endpoint(clone, "clone"), endpoint(prod, "production")
    mc, mp_at_clone = build_pair(ce, pe, ["/srv/e"])
    diff = diff_manifests(mc, mp_at_clone)
    put(prod, "/srv/e/y.dat", b"production kept writing")  # after the clone was taken
    _, mp_now = build_pair(ce, pe, ["/srv/e"])
    plan = plan_sync(diff.changed, mc, mp_at_clone, backup_dir="/var/lib/understudy-sync",
                     current_prod_manifest=mp_now)
    assert [(f.rel, f.blocked, f.conflicts) for f in plan.files] == [
        (b"x.dat", False, []), (b"y.dat", True, ["content_changed"])]
    with pytest.raises(SyncRefused, match="y.dat"):
        sync_back(plan, ce, pe, run_id="drift1")
    approved = plan_sync(diff.changed, mc, mp_at_clone, backup_dir="/var/lib/understudy-sync",
                         current_prod_manifest=mp_now, overrides=["y.dat"])
    assert not approved.blocked and approved.fingerprint() != plan.fingerprint()
    # the override replaces what production has NOW (the content the person saw), whole file: sizes differ
    assert approved.files[1].whole and approved.files[1].expect_size == len(b"production kept writing")
    report = sync_back(approved, ce, pe, run_id="drift2")
    assert report.ok
    for p in files:
        assert host_sha(prod, p) == host_sha(clone, p)
