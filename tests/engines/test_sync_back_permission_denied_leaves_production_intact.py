"""Permission denied on production (a read-only bind mount over the target's directory):
clear error, the target untouched, nothing else written."""
from __future__ import annotations

from typing import Any

import pytest

from tests.support.sync import endpoint, generic_plan, host_sha, twin_files
from workers.engines.sync import SyncError, sync_back


def test_sync_back_permission_denied_leaves_production_intact(make_test_host: Any) -> None:
    prod, clone = make_test_host("production"), make_test_host("clone")
    files = {"/srv/ro/locked.dat": (200_000, [1, 2])}
    twin_files(clone, prod, files)
    plan = generic_plan(clone, prod, ["/srv/ro"])
    prod.run("mount --bind /srv/ro /srv/ro && mount -o remount,ro,bind /srv/ro")
    before = host_sha(prod, "/srv/ro/locked.dat")
    with pytest.raises(SyncError, match="permission denied on production: /srv/ro/locked.dat") as info:
        sync_back(plan, endpoint(clone, "clone"), endpoint(prod, "production"), run_id="perm1")
    assert info.value.report.files[0].kind == "permission_denied"
    assert host_sha(prod, "/srv/ro/locked.dat") == before
    assert prod.run("ls -a /srv/ro").stdout.split() == [".", "..", "locked.dat"]
