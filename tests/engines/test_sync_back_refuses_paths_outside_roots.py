"""Path safety: no '..', nothing outside the diff's roots, never through a symlink (checked on the
host with O_NOFOLLOW, not only in the plan), odd names pass as data, never through a shell."""
from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.sync import endpoint, generic_plan, host_sha, put, twin_files
from workers.engines.manifest import DiffEntry, Manifest
from workers.engines.sync import SyncError, SyncPlan, UnsafePath, plan_sync, sync_back


def _entry(rel: bytes) -> DiffEntry:
    return DiffEntry("changed", 0, rel, b"/srv/x/" + rel, b"/srv/x/" + rel, "f", "f", 1, 1)


@pytest.mark.parametrize("rel", [b"../etc/passwd", b"a/../../etc/passwd", b"/etc/passwd", b"a//b", b"./a", b""])
def test_plan_refuses_unsafe_relative_paths(rel: bytes) -> None:
    m = Manifest(roots=[b"/srv/x"], algo="sha256", complete=True)
    with pytest.raises(UnsafePath):
        plan_sync([_entry(rel)], m, m, backup_dir="/var/backups/s", current_prod_manifest=m)


def test_tampered_stored_plan_is_refused(make_test_host: Any) -> None:
    prod, clone = make_test_host("production"), make_test_host("clone")
    twin_files(clone, prod, {"/srv/t/f.dat": (20_000, [1])})
    plan = generic_plan(clone, prod, ["/srv/t"])
    stored = plan.to_dict()
    bad = json.loads(json.dumps(stored))
    bad["files"][0]["prod_path"] = "L2V0Yy9wYXNzd2Q="  # /etc/passwd
    with pytest.raises(UnsafePath, match="not its root joined"):
        SyncPlan.from_dict(bad)
    bad = json.loads(json.dumps(stored))
    bad["backup_dir"] = "L3Nydi90L2JhY2t1cA=="  # /srv/t/backup: inside the synced root
    with pytest.raises(UnsafePath, match="inside the synced root"):
        SyncPlan.from_dict(bad)


def test_sync_back_refuses_symlinks_out_of_the_root(make_test_host: Any) -> None:
    prod, clone = make_test_host("production"), make_test_host("clone")
    files = {"/srv/r/sub/victim.dat": (30_000, [2]), "/srv/r/it's a $(name).dat": (30_000, [1])}
    twin_files(clone, prod, files)
    put(prod, "/srv/outside/victim.dat", b"must never be written")
    plan = generic_plan(clone, prod, ["/srv/r"])
    # odd names are data, not shell: this one syncs fine
    odd = [f for f in plan.files if b"$(name)" in f.rel]
    report = sync_back(SyncPlan(**{**plan.__dict__, "files": odd}), endpoint(clone, "clone"),
                       endpoint(prod, "production"), run_id="odd1")
    assert report.ok and host_sha(prod, "/srv/r/it's a $(name).dat") == host_sha(clone, "/srv/r/it's a $(name).dat")
    # after the plan, a directory inside the root is swapped for a symlink leading out of it
    prod.run("mv /srv/r/sub /srv/r/sub.old && ln -s /srv/outside /srv/r/sub")
    outside = host_sha(prod, "/srv/outside/victim.dat")
    sub = [f for f in plan.files if f.rel == b"sub/victim.dat"]
    with pytest.raises(SyncError, match="symlink") as info:
        sync_back(SyncPlan(**{**plan.__dict__, "files": sub}), endpoint(clone, "clone"),
                  endpoint(prod, "production"), run_id="sym1")
    assert info.value.report.files[0].kind == "unsafe_path"
    assert host_sha(prod, "/srv/outside/victim.dat") == outside
    # the file itself replaced by a symlink: refused too (O_NOFOLLOW on the last component)
    prod.run("rm /srv/r/sub && mv /srv/r/sub.old /srv/r/sub && rm /srv/r/sub/victim.dat && "
             "ln -s /srv/outside/victim.dat /srv/r/sub/victim.dat")
    with pytest.raises(SyncError, match="symlink"):
        sync_back(SyncPlan(**{**plan.__dict__, "files": sub}), endpoint(clone, "clone"),
                  endpoint(prod, "production"), run_id="sym2")
    assert host_sha(prod, "/srv/outside/victim.dat") == outside
