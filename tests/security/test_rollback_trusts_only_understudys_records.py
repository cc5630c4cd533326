"""Rollback takes its file list from the approved plan and understudy's own journal, never from the
journal file on production; the backup dir must be the ssh user's, 0700, with no symlink in its path."""
from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

import pytest

from tests.support.sync import BACKUP_DIR, endpoint, generic_plan, local
from workers.engines.agent import syncagent
from workers.engines.sync import MemoryJournal, RollbackError, SyncError, rollback, sync_back

ROOT = "/srv/r"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def twin(clone: Any, prod: Any, n: int = 2) -> tuple[dict, dict]:
    originals, repaired = {}, {}
    for i in range(n):
        p = f"{ROOT}/f{i}.dat"
        good, bad = os.urandom(64 << 10), os.urandom(64 << 10)
        for host, data in ((clone, good), (prod, bad)):
            path = local(host, p)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        originals[p], repaired[p] = hashlib.sha256(bad).hexdigest(), hashlib.sha256(good).hexdigest()
    return originals, repaired


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_tampered_journal_on_production_restores_nothing_it_names(make_test_host: Any) -> None:
    clone, prod = make_test_host("clone"), make_test_host("production")
    originals, _ = twin(clone, prod)
    plan = generic_plan(clone, prod, [ROOT])
    pe, journal = endpoint(prod, "production"), MemoryJournal()
    sync_back(plan, endpoint(clone, "clone"), pe, run_id="tj1", journal=journal)
    # someone who can write the backup dir plants a "backup" of /etc/hostname and journals it
    digest = syncagent.Digest(plan.algo, plan.mode, plan.chunk_size)
    hostname = local(prod, "/etc/hostname")
    before = hostname.read_bytes()
    planted = local(prod, f"{BACKUP_DIR}/tj1/etc/hostname")
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(b"pwned\n")

    def hash_of(path) -> str:
        fd = os.open(path, os.O_RDONLY)
        try:
            return digest.of_fd(fd)
        finally:
            os.close(fd)

    jpath = local(prod, f"{BACKUP_DIR}/tj1/journal.jsonl")
    records = [json.loads(line) for line in jpath.read_text().splitlines() if line.strip()]
    for r in records:
        if r["state"] == "run_start":
            r["roots"].append(b64(b"/"))
    records.append({"state": "backed_up", "root": b64(b"/"), "rel": b64(b"etc/hostname"), "i": 99,
                    "orig_hash": hash_of(planted), "new_hash": hash_of(hostname), "ts": 0})
    jpath.write_text("".join(json.dumps(r) + "\n" for r in records))

    report = rollback("tj1", pe, backup_dir=BACKUP_DIR, plan=plan, files=journal.backed_up("tj1"))
    assert report.ok and report.restored == len(originals)
    assert hostname.read_bytes() == before, "the planted journal record was restored"
    assert all(sha(local(prod, p)) == h for p, h in originals.items())
    # a journal entry of the worker's that the approved plan does not hold is left alone too
    sync_back(plan, endpoint(clone, "clone"), pe, run_id="tj2", journal=journal)
    stray = [dict(journal.backed_up("tj2")[0], rel=b64(b"etc/hostname"))]
    report = rollback("tj2", pe, backup_dir=BACKUP_DIR, plan=plan, files=stray)
    assert report.restored == 0 and hostname.read_bytes() == before


@pytest.mark.parametrize("how", ["mode_0777", "symlink", "owned_by_other"])
def test_an_unsafe_backup_dir_is_refused_with_the_reason(make_test_host: Any, how: str) -> None:
    clone, prod = make_test_host("clone"), make_test_host("production")
    originals, _ = twin(clone, prod)
    plan = generic_plan(clone, prod, [ROOT])
    pe, journal = endpoint(prod, "production"), MemoryJournal()
    sync_back(plan, endpoint(clone, "clone"), pe, run_id="ub1", journal=journal)
    bdir = local(prod, BACKUP_DIR)
    if how == "mode_0777":
        os.chmod(bdir, 0o777)
        reason = r"must be owned by the ssh user \(uid 0\) and mode 0700"
    elif how == "owned_by_other":
        os.chown(bdir, 12345, 12345)
        reason = r"must be owned by the ssh user \(uid 0\) and mode 0700"
    else:
        # the backup dir moved elsewhere and a symlink left in its place
        elsewhere = local(prod, "/var/tmp/elsewhere")
        os.rename(bdir, elsewhere)
        os.symlink("/var/tmp/elsewhere", bdir)
        reason = "is a symlink or not a directory"
    synced = {p: sha(local(prod, p)) for p in originals}
    with pytest.raises(RollbackError, match=reason):
        rollback("ub1", pe, backup_dir=BACKUP_DIR, plan=plan, files=journal.backed_up("ub1"))
    assert {p: sha(local(prod, p)) for p in originals} == synced  # nothing restored from it
    with pytest.raises(SyncError, match=reason):
        sync_back(plan, endpoint(clone, "clone"), pe, run_id="ub2")
    assert {p: sha(local(prod, p)) for p in originals} == synced  # and nothing written through it
