"""Hostile file names through diff, sync-back and rollback, on real test hosts: nothing runs,
nothing escapes the roots, production ends consistent (every file whole, then every original back)."""
from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest

from tests.support.sync import BACKUP_DIR, endpoint
from workers.engines.manifest import build_pair, classify, diff_manifests
from workers.engines.sync import MemoryJournal, plan_sync, rollback, sync_back

ROOT = b"/srv/h"
# as relative paths: a name with "/" in it is a directory path under the root
NAMES = [
    b"new\nline.dbf",
    b"quo'te\"s.dbf",
    b"$(touch /tmp/pwn).dbf",
    b"`touch /tmp/pwn`;touch /tmp/pwn;.dbf",
    b"-rf --no-preserve-root.dbf",
    b"--help",
    b"non-utf8-\xff\xfe.dbf",
    b"L" * 250 + b".dbf",
]


def at(host: Any, path: bytes) -> bytes:
    """A host path as seen from the worker (the rootfs is a local directory), as bytes."""
    return os.fsencode(host.rootfs) + path


def sha(path: bytes) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def tree(host: Any, top: bytes) -> set[bytes]:
    out = set()
    for dirpath, _dirs, files in os.walk(at(host, top)):
        for f in files:
            out.add(os.path.join(dirpath, f)[len(os.fsencode(host.rootfs)):])
    return out


def no_pwn(*hosts: Any) -> None:
    for h in hosts:
        assert h.run("test -e /tmp/pwn", check=False).returncode != 0, f"/tmp/pwn appeared on {h.hostname}"
    assert not os.path.exists("/tmp/pwn") or os.path.getmtime("/tmp/pwn") < START


START = 0.0


@pytest.mark.parametrize("transport", ["paramiko", "openssh"])
def test_hostile_names_through_diff_sync_back_and_rollback(make_test_host: Any, transport: str) -> None:
    global START
    import time
    START = time.time()
    clone, prod = make_test_host("clone"), make_test_host("production")
    originals, repaired = {}, {}
    for n, name in enumerate(NAMES):
        good, bad = os.urandom(20000 + n), os.urandom(20000 + n)
        for host, data in ((clone, good), (prod, bad)):
            # a "/" in a name makes directories: "$(touch /tmp/pwn).dbf" is three components
            os.makedirs(os.path.dirname(at(host, ROOT + b"/" + name)), exist_ok=True)
            with open(at(host, ROOT + b"/" + name), "wb") as fh:
                fh.write(data)
        originals[name], repaired[name] = hashlib.sha256(bad).hexdigest(), hashlib.sha256(good).hexdigest()
    outside_before = tree(prod, b"/srv") | tree(prod, b"/tmp") | tree(prod, b"/etc")
    ce, pe = endpoint(clone, "clone"), endpoint(prod, "production")

    # diff: every hostile name is found, by its exact bytes
    mc, mp = build_pair(ce, pe, [ROOT])
    diff = diff_manifests(mc, mp)
    assert {e.rel for e in diff.changed} == set(NAMES)
    # verify: the name is one argument; a non-UTF-8 name cannot travel in an SSH command line
    result = classify(diff, "cat {path}", ce, pe)
    verdicts = {f.entry.rel: f.cls for f in result.files}
    assert verdicts.pop(b"non-utf8-\xff\xfe.dbf") == "verify_error"
    assert set(verdicts.values()) == {"newer_on_production"}, verdicts
    no_pwn(clone, prod)

    # sync-back: every file replaced, originals backed up under the backup dir only
    plan = plan_sync(diff.changed, mc, mp, backup_dir=BACKUP_DIR, current_prod_manifest=mp)
    journal = MemoryJournal()
    report = sync_back(plan, ce, pe, run_id="hostile1", journal=journal, transport=transport)
    assert report.ok, report.error
    for name in NAMES:
        assert sha(at(prod, ROOT + b"/" + name)) == repaired[name], name
        assert sha(at(prod, os.fsencode(BACKUP_DIR) + b"/hostile1" + ROOT + b"/" + name)) == originals[name]
    outside_after = tree(prod, b"/srv") | tree(prod, b"/tmp") | tree(prod, b"/etc")
    assert outside_after == outside_before, "files appeared outside the root"
    no_pwn(clone, prod)

    # rollback from understudy's own journal: every original back, byte for byte
    rb = rollback("hostile1", pe, backup_dir=BACKUP_DIR, plan=plan, files=journal.backed_up("hostile1"))
    assert rb.ok and rb.restored == len(NAMES)
    for name in NAMES:
        assert sha(at(prod, ROOT + b"/" + name)) == originals[name], name
    assert tree(prod, b"/srv") | tree(prod, b"/tmp") | tree(prod, b"/etc") == outside_before
    no_pwn(clone, prod)
