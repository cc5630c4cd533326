"""The preview (plan_sync) from manifests alone: which chunks and bytes travel, whole files when the
size changed, the backup location, drift conflicts (content and mtime guards), overrides, and a
fingerprint that changes with the plan and survives storage."""
from __future__ import annotations

import json

import pytest

from workers.engines.manifest import Entry, Manifest, diff_manifests
from workers.engines.sync import PlanError, SyncPlan, plan_sync

C = 1 << 20


def manifest(files: dict[bytes, tuple[int, list[str]]], mtime_ns: int = 1_000_000_000_000) -> Manifest:
    m = Manifest(roots=[b"/data"], algo="xxh3_128", complete=True)
    m.add(Entry(root=0, rel=b"", type="d"))
    for rel, (size, chunks) in files.items():
        m.add(Entry(root=0, rel=rel, type="f", size=size, digest="h-" + "".join(chunks), chunks=chunks,
                    mtime_ns=mtime_ns))
    return m


def test_sync_plan_preview() -> None:
    clone = manifest({b"a.dbf": (3 * C, ["a0", "a1", "a2"]), b"b.dbf": (2 * C + 10, ["b0", "b1", "b2"]),
                      b"same.dbf": (C, ["s0"])})
    prod = manifest({b"a.dbf": (3 * C, ["a0", "XX", "a2"]), b"b.dbf": (C, ["b0"]), b"same.dbf": (C, ["s0"])})
    diff = diff_manifests(clone, prod)
    plan = plan_sync(diff.changed, clone, prod, backup_dir="/var/backups/sync", current_prod_manifest=prod)
    a, b = plan.files
    assert (a.rel, a.chunks, a.whole, a.send_bytes) == (b"a.dbf", [1], False, C)
    # size changed: the whole file (all of the clone's chunks, the last one partial)
    assert (b.rel, b.chunks, b.whole, b.send_bytes) == (b"b.dbf", [0, 1, 2], True, 2 * C + 10)
    assert plan.send_bytes == 3 * C + 10 and not plan.blocked
    d = plan.to_dict()
    assert d["files"][0]["backup"] == "/var/backups/sync/{run_id}/data/a.dbf"
    assert d["totals"] == {"files": 2, "send_bytes": 3 * C + 10, "chunks": 4, "blocked": 0}
    stored = SyncPlan.from_dict(json.loads(json.dumps(d)))
    assert stored.fingerprint() == plan.fingerprint()
    only_a = plan_sync([e for e in diff.changed if e.rel == b"a.dbf"], clone, prod, backup_dir="/var/backups/sync",
                       current_prod_manifest=prod)
    assert only_a.fingerprint() != plan.fingerprint(), "a different selection needs a new approval"


def test_sync_plan_drift_guards() -> None:
    clone = manifest({b"a.dbf": (C, ["a0"]), b"b.dbf": (C, ["b0"])})
    at_clone = manifest({b"a.dbf": (C, ["XX"]), b"b.dbf": (C, ["YY"])})
    now = manifest({b"a.dbf": (C, ["XX"]), b"b.dbf": (C, ["ZZ"])})
    diff = diff_manifests(clone, at_clone)
    plan = plan_sync(diff.changed, clone, at_clone, backup_dir="/b", current_prod_manifest=now)
    assert [(f.rel, f.conflicts, f.blocked) for f in plan.files] == [
        (b"a.dbf", [], False), (b"b.dbf", ["content_changed"], True)]
    ok = plan_sync(diff.changed, clone, at_clone, backup_dir="/b", current_prod_manifest=now, overrides=["b.dbf"])
    assert not ok.blocked and ok.files[1].overridden and ok.files[1].expect_hash == "h-ZZ"
    # mtime guard: production's current manifest against the clone's point in time (seconds)
    late = manifest({b"a.dbf": (C, ["XX"]), b"b.dbf": (C, ["YY"])}, mtime_ns=2_000_000_000_000)
    p2 = plan_sync(diff.changed, clone, late, backup_dir="/b", clone_point_in_time=1500)
    assert [f.conflicts for f in p2.files] == [["mtime_after_clone"], ["mtime_after_clone"]]
    p3 = plan_sync(diff.changed, clone, at_clone, backup_dir="/b", clone_point_in_time=1500)
    assert not p3.blocked
    with pytest.raises(PlanError, match="drift guard is required"):
        plan_sync(diff.changed, clone, at_clone, backup_dir="/b")
    with pytest.raises(PlanError, match="regular files"):
        plan_sync([e for e in diff_manifests(clone, manifest({b"a.dbf": (C, ["XX"])})).entries
                   if e.category == "missing_on_production"], clone, at_clone, backup_dir="/b",
                  current_prod_manifest=at_clone)


def test_a_file_an_earlier_attempt_already_replaced_is_not_drift() -> None:
    """A sync-back killed after swapping a.dbf is retried: production now holds the clone's content there. The
    retry's plan claims no drift for it and still expects the original (whose backup the rollback restores);
    a file changed to anything else stays blocked."""
    clone = manifest({b"a.dbf": (C, ["a0"]), b"b.dbf": (C, ["b0"])})
    at_diff = manifest({b"a.dbf": (C, ["XX"]), b"b.dbf": (C, ["YY"])})
    after_first_attempt = manifest({b"a.dbf": (C, ["a0"]), b"b.dbf": (C, ["ZZ"])})
    diff = diff_manifests(clone, at_diff)
    plan = plan_sync(diff.changed, clone, at_diff, backup_dir="/b", current_prod_manifest=after_first_attempt)
    a, b = plan.files
    assert (a.conflicts, a.blocked, a.expect_hash, a.chunks) == ([], False, "h-XX", [0])
    assert (b.conflicts, b.blocked) == (["content_changed"], True)
    first = plan_sync(diff.changed, clone, at_diff, backup_dir="/b", current_prod_manifest=at_diff)
    assert a.to_dict() == first.files[0].to_dict(), "planned exactly as the first attempt was"
