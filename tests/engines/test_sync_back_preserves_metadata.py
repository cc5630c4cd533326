"""The replaced file keeps production's owner, mode, mtime and xattrs; a hard link left in the
backup dir is the original inode (no copy), and the backup dir is the documented path."""
from __future__ import annotations

import os
from typing import Any

from tests.support.sync import BACKUP_DIR, endpoint, generic_plan, local, twin_files
from workers.engines.sync import sync_back

SET_XATTR = "python3 -c \"import os; os.setxattr('/srv/m/f.dat', 'user.origin', b'prod-42')\""
GET_XATTR = "python3 -c \"import os; print(os.getxattr('/srv/m/f.dat', 'user.origin').decode())\""


def test_sync_back_preserves_metadata(make_test_host: Any) -> None:
    prod, clone = make_test_host("production"), make_test_host("clone")
    twin_files(clone, prod, {"/srv/m/f.dat": (90_000, [4])})
    prod.run(f"chown 1234:5678 /srv/m/f.dat && chmod 0640 /srv/m/f.dat && touch -d '2024-01-02 03:04:05' "
             f"/srv/m/f.dat && {SET_XATTR}")
    before = os.stat(local(prod, "/srv/m/f.dat"))
    plan = generic_plan(clone, prod, ["/srv/m"])
    assert sync_back(plan, endpoint(clone, "clone"), endpoint(prod, "production"), run_id="meta1").ok
    after = os.stat(local(prod, "/srv/m/f.dat"))
    assert (after.st_uid, after.st_gid, after.st_mode, after.st_mtime_ns) == \
        (before.st_uid, before.st_gid, before.st_mode, before.st_mtime_ns)
    assert after.st_ino != before.st_ino  # a new file, swapped in by rename
    assert prod.run(GET_XATTR).stdout.strip() == "prod-42"
    backup = os.stat(local(prod, f"{BACKUP_DIR}/meta1/srv/m/f.dat"))
    assert backup.st_ino == before.st_ino, "the original inode itself is kept, hard-linked"
    assert local(prod, "/srv/m/f.dat").read_bytes() == local(clone, "/srv/m/f.dat").read_bytes()
