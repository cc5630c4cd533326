"""Rollback restores every replaced file from the backup dir (a verified copy, not the link)."""
from __future__ import annotations

import os
from typing import Any

import pytest

from tests.support.sync import (BACKUP_DIR, endpoint, local, make_plan, repaired_clone, sha,
                                stop_service)
from workers.engines.events import RecordingEmitter
from workers.engines.sync import RollbackError, rollback, sync_back


def test_sync_back_rollback_restores_originals(production_host: Any, make_test_host: Any) -> None:
    prod = production_host
    clone = repaired_clone(make_test_host, prod)
    stop_service(prod)
    plan = make_plan(clone, prod)
    originals = {f.prod_path: sha(local(prod, f.prod_path)) for f in plan.files}
    pe = endpoint(prod, "production")
    sync_back(plan, endpoint(clone, "clone"), pe, run_id="rb1")
    assert all(sha(local(prod, p)) != h for p, h in originals.items())
    em = RecordingEmitter()
    report = rollback("rb1", pe, backup_dir=BACKUP_DIR, emitter=em)
    assert report.ok and report.restored == len(plan.files)
    for p, h in originals.items():
        assert sha(local(prod, p)) == h
        backup = local(prod, f"{BACKUP_DIR}/rb1/{p.decode().lstrip('/')}")
        # restored by copy + rename: the backup is a separate inode and stays intact
        assert os.stat(backup).st_ino != os.stat(local(prod, p)).st_ino
        assert sha(backup) == h
    # rolling back twice is harmless: everything is already the original
    again = rollback("rb1", pe, backup_dir=BACKUP_DIR)
    assert again.restored == 0 and again.unchanged == len(plan.files)
    # a file changed after the sync is not clobbered by a rollback
    sync_back(plan, endpoint(clone, "clone"), pe, run_id="rb2")
    victim = local(prod, plan.files[0].prod_path)
    with open(victim, "r+b") as fh:
        fh.write(b"written after the sync")
    changed = sha(victim)
    with pytest.raises(RollbackError, match="changed after the sync"):
        rollback("rb2", pe, backup_dir=BACKUP_DIR)
    assert sha(victim) == changed
    with pytest.raises(RollbackError, match="no backup for run"):
        rollback("nosuchrun", pe, backup_dir=BACKUP_DIR)
