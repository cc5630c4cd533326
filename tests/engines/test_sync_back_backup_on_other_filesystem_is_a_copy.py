"""A target on another filesystem than the backup dir cannot be hard-linked: the original is copied
into the backup dir (fsync'd), and rollback restores it just the same."""
from __future__ import annotations

from typing import Any

from tests.support.sync import BACKUP_DIR, endpoint, generic_plan, host_sha, twin_files
from workers.engines.sync import rollback, sync_back


def test_sync_back_backup_on_other_filesystem_is_a_copy(make_test_host: Any) -> None:
    prod, clone = make_test_host("production"), make_test_host("clone")
    prod.run("mkdir -p /srv/t && mount -t tmpfs -o size=4m tmpfs /srv/t")
    twin_files(clone, prod, {"/srv/t/f.dat": (500_000, [0, 100])})
    original = host_sha(prod, "/srv/t/f.dat")
    plan = generic_plan(clone, prod, ["/srv/t"])
    pe = endpoint(prod, "production")
    assert sync_back(plan, endpoint(clone, "clone"), pe, run_id="xdev1").ok
    assert host_sha(prod, "/srv/t/f.dat") == host_sha(clone, "/srv/t/f.dat")
    assert host_sha(prod, f"{BACKUP_DIR}/xdev1/srv/t/f.dat") == original
    assert rollback("xdev1", pe, backup_dir=BACKUP_DIR).restored == 1
    assert host_sha(prod, "/srv/t/f.dat") == original
