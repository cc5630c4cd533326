"""Disk full on production (a 1 MiB tmpfs holding one target): clear error, that target untouched,
no temp file left, and the file already replaced in the same run is rolled back."""
from __future__ import annotations

from typing import Any

import pytest

from tests.support.sync import endpoint, generic_plan, host_sha, twin_files
from workers.engines.sync import SyncError, sync_back


def test_sync_back_disk_full_leaves_production_intact(make_test_host: Any) -> None:
    prod, clone = make_test_host("production"), make_test_host("clone")
    prod.run("mkdir -p /srv/b && mount -t tmpfs -o size=1m tmpfs /srv/b")
    files = {"/srv/a/first.dat": (300_000, [3, 40]), "/srv/b/second.dat": (700_000, [5])}
    twin_files(clone, prod, files)
    before = {p: host_sha(prod, p) for p in files}
    plan = generic_plan(clone, prod, ["/srv/a", "/srv/b"])
    assert [f.prod_path for f in plan.files] == [b"/srv/a/first.dat", b"/srv/b/second.dat"]
    with pytest.raises(SyncError, match="disk full on production: /srv/b/second.dat") as info:
        sync_back(plan, endpoint(clone, "clone"), endpoint(prod, "production"), run_id="full1")
    report = info.value.report
    assert [o.state for o in report.files] == ["done", "failed"]
    assert report.files[1].kind == "disk_full"
    # the run stopped and rolled back: production is exactly as before
    assert report.rolled_back is not None and report.rolled_back.restored == 1
    for p, h in before.items():
        assert host_sha(prod, p) == h
    assert prod.run("ls -a /srv/b").stdout.split() == [".", "..", "second.dat"], "temp file removed"
